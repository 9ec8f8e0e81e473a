"""The training loop: ``iter_train`` yields progress and returns the saved model."""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import ddp
from .config import TrainingConfig
from .data import TrainingData
from .io import atomic_path
from .metrics import psnr, ssim
from .models import LoadedModel, ModelError, library_dir, load_model, save_model
from .predict import drain, resolve_device, resolve_precision, restore
from .registry import build_method, method_network

CHECKPOINT_WEIGHTS = "weights.safetensors"
CHECKPOINT_STATE = "state.pt"
CHECKPOINT_META = "checkpoint.json"


@dataclass(frozen=True)
class TrainProgress:
    """One training record.

    Attributes
    ----------
    step, total
        Steps done and the step budget (None when only time-limited).
    losses
        Named losses of this step.
    lr
        Learning rate of the (first) optimizer.
    validation
        ``{"psnr": dB, "ssim": ...}`` on the fixed validation set, when computed.
    preview
        The preview region restored with the current weights, when requested.
    elapsed
        Seconds of training so far (including earlier runs when resumed).
    data_wait
        Share of the time spent waiting for batches.
    message
        A sentence for people (warnings, checkpoint saved, stopped...).
    """

    step: int
    total: int | None
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    validation: dict[str, float] | None = None
    preview: np.ndarray | None = None
    elapsed: float = 0.0
    data_wait: float = 0.0
    message: str = ""


def make_training_data(config: TrainingConfig, *, raws=None, targets=None, volumes=None) -> TrainingData:
    """Build the training pairs the config's ``source`` asks for.

    Parameters
    ----------
    config
        Training config (source, patch shape, validation split, degradation...).
    raws, targets
        Volumes for the paired source (``targets`` alone for the synthetic source).
    volumes
        Anisotropic volumes for the isotropic source.
    """
    from . import data as sources

    common = dict(
        percentiles=config.model.percentiles, n_val=config.n_val,
        val_fraction=config.val_fraction, foreground=config.foreground, seed=config.seed,
    )
    model = config.model
    patch = config.resolved_patch_shape()
    if config.source == "paired":
        if raws is None or targets is None:
            raise ValueError("the paired source needs raw and target volumes")
        return sources.paired_data(raws, targets, model.z_factor, patch, **common)
    if config.source == "synthetic":
        if targets is None:
            raise ValueError("the synthetic source needs clean target volumes")
        return sources.synthetic_data(targets, model.z_factor, patch, config.degradation, **common)
    if volumes is None:
        raise ValueError("the isotropic source needs the anisotropic volume(s)")
    return sources.isotropic_data(volumes, model.z_factor, patch, config.degradation, **common)


def checkpoint_dir_for(model_folder: Path) -> Path:
    """Checkpoints live beside the model folder, hidden, so saving the model keeps them."""
    return model_folder.parent / ".checkpoints" / model_folder.name


def _steps_per_epoch(config: TrainingConfig, data: TrainingData) -> int:
    voxels = data.summary.get("train_voxels")
    out_patch = list(config.resolved_patch_shape())
    out_patch[0] *= config.model.z_factor
    if not voxels:
        return 100
    return max(1, math.ceil(voxels / (config.batch_size * math.prod(out_patch))))


def _total_steps(config: TrainingConfig, data: TrainingData) -> int | None:
    budgets = []
    if config.steps is not None:
        budgets.append(config.steps)
    if config.epochs is not None:
        budgets.append(max(1, math.ceil(config.epochs * _steps_per_epoch(config, data))))
    return min(budgets) if budgets else None


def lr_factor(fraction: float, mode: str) -> float:
    """Learning-rate multiplier after ``fraction`` of the budget (steps or time).

    3D-RCAN halves the rate every quarter of training; cosine anneals it smoothly
    towards zero at the end of the budget. A time budget counts too.
    """
    fraction = min(1.0, max(0.0, fraction))
    if mode == "none":
        return 1.0
    if mode == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * fraction))
    return 0.5 ** min(3, int(4 * fraction))


