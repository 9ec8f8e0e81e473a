"""``volsr train``: train a model on volume files, stopping cleanly on Ctrl-C."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import click

from ..engine.config import PRESET_NAMES
from ..engine.io import VolumeIOError, read_volume
from ..engine.registry import Family
from .app import _Failure, _Interrupted
from .options import _base_name, _patch_shape

SOURCES = ("paired", "synthetic", "isotropic")
# What each training source reads, as (role, flag) pairs.
SOURCE_ROLES = {"paired": ("raw", "target"), "synthetic": ("target",), "isotropic": ("volume",)}


class _GracefulStop:
    """While training: the first Ctrl-C (or SIGTERM) asks to stop after this step.

    Stopping then closes the training generator, whose handler saves a checkpoint and
    the model. A second Ctrl-C aborts at once, except while that save runs. Handlers are
    installed only on the main thread (Python allows no other).
    """

    def __init__(self):
        self.signum: int | None = None
        self.saving = False
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        # No printing here: the main thread may be inside a write to the same stream.
        if self.signum is not None and signum == signal.SIGINT and not self.saving:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum

    def __exit__(self, *exc_info):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return False


class _TrainDisplay:
    """Training progress on stderr: a live bar on terminals, a line per validation in logs.

    The bar's label carries the loss and the last validation PSNR. Without a terminal
    click prints the label whenever it changes, so it changes at the first step and at
    validations only.
    """

    def __init__(self, quiet: bool, minutes: float | None):
        self.quiet = quiet
        self.live = sys.stderr.isatty()
        self.seconds = None if minutes is None else max(1, round(minutes * 60))
        self.bar = None
        self.psnr: float | None = None
        self.logged_first = False

    def show(self, record) -> None:
        if record.validation:
            self.psnr = record.validation.get("psnr")
        if not record.losses:
            if record.message and not record.message.startswith(("finished", "stopped")):
                self.message(record.message)  # data warnings come before the first step
            return
        if self.quiet:
            return
        losses = record.losses
        loss = losses.get("loss", losses.get("g_loss", next(iter(losses.values()))))
        label = f"loss {loss:.4g}"
        if self.psnr is not None:
            label += f", val PSNR {self.psnr:.2f} dB"
        total = record.total or self.seconds
        position = record.step if record.total else int(record.elapsed)
        if self.bar is None:
            self.bar = click.progressbar(length=max(total or 1, 1), label="training",
                                         file=sys.stderr, show_pos=bool(record.total))
            self.bar.__enter__()
        if self.live:
            self.bar.label = label
        elif not self.logged_first or record.validation:
            self.logged_first = True
            self.bar.label = f"step {record.step}/{record.total or '?'}: {label}"
        self.bar.update(max(0, min(position, self.bar.length) - self.bar.pos))
        if record.message and not self.live:
            self.message(record.message)  # e.g. checkpoint saved

    def message(self, text: str) -> None:
        if self.bar is not None and self.live:
            click.echo("", err=True)  # leave the bar's line
        click.echo(f"volsr: {text}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _infer_source(raws, targets, volumes) -> str:
    if volumes:
        return "isotropic"
    if raws:
        return "paired"
    if targets:
        return "synthetic"
    raise _Failure("nothing to train on: pass --raw and --target (paired), --target alone "
                   "(synthetic degradation) or --volume (self-supervised isotropic)")


def _training_volumes(source: str, given: dict) -> dict:
    """Read the volumes each role of ``source`` needs (lazily) and check them."""
    needed = SOURCE_ROLES[source]
    for role, paths in given.items():
        if paths and role not in needed:
            wanted = " and ".join(f"--{r}" for r in needed)
            raise _Failure(f"--{role} is not used by the {source} source, which reads {wanted}")
    for role in needed:
        if not given[role]:
            raise _Failure(f"the {source} source needs --{role} PATH")
    if source == "paired" and len(given["raw"]) != len(given["target"]):
        raise _Failure(f"pass one --target per --raw (got {len(given['raw'])} raw and "
                       f"{len(given['target'])} target volumes)")
    volumes = {}
    for role in needed:
        volumes[role] = []
        for path in given[role]:
            try:
                volume = read_volume(path, lazy=True)
            except VolumeIOError as exc:
                raise _Failure(str(exc)) from None
            if volume.axes != "ZYX":
                raise _Failure(f"{path}: --{role} must be a single-channel 3D volume (ZYX), got "
                               f"axes {volume.axes} {tuple(volume.data.shape)}")
            volumes[role].append((path, volume))
    return volumes


def _default_z_factor(source: str, volumes: dict) -> int:
    """Return the z-factor the data implies, as the console API does.

    Target depth / raw depth (paired), the z/x spacing ratio (isotropic), 1 (synthetic).
    """
    from .._layers import default_z_factor
    from .._training import check_pair, pair_z_factor

    if source == "paired":
        (raw_path, raw), (target_path, target) = volumes["raw"][0], volumes["target"][0]
        factor = pair_z_factor(raw.data.shape, target.data.shape)
        if factor is None:
            check_pair(raw.data.shape, target.data.shape, 1, raw_path.name, target_path.name)
        return factor
    if source == "isotropic":
        path, volume = volumes["volume"][0]
        factor = default_z_factor(volume.spacing)
        if factor < 2:
            spacing = " x ".join(f"{s:g}" for s in volume.spacing)
            raise ValueError(f"{path.name} looks isotropic (spacing {spacing}): pass --z-factor, "
                             "the ratio of z spacing to x spacing")
        return factor
    return 1


def _free_name(parent: Path, base: str | None, family: str) -> str:
    """``<base>-<family>``, unique in ``parent`` (the library's own rule, any folder)."""
    from .._training import suggest_model_name

    name = stem = suggest_model_name(base, family)
    i = 2
    while (parent / name).exists():
        name, i = f"{stem}-{i}", i + 1
    return name


def _card_summary(folder: Path) -> tuple[str, str]:
    """Two lines about a saved model: what it is, and its final validation."""
    from ..engine.models import ModelError, read_model_config

    try:
        config = read_model_config(folder)
    except ModelError:
        return "", ""
    training = config.training or {}
    what = (f"{config.family} {config.task} x{config.z_factor} ({config.spatial_dims}D), "
            f"{training.get('steps') or 0} steps in {training.get('minutes') or 0:.2f} min")
    validation = training.get("final_validation") or {}
    scores = ", ".join(f"{k.upper()} {v:.4f}{' dB' if k == 'psnr' else ''}"
                       for k, v in validation.items() if isinstance(v, (int, float)))
    return what, scores


@click.command()
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path),
              help="TrainingConfig fields as .json or .yaml (YAML needs pyyaml); flags win.")
