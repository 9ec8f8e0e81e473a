"""The training loop: ``iter_train`` yields progress and returns the saved model."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import ddp
from .config import CONFIG_VERSION, TrainingConfig
# make_training_data lives with the sources; scripts and tests import it from here too.
from .data import TrainingData, make_training_data  # noqa: F401
from .checkpoints import (  # noqa: F401  (CHECKPOINT_* re-exported for their users)
    CHECKPOINT_META, CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, checkpoint_dir_for,
    load_checkpoint, name_exists_message, reserve_model_name, save_checkpoint,
)
from .methods.base import TrainingMethod
# baseline_validation is imported from here by scripts and tests.
from .evaluate import baseline_validation, validation_scores  # noqa: F401
from .models import LoadedModel, ModelError, library_dir, load_model, save_model
from .predict import drain, resolve_device, resolve_precision, restore
from .registry import build_method
from .tb_log import TB_FOLDER, TrainingLog, about_text

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
    loss_name
        Which of ``losses`` is the method's main loss (``g_loss`` for GANs).
    baseline_validation
        ``{"psnr": dB, "ssim": ...}`` of the interpolation baseline (``cubic`` at the
        model's z-factor; the input itself at z-factor 1) on the same validation
        patches, on records that carry ``validation``; None otherwise.
    validation_label
        What the validation PSNR compares, completing "validation PSNR ..." (e.g.
        "against the target"; blind-spot data compares noisy values).
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
    loss_name: str = "loss"
    baseline_validation: dict[str, float] | None = None
    validation_label: str = ""

    @property
    def loss(self) -> float | None:
        """The main loss of this step; None on records without losses."""
        return self.losses.get(self.loss_name)


def _steps_per_epoch(config: TrainingConfig, data: TrainingData) -> int:
    voxels = data.summary.get("train_voxels")
    out_patch = [p * f for p, f in zip(config.resolved_patch_shape(), data.factors,
                                       strict=False)]
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


def _validate(method: TrainingMethod, config: TrainingConfig, data: TrainingData,
              device) -> tuple[dict[str, float], np.ndarray | None]:
    """Scores on the validation set, and the prediction for its first patch (to show)."""
    if not data.validation:  # a volume too small to hold validation patches apart
        return {}, None
    predictions = []
    for i in range(0, len(data.validation), config.batch_size):
        pairs = data.validation[i : i + config.batch_size]
        x = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device)
        predictions.extend(method.validation_predict(x, config.seed + i).float().cpu().numpy())
    return validation_scores(predictions, data.validation), predictions[0]


def _preview(method: TrainingMethod, config: TrainingConfig, preview_input,
             device) -> np.ndarray:
    from .restorers import NetworkRestorer

    net = method.restoring_network
    was_training = net.training
    restorer = NetworkRestorer(LoadedModel(config.model, net), **method.preview_options())
    try:
        return restore(preview_input, restorer, device=str(device),
                       percentiles=config.model.percentiles).data
    finally:
        net.train(was_training)


@dataclass
class _Run:
    """One training run between its steps: the method, the clock, the history."""

    config: TrainingConfig
    data: TrainingData
    method: TrainingMethod
    device: torch.device
    replica: ddp.Replica | None
    autocast_dtype: torch.dtype | None
    folder: Path
    total: int | None
    base_lrs: list[float]
    step: int = 0
    elapsed_before: float = 0.0
    history: list[dict] = field(default_factory=list)
    last_validation: dict[str, float] | None = None
    baseline: dict[str, float] | None = None
    stopped: bool = False
    resumed: bool = False
    voxel_unit: str | None = None
    log: TrainingLog | None = None  # the TensorBoard log, when asked for (rank 0)
    # Set by _start_clock, once the warnings are out.
    prefetch: _Prefetcher = field(init=False)
    start: float = field(init=False)
    deadline: float | None = field(init=False)

    @property
    def main(self) -> bool:
        """This process validates, checkpoints and saves (always, outside torchrun)."""
        return self.replica is None or self.replica.is_main

    @property
    def checkpoints(self) -> Path:
        return checkpoint_dir_for(self.folder)

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.start

    def data_wait(self) -> float:
        return self.prefetch.waited / max(time.monotonic() - self.start, 1e-9)

    def lr(self) -> float:
        return self.method.optimizers[0].param_groups[0]["lr"]


def _setup(config: TrainingConfig, data: TrainingData, output_dir, resume: bool,
           overwrite: bool) -> _Run:
    """Check the request, build the method on its device, resume its checkpoint."""
    model_cfg = config.model
    if data.z_factor != model_cfg.z_factor or data.spatial_dims != model_cfg.spatial_dims:
        raise ValueError(
            f"training data is {data.spatial_dims}D with z-factor {data.z_factor}, but the "
            f"model is {model_cfg.spatial_dims}D with z-factor {model_cfg.z_factor}"
        )
    if tuple(data.factors) != tuple(model_cfg.net_factors):
        raise ValueError(f"training data upsamples its axes by {tuple(data.factors)}, but the "
                         f"model's network by {tuple(model_cfg.net_factors)}")
    folder = Path(output_dir)
    if folder.exists() and not (resume or overwrite):  # saved by another run meanwhile
        raise ModelError(name_exists_message(folder))
    device = resolve_device(config.device)
    replica = ddp.from_environment()
    if replica is not None:
        device = ddp.start(replica, device)
    autocast_dtype = resolve_precision(config.precision, device)

    torch.manual_seed(config.seed)
    method = build_method(config).to(device)
    method.configure_optimizers(config.learning_rate)
    if autocast_dtype == torch.float16 and device.type == "cuda":
        method.use_grad_scaling(device)
    base_lrs = [group["lr"] for opt in method.optimizers for group in opt.param_groups]
    run = _Run(config, data, method, device, replica, autocast_dtype, folder,
               _total_steps(config, data), base_lrs)
    run.resumed = resume
    if resume:
        run.step, run.elapsed_before, run.history = load_checkpoint(run.checkpoints, method,
                                                                     config)
    if replica is not None:
        method.distribute(functools.partial(ddp.wrap, device=device))  # rank 0's weights
        # Own noise per replica (diffusion levels, GP mixing), reproducible from the step.
        torch.manual_seed(config.seed + 7919 * replica.rank + 104729 * run.step)
    return run


def _start_clock(run: _Run) -> None:
    config = run.config
    run.prefetch = _Prefetcher(run.data, config.batch_size, config.prefetch,
                               run.replica.rank if run.replica is not None else 0)
    run.start = time.monotonic()
    run.deadline = None if config.minutes is None else config.minutes * 60


def _should_end(run: _Run, should_stop: Callable[[], bool] | None) -> bool:
    """The budget is spent or a stop was asked (on any replica: all stop together)."""
    done = (run.total is not None and run.step >= run.total) or (
        run.deadline is not None and run.elapsed() >= run.deadline)
    asked = should_stop is not None and should_stop()
    if run.replica is not None:  # clocks and requests differ: stop together
        done, asked = ddp.any_replica([done, asked], run.device)
    run.stopped = run.stopped or asked
    return done or asked


def _set_learning_rate(run: _Run) -> None:
    fractions = [run.step / run.total if run.total else 0.0,
                 run.elapsed() / run.deadline if run.deadline else 0.0]
    factor = lr_factor(max(fractions), run.config.lr_decay)
    groups = [group for opt in run.method.optimizers for group in opt.param_groups]
    for group, base in zip(groups, run.base_lrs, strict=True):
        group["lr"] = base * factor


def _train_step(run: _Run) -> dict[str, float]:
    """One optimisation step on the next batch; its losses."""
    inputs, targets = run.prefetch.get(run.step)
    batch = {"input": torch.from_numpy(inputs).to(run.device),
             "target": torch.from_numpy(targets).to(run.device)}
    _set_learning_rate(run)
    if run.autocast_dtype is not None:
        with torch.autocast(run.device.type, dtype=run.autocast_dtype):
            losses = run.method.training_step(batch, run.step)
    else:
        losses = run.method.training_step(batch, run.step)
    run.step += 1
    main_loss = losses.get(run.method.main_loss)
    if main_loss is not None and not math.isfinite(main_loss):
        raise FloatingPointError(
            f"training diverged at step {run.step} (loss {main_loss}); "
            "lower the learning rate or check the data"
        )
    return losses


def _validate_and_checkpoint(run: _Run, losses: dict[str, float], preview_input
                             ) -> TrainProgress:
    """Validate, preview and checkpoint when due; record the step in the history."""
    config, step = run.config, run.step
    validation, preview, example = None, None, None
    if run.main and (step % config.validate_every == 0 or step == run.total):
        validation, example = _validate(run.method, config, run.data, run.device)
        run.last_validation = validation
        if preview_input is not None:
            preview = _preview(run.method, config, preview_input, run.device)
    row = {"step": step, "lr": run.lr(), "time": round(run.elapsed(), 3),
           **{k: v for k, v in losses.items() if math.isfinite(v)}}
    if validation:
        row.update({f"val_{k}": v for k, v in validation.items()})
    run.history.append(row)
    _log(run, row, example, preview_input, preview)
    message = ""
    if run.main and step % config.checkpoint_every == 0:
        save_checkpoint(run.checkpoints, run.method, step, run.elapsed(), run.history, config)
        message = f"checkpoint saved at step {step}"
    return TrainProgress(step, run.total, losses, run.lr(), validation, preview, run.elapsed(),
                         run.data_wait(), message, run.method.main_loss,
                         run.baseline if validation else None, run.data.validation_label)


def _log(run: _Run, row: dict, prediction=None, preview_input=None, preview=None) -> None:
    """Write a history row (and, at validations, its images) to the TensorBoard log."""
    if run.log is None:
        return
    run.log.scalars(row)
    if prediction is not None or preview is not None:
        first = run.data.validation[0] if run.data.validation else None
        run.log.images(row["step"], first, prediction, run.config.model.z_factor,
                       preview_input, preview)


def _save_everything(run: _Run, voxel_spacing) -> LoadedModel | None:
    """Checkpoint and save the model (rank 0 only); the saved model."""
    if not run.main:
        return None
    save_checkpoint(run.checkpoints, run.method, run.step, run.elapsed(), run.history,
                     run.config)
    return _save_final(run, voxel_spacing)


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
    voxel_unit: str | None = None,
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
    voxel_spacing, voxel_unit
        Spacing of the training data and its unit, recorded in the model card.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs this generator: the
    networks train as DistributedDataParallel replicas, each on its own batches, and
    only rank 0 validates, checkpoints, saves and returns the model (other ranks
    return None). The effective batch is ``batch_size`` times the number of processes.

    The model name is held for the whole run (a hidden marker beside the model folder):
    a second run of the same name, in any process, is refused until this one ends.
    """
    folder = Path(output_dir) if output_dir is not None else library_dir() / config.model.name
    replica = ddp.from_environment()
    holding = (reserve_model_name(folder) if replica is None or replica.is_main
               else contextlib.nullcontext())
    with holding:
        return (yield from _train_run(config, data, folder, resume, overwrite, should_stop,
                                      preview_input, voxel_spacing, voxel_unit))