class _Prefetcher:
    """Prepares ``data.batch(step)`` for the next steps in a thread, timing the waits.

    Batches depend only on (seed, step), so computing ahead changes nothing.
    """

    def __init__(self, data: TrainingData, batch_size: int, ahead: int, rank: int = 0):
        self.data, self.batch_size, self.ahead, self.rank = data, batch_size, ahead, rank
        self.pool = ThreadPoolExecutor(max_workers=1) if ahead > 0 else None
        self.pending: dict[int, object] = {}
        self.waited = 0.0

    def get(self, step: int):
        start = time.perf_counter()
        if self.pool is None:
            batch = self.data.batch(step, self.batch_size, self.rank)
        else:
            for s in range(step, step + self.ahead + 1):
                if s not in self.pending:
                    self.pending[s] = self.pool.submit(self.data.batch, s, self.batch_size,
                                                       self.rank)
            batch = self.pending.pop(step).result()
        self.waited += time.perf_counter() - start
        return batch

    def close(self):
        if self.pool is not None:
            for future in self.pending.values():
                future.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)


def _validate(method, config: TrainingConfig, data: TrainingData, device) -> dict[str, float]:
    net = method_network(method)
    scores_psnr, scores_ssim = [], []
    was_training = net.training
    net.eval()
    try:
        for i in range(0, len(data.validation), config.batch_size):
            pairs = data.validation[i : i + config.batch_size]
            x = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device)
            with torch.inference_mode():
                if hasattr(method, "sample"):
                    generator = torch.Generator(device=device).manual_seed(config.seed + i)
                    pred, _ = method.sample(x, steps=config.diffusion_val_steps, n_samples=1,
                                            generator=generator)
                else:
                    pred = net(x)
            pred = pred.float().cpu().numpy()
            for p, (_, target) in zip(pred, pairs):
                # Normalised units: the percentiles map to 0 and 1, so the range is 1.
                scores_psnr.append(psnr(p[0], target[0], data_range=1.0))
                if min(target.shape[1:]) >= 3:
                    scores_ssim.append(ssim(p[0], target[0], data_range=1.0))
    finally:
        net.train(was_training)
    out = {"psnr": float(np.mean(scores_psnr))}
    if scores_ssim:
        out["ssim"] = float(np.mean(scores_ssim))
    return out


def _preview(method, config: TrainingConfig, preview_input, device) -> np.ndarray:
    from .restorers import NetworkRestorer

    net = getattr(method, "ema", None) or method_network(method)
    was_training = net.training
    restorer = NetworkRestorer(
        LoadedModel(config.model, net), diffusion_steps=config.diffusion_val_steps,
        diffusion_samples=1,
    )
    try:
        return restore(preview_input, restorer, device=str(device),
                       percentiles=config.model.percentiles).data
    finally:
        method_network(method).train(was_training)


def _save_checkpoint(folder: Path, method, step: int, elapsed: float,
                     history: list[dict], config: TrainingConfig) -> None:
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        state = {k: v.detach().cpu().contiguous().clone() for k, v in method.state_dict().items()}
        save_file(state, str(tmp / CHECKPOINT_WEIGHTS))
        torch.save({
            "optimizers": [o.state_dict() for o in method.optimizers],
            "scalers": [s.state_dict() for s in method.scalers],
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }, tmp / CHECKPOINT_STATE)
        meta = {"step": step, "elapsed": elapsed, "history": history,
                "model": config.model.model_dump(mode="json")}
        (tmp / CHECKPOINT_META).write_text(json.dumps(meta))


def _load_checkpoint(folder: Path, method, config: TrainingConfig) -> tuple[int, float, list]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    backup = folder.with_name(f".{folder.name}.old")  # io.atomic_path's, mid-swap
    if not (folder / CHECKPOINT_META).is_file() and (backup / CHECKPOINT_META).is_file():
        folder = backup  # killed between the two renames: the previous checkpoint is whole
    meta_path = folder / CHECKPOINT_META
    if not meta_path.is_file():
        raise ModelError(f"{folder}: no checkpoint to resume from; start a new run")
    meta = json.loads(meta_path.read_text())
    if meta["model"] != config.model.model_dump(mode="json"):
        raise ModelError(
            f"{folder}: the checkpoint belongs to a different model config; "
            "resume with the same settings or start a new run under another name"
        )
    try:
        method.load_state_dict(load_file(str(folder / CHECKPOINT_WEIGHTS)))
        # Our own file, but loaded like any other: tensors and plain containers only.
        state = torch.load(folder / CHECKPOINT_STATE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, OSError, RuntimeError, EOFError) as exc:
        raise ModelError(
            f"{folder}: the checkpoint is damaged or holds more than tensors (refused, nothing "
            f"in it was run: {type(exc).__name__}); train the model anew instead of resuming"
        ) from exc
    for opt, sd in zip(method.optimizers, state["optimizers"], strict=True):
        opt.load_state_dict(sd)
    for scaler, sd in zip(method.scalers, state["scalers"]):
        scaler.load_state_dict(sd)
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(meta["step"]), float(meta["elapsed"]), list(meta["history"])