@click.option("--source", type=click.Choice(SOURCES), default=None,
              help="Default: the config file's, else from the inputs: --volume isotropic, "
              "--raw paired, --target alone synthetic.")
@click.option("--raw", "raws", multiple=True, type=click.Path(path_type=Path),
              help="Degraded input volume (paired); repeat for several.")
@click.option("--target", "targets", multiple=True, type=click.Path(path_type=Path),
              help="Ground-truth volume (paired, one per --raw) or clean volume (synthetic).")
@click.option("--volume", "volumes", multiple=True, type=click.Path(path_type=Path),
              help="Anisotropic volume for self-supervised isotropic training.")
@click.option("--family", type=click.Choice([f.value for f in Family]), default=None,
              help="Model family (default: the config file's, else rcan).")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None,
              help="Network size; replaces the file's network sizes (default: small, with "
              "the file's sizes on top).")
@click.option("-z", "--z-factor", type=click.IntRange(1, 16), default=None,
              help="z upsampling (default: target depth / raw depth, the z/x spacing ratio "
              "for isotropic, 1 for synthetic).")
@click.option("-n", "--name", default=None,
              help="Model name in the library (default: <first input>-<family>).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Total step budget, counting resumed steps (default 1000 unless another "
              "budget is given).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Wall-clock budget.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Epoch budget; training stops at the first budget reached.")
@click.option("--patch", default=None,
              help="Patch on the input grid: Z,Y,X (3D) or Y,X (2D, isotropic).")
@click.option("--batch-size", type=click.IntRange(1, 512), default=None)
@click.option("--lr", "learning_rate", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="Learning rate (default: the family's).")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default auto).")
@click.option("--resume", is_flag=True,
              help="Continue the model's last checkpoint; without model options the "
              "checkpoint's settings are used.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model of this name.")
@click.option("--output-dir", type=click.Path(path_type=Path), default=None,
              help="Save the model as OUTPUT_DIR/NAME instead of in the library.")