def _train_run(config, data, folder, resume, overwrite, should_stop, preview_input,
               voxel_spacing, voxel_unit):
    """The body of :func:`iter_train`, while the model name is held."""
    run = _setup(config, data, folder, resume, overwrite)
    run.voxel_unit = voxel_unit
    run.baseline = baseline_validation(data) if run.main else None
    for warning in data.warnings if run.main else ():
        yield TrainProgress(run.step, run.total, message=warning,
                            loss_name=run.method.main_loss,
                            validation_label=data.validation_label)
    _start_clock(run)
    try:
        if config.tensorboard and run.main:
            run.log = TrainingLog(folder, start_step=run.step, history=run.history,
                                  about=about_text(config, data.validation_label))
        while not _should_end(run, should_stop):
            losses = _train_step(run)
            yield _validate_and_checkpoint(run, losses, preview_input)
    except (GeneratorExit, KeyboardInterrupt):
        # Closed by the caller (napari's worker.quit()) or Ctrl-C mid-step: keep what
        # was learned. The step in flight, if any, is simply not counted.
        run.stopped = True
        _save_everything(run, voxel_spacing)
        raise
    except BaseException:
        if run.log is not None:  # a new run failing before any save leaves no folder
            run.log.close(run.checkpoints)
        raise
    finally:
        run.prefetch.close()
    if not run.main:
        ddp.finish()
        return None
    if run.history and "val_psnr" not in run.history[-1]:
        run.last_validation, example = _validate(run.method, config, data, run.device)
        scores = {f"val_{k}": v for k, v in run.last_validation.items()}
        run.history[-1].update(scores)
        _log(run, {"step": run.step, **scores}, example)
    model = _save_everything(run, voxel_spacing)
    ddp.finish()
    ending = "stopped" if run.stopped else "finished"
    yield TrainProgress(run.step, run.total, lr=run.lr(), validation=run.last_validation,
                        elapsed=run.elapsed(), message=f"{ending}: model saved to {model.folder}",
                        loss_name=run.method.main_loss,
                        baseline_validation=run.baseline if run.last_validation else None,
                        validation_label=data.validation_label)
    return model