def iter_train(
    config: TrainingConfig,
    data: TrainingData,
    *,
    output_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    should_stop: Callable[[], bool] | None = None,
    preview_input=None,
    voxel_spacing=None,
) -> Generator[TrainProgress, None, LoadedModel]:
    """Train a model, yielding a :class:`TrainProgress` per step; return the saved model.

    Parameters
    ----------
    config
        What and how to train.
    data
        Training pairs (see :func:`make_training_data`).
    output_dir
        The model folder; default: the library folder named ``config.model.name``.
    resume
        Continue from this model's last checkpoint (same config), exactly.
    overwrite
        Replace an existing model of the same name when starting anew.
    should_stop
        Polled every step; when True, training stops, checkpoints and saves the model.
    preview_input
        A small ZYX array restored with the current weights at every validation.
    voxel_spacing
        Spacing of the training data, recorded in the model card.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs this generator: the
    networks train as DistributedDataParallel replicas, each on its own batches, and
    only rank 0 validates, checkpoints, saves and returns the model (other ranks
    return None). The effective batch is ``batch_size`` times the number of processes.
    """
    model_cfg = config.model
    if data.z_factor != model_cfg.z_factor or data.spatial_dims != model_cfg.spatial_dims:
        raise ValueError(
            f"training data is {data.spatial_dims}D with z-factor {data.z_factor}, but the "
            f"model is {model_cfg.spatial_dims}D with z-factor {model_cfg.z_factor}"
        )
    folder = Path(output_dir) if output_dir is not None else library_dir() / model_cfg.name
    checkpoints = checkpoint_dir_for(folder)
    if folder.exists() and not (resume or overwrite):
        raise ModelError(f"a model named '{folder.name}' exists; choose another name, resume or overwrite")
    device = resolve_device(config.device)
    replica = ddp.from_environment()
    if replica is not None:
        device = ddp.start(replica, device)
    main = replica is None or replica.is_main
    autocast_dtype = resolve_precision(config.precision, device)

    torch.manual_seed(config.seed)
    method = build_method(config).to(device)
    method.configure_optimizers(config.learning_rate)
    if autocast_dtype == torch.float16 and device.type == "cuda":
        method.scalers = [torch.amp.GradScaler("cuda") for _ in method.optimizers]
    total = _total_steps(config, data)
    base_lrs = [group["lr"] for opt in method.optimizers for group in opt.param_groups]
    step, elapsed_before, history = 0, 0.0, []
    if resume:
        step, elapsed_before, history = _load_checkpoint(checkpoints, method, config)
    if replica is not None:
        method.distribute(functools.partial(ddp.wrap, device=device))  # rank 0's weights
        # Own noise per replica (diffusion levels, GP mixing), reproducible from the step.
        torch.manual_seed(config.seed + 7919 * replica.rank + 104729 * step)
    for warning in data.warnings if main else ():
        yield TrainProgress(step, total, message=warning)

    prefetch = _Prefetcher(data, config.batch_size, config.prefetch,
                           replica.rank if replica is not None else 0)
    start = time.monotonic()
    deadline = None if config.minutes is None else config.minutes * 60
    last_validation: dict[str, float] | None = None
    stopped = False

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - start

    def set_learning_rate():
        fractions = [step / total if total else 0.0, elapsed() / deadline if deadline else 0.0]
        factor = lr_factor(max(fractions), config.lr_decay)
        groups = [group for opt in method.optimizers for group in opt.param_groups]
        for group, base in zip(groups, base_lrs, strict=True):
            group["lr"] = base * factor

    def save_everything():
        if not main:
            return None
        _save_checkpoint(checkpoints, method, step, elapsed(), history, config)
        wait = prefetch.waited / max(time.monotonic() - start, 1e-9)
        return _save_final(folder, config, data, method, step, elapsed(), history,
                           last_validation, stopped, voxel_spacing, wait,
                           replica.world_size if replica is not None else 1)

    try:
        while True:
            done = (total is not None and step >= total) or (
                deadline is not None and elapsed() >= deadline)
            asked = should_stop is not None and should_stop()
            if replica is not None:  # clocks and requests differ: stop together
                done, asked = ddp.any_replica([done, asked], device)
            if asked:
                stopped = True
            if done or asked:
                break
            inputs, targets = prefetch.get(step)
            batch = {"input": torch.from_numpy(inputs).to(device),
                     "target": torch.from_numpy(targets).to(device)}
            if hasattr(method, "warmup"):
                method.warmup = step < config.warmup_steps
            set_learning_rate()
            if autocast_dtype is not None:
                with torch.autocast(device.type, dtype=autocast_dtype):
                    losses = method.training_step(batch)
            else:
                losses = method.training_step(batch)
            step += 1
            main_loss = losses.get("loss", losses.get("g_loss"))
            if main_loss is not None and not math.isfinite(main_loss):
                raise FloatingPointError(
                    f"training diverged at step {step} (loss {main_loss}); "
                    "lower the learning rate or check the data"
                )
            validation, preview = None, None
            if main and (step % config.validate_every == 0 or step == total):
                validation = last_validation = _validate(method, config, data, device)
                if preview_input is not None:
                    preview = _preview(method, config, preview_input, device)
            lr = method.optimizers[0].param_groups[0]["lr"]
            row = {"step": step, "lr": lr, "time": round(elapsed(), 3),
                   **{k: v for k, v in losses.items() if math.isfinite(v)}}
            if validation:
                row.update({f"val_{k}": v for k, v in validation.items()})
            history.append(row)
            message = ""
            if main and step % config.checkpoint_every == 0:
                _save_checkpoint(checkpoints, method, step, elapsed(), history, config)
                message = f"checkpoint saved at step {step}"
            wait = prefetch.waited / max(time.monotonic() - start, 1e-9)
            yield TrainProgress(step, total, losses, lr, validation, preview, elapsed(), wait, message)
    except (GeneratorExit, KeyboardInterrupt):
        # Closed by the caller (napari's worker.quit()) or Ctrl-C mid-step: keep what
        # was learned. The step in flight, if any, is simply not counted.
        stopped = True
        save_everything()
        raise
    finally:
        prefetch.close()
    if not main:
        ddp.finish()
        return None
    if history and "val_psnr" not in history[-1]:
        last_validation = _validate(method, config, data, device)
        if history:
            history[-1].update({f"val_{k}": v for k, v in last_validation.items()})
    model = save_everything()
    ddp.finish()
    yield TrainProgress(step, total, lr=method.optimizers[0].param_groups[0]["lr"],
                        validation=last_validation, elapsed=elapsed(),
                        message=("stopped" if stopped else "finished") + f": model saved to {model.folder}")
    return model


def _save_final(folder, config, data, method, step, elapsed, history, validation, stopped,
                voxel_spacing, data_wait, replicas=1) -> LoadedModel:
    net = method_network(method)
    val_text = f", val PSNR {validation['psnr']:.2f} dB" if validation else ""
    training = {
        "summary": f"{config.source} data, {step} steps{val_text}",
        "source": config.source,
        "data": data.summary,
        "voxel_spacing": list(voxel_spacing) if voxel_spacing is not None else None,
        "steps": step,
        "minutes": round(elapsed / 60, 3),
        "stopped_early": stopped,
        "data_wait_share": round(data_wait, 4),
        "replicas": replicas,  # data-parallel processes: effective batch = batch_size x this
        "final_validation": validation,
        "settings": config.model_dump(mode="json", exclude={"model"}),
    }
    model_cfg = config.model.model_copy(update={"training": training})
    ema = getattr(method, "ema", None)
    save_model(folder, model_cfg, net, ema_net=ema, history=history, overwrite=True)
    return load_model(folder)


def train(config: TrainingConfig, data: TrainingData, **kwargs) -> LoadedModel:
    """Train to the end of the budget; the blocking form of :func:`iter_train`."""
    return drain(iter_train(config, data, **kwargs))