@click.option("--dry-run", is_flag=True,
              help="Check the inputs and print the resolved config as JSON; do not train.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(config_path, source, raws, targets, volumes, family, preset, z_factor, name, steps,
          minutes, epochs, patch, batch_size, learning_rate, device, resume, overwrite,
          output_dir, dry_run, quiet):
    r"""Train a model on volume files and save it in the model library.

    \b
    Sources:
      paired     --raw LOW.tif --target HIGH.tif  (target depth = raw depth x z-factor)
      synthetic  --target CLEAN.tif               (inputs degraded on the fly)
      isotropic  --volume ANISO.tif               (self-supervised from the volume alone)

    Ctrl-C (or SIGTERM) stops after the current step and saves a checkpoint and the
    model; continue with --resume. A second Ctrl-C aborts at once.
    """
    from ..engine.models import library_dir

    if resume and overwrite:
        raise _Failure("choose --resume (continue the model) or --overwrite (start it anew), "
                       "not both")
    file_values, file_model = _read_config_file(config_path)
    source = source or file_values.get("source") or _infer_source(raws, targets, volumes)
    if source not in SOURCES:
        raise _Failure(f"source: must be one of {', '.join(SOURCES)}, got {source!r}")
    inputs = _training_volumes(source, {"raw": raws, "target": targets, "volume": volumes})
    first_path, first = inputs[SOURCE_ROLES[source][0]][0]
    parent = output_dir if output_dir is not None else library_dir()
    overrides = dict(steps=steps, minutes=minutes, epochs=epochs, patch_shape=_patch_shape(patch),
                     batch_size=batch_size, learning_rate=learning_rate, device=device)
    try:
        name, folder, config = _resolve_request(
            file_values, file_model, source, inputs, parent, first_path, name=name,
            family=family, preset=preset, z_factor=z_factor, overrides=overrides,
            resume=resume, overwrite=overwrite)
    except ValueError as exc:
        raise _Failure(str(exc)) from None
    if dry_run:
        click.echo(f"would train '{name}' into {folder} ({source} data)", err=True)
        click.echo(json.dumps(config.model_dump(mode="json"), indent=2))
        return
    roles = {"raw": "raws", "target": "targets", "volume": "volumes"}
    arrays = {roles[role]: [v.data for _, v in items] for role, items in inputs.items()}
    _run_training(config, arrays, folder, first.spacing, resume, overwrite, quiet)


def _read_config_file(config_path: Path | None) -> tuple[dict, dict]:
    """``--config``'s values and its model section ({} and {} without one)."""
    from .._train_config import file_model_section, load_config_file

    try:
        file_values = load_config_file(config_path) if config_path is not None else {}
        return file_values, file_model_section(file_values)
    except ValueError as exc:
        raise _Failure(str(exc)) from None


def _resolve_request(file_values: dict, file_model: dict, source: str, inputs: dict,
                     parent: Path, first_path: Path, *, name, family, preset, z_factor,
                     overrides: dict, resume: bool, overwrite: bool):
    """Return (name, folder, TrainingConfig) of a request; ValueError says what is wrong."""
    from .._train_config import build_training_config

    network = file_model.get("network") if isinstance(file_model.get("network"), dict) else {}
    chosen_family = family or network.get("family") or "rcan"
    name = _model_name(name or file_model.get("name"), resume, parent, first_path,
                       str(chosen_family))
    folder = parent / name
    resumed, start_step = None, 0
    if resume:
        checkpoint_config, start_step = _resume_checkpoint(folder, name, source)
        model_options = family or preset or z_factor or (set(file_model) - {"name"})
        resumed = None if model_options else checkpoint_config
    elif folder.exists() and not overwrite:
        raise ValueError(f"a model named '{name}' exists in {parent}: choose another --name, "
                         "--resume it or --overwrite it")
    factor = z_factor if z_factor is not None else file_model.get("z_factor")
    if factor is None and resumed is None:
        factor = _default_z_factor(source, inputs)
    if resumed is None and (isinstance(factor, bool) or not isinstance(factor, int)):
        raise ValueError(f"model.z_factor: expected an integer from 1 to 16, got {factor!r}")
    config = build_training_config(file_values, source=source, z_factor=factor, name=name,
                                   family=family, preset=preset, overrides=overrides,
                                   model_config=resumed)
    _check_request(config, source, inputs, name, resume, start_step)
    return name, folder, config