def _save_final(run: _Run, voxel_spacing) -> LoadedModel:
    config, validation = run.config, run.last_validation
    label = run.data.validation_label
    if run.log is not None:
        run.log.close()  # flushed before the folder is replaced; save_model carries it over
    # The log goes with the model unless a new run replaces a model without logging.
    keep = (TB_FOLDER,) if (config.tensorboard or run.resumed) else ()
    logged = bool(keep) and (run.folder / TB_FOLDER).is_dir()
    val_text = f", val PSNR {validation['psnr']:.2f} dB {label}" if validation else ""
    training = {
        "summary": f"{config.source} data, {run.step} steps{val_text}",
        "source": config.source,
        "factors": list(config.model.factors),
        "data": run.data.summary,
        "validation_label": label,
        "voxel_spacing": list(voxel_spacing) if voxel_spacing is not None else None,
        "voxel_unit": run.voxel_unit,
        "steps": run.step,
        "minutes": round(run.elapsed() / 60, 3),
        "stopped_early": run.stopped,
        "data_wait_share": round(run.data_wait(), 4),
        "replicas": run.replica.world_size if run.replica is not None else 1,
        "final_validation": validation,
        "baseline_validation": run.baseline,
        "tensorboard_log": TB_FOLDER if logged else None,
        "settings": config.model_dump(mode="json", exclude={"model"}),
    }
    # Saved in this version's format (a resumed run may carry an older checkpoint's).
    model_cfg = config.model.model_copy(update={"training": training,
                                                "version": CONFIG_VERSION})
    save_model(run.folder, model_cfg, run.method.network, ema_net=run.method.ema_network,
               history=run.history, overwrite=True, keep=keep)
    return load_model(run.folder)


def train(config: TrainingConfig, data: TrainingData, **kwargs) -> LoadedModel:
    """Train to the end of the budget; the blocking form of :func:`iter_train`."""
    return drain(iter_train(config, data, **kwargs))