def _model_name(name: str | None, resume: bool, parent: Path, first_path: Path,
                family: str) -> str:
    """The checked model name: given, or free in ``parent`` after the first input."""
    from .._training import check_model_name

    if name is None:
        if resume:
            raise ValueError("--resume needs the model's --name")
        name = _free_name(parent, _base_name(first_path), family)
    return check_model_name(name)


def _resume_checkpoint(folder: Path, name: str, source: str):
    """The checkpoint's model config and step, if it was trained on this kind of data."""
    from .._train_config import checkpoint_model

    checkpoint_config, start_step = checkpoint_model(folder)
    if (checkpoint_config.task == "isotropic") != (source == "isotropic"):
        kind = ("the isotropic source" if checkpoint_config.task == "isotropic"
                else "paired or synthetic data")
        raise ValueError(f"'{name}' was trained with {kind}: pass the same kind of "
                         "data to resume it")
    return checkpoint_config, start_step


def _check_request(config, source: str, inputs: dict, name: str, resume: bool,
                   start_step: int) -> None:
    """Refuse pairs that do not match, inputs equal to targets and spent step budgets."""
    from .._training import check_pair

    factor = config.model.z_factor
    if source == "paired":
        pairs = zip(inputs["raw"], inputs["target"], strict=True)
        for (raw_path, raw), (target_path, target) in pairs:
            check_pair(raw.data.shape, target.data.shape, factor, raw_path.name,
                       target_path.name)
    degradation = config.degradation
    if (source == "synthetic" and factor == 1 and max(degradation.blur_sigma) == 0
            and degradation.poisson_peak is None and max(degradation.gaussian_sigma) == 0):
        raise ValueError("with z-factor 1 and no blur or noise the simulated input equals the "
                         "target: set degradation (blur_sigma, poisson_peak or gaussian_sigma) "
                         "in --config, or a z-factor")
    if (resume and config.steps is not None and config.minutes is None
            and config.epochs is None and config.steps <= start_step):
        raise ValueError(f"'{name}' has trained {start_step} steps already: pass --steps "
                         f"above {start_step} to continue")

def _run_training(config, arrays: dict, folder: Path, spacing, resume: bool, overwrite: bool,
                  quiet: bool) -> None:
    """Build the data, drive ``iter_train`` with progress, stop cleanly on Ctrl-C."""
    from .._training import training_data
    from ..engine.models import ModelError
    from ..engine.train import checkpoint_dir_for, iter_train

    try:
        data = training_data(config, **arrays)
    except (ValueError, VolumeIOError) as exc:
        raise _Failure(str(exc)) from None
    from ..engine import ddp

    replica = ddp.from_environment()  # under torchrun: only rank 0 reports
    main_rank = replica is None or replica.is_main
    generator = iter_train(config, data, output_dir=folder, resume=resume, overwrite=overwrite,
                           voxel_spacing=spacing)
    display = _TrainDisplay(quiet or not main_rank, config.minutes)
    checkpoints = checkpoint_dir_for(folder)
    stopped_by = None
    try:
        with _GracefulStop() as stop:
            while True:
                try:
                    record = next(generator)
                except StopIteration:
                    break
                display.show(record)
                if stop.signum is not None:
                    stopped_by = stop.signum
                    stop.saving = True
                    display.close()
                    click.echo("volsr: stopping: saving a checkpoint and the model...", err=True)
                    generator.close()  # iter_train's GeneratorExit handler saves both
                    break
    except KeyboardInterrupt:
        display.close()
        generator.close()
        raise _Interrupted(f"aborted: the last checkpoint, if any, is in {checkpoints}") from None
    except (ModelError, ValueError, FloatingPointError, VolumeIOError, RuntimeError) as exc:
        display.close()
        raise _Failure(" ".join(str(exc).split())) from None
    finally:
        display.close()
    if not main_rank:
        return
    what, scores = _card_summary(folder)
    if stopped_by is not None:
        raise _Interrupted(
            f"stopped: model saved to {folder} ({what}), checkpoint in {checkpoints}; "
            "continue with --resume", exit_code=128 + int(stopped_by),
        )
    click.echo(f"model '{folder.name}' saved to {folder}")
    click.echo(f"  {what}")
    click.echo(f"  validation: {scores or 'not computed'}")

