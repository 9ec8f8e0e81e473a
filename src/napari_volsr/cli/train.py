"""``volsr train``: flags and files in, one engine training request, progress out."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..engine.config import PRESET_NAMES
from ..engine.io import VolumeIOError, read_volume
from ..engine.registry import family_names
from ..engine.training_request import SOURCES
from .app import _Failure, _Interrupted
from .options import _base_name, _factors, _job_factors, _patch_shape
from .progress import _GracefulStop, _TrainDisplay


def _card_summary(folder: Path) -> tuple[str, str]:
    """Two lines about a saved model: what it is, and its final validation (what it compares)."""
    from ..engine.geometry import describe_factors
    from ..engine.models import ModelError, read_model_config

    try:
        config = read_model_config(folder)
    except ModelError:
        return "", "validation: not computed"
    training = config.training or {}
    dims = f"{config.spatial_dims}D"
    if config.context_planes:
        c = config.context_planes
        dims = f"2.5D, {c} plane{'s' if c > 1 else ''} each side"
    what = (f"{config.family} {config.task} {describe_factors(config.factors)} ({dims}), "
            f"{training.get('steps') or 0} steps in {training.get('minutes') or 0:.2f} min")
    scores = _scores(training.get("final_validation"))
    baseline = _scores(training.get("baseline_validation"))
    if scores and baseline:
        scores += f" (interpolation baseline: {baseline})"
    label = training.get("validation_label")  # what the PSNR compares
    if not scores:
        return what, "validation: not computed"
    return what, f"validation {label}: {scores}" if label else f"validation: {scores}"


def _scores(validation: dict | None) -> str:
    return ", ".join(f"{k.upper()} {v:.4f}{' dB' if k == 'psnr' else ''}"
                     for k, v in (validation or {}).items() if isinstance(v, (int, float)))


@click.command()
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path),
              help="TrainingConfig fields as .json or .yaml (YAML needs pyyaml); flags win.")
@click.option("--source", type=click.Choice(SOURCES), default=None,
              help="Default: the config file's, else from the inputs: --volume isotropic, "
              "--raw paired, --target alone synthetic. noise2void and noise2noise denoise "
              "from --volume files alone (see Sources above).")
@click.option("--raw", "raws", multiple=True, type=click.Path(path_type=Path),
              help="Degraded input volume (paired); repeat for several.")
@click.option("--target", "targets", multiple=True, type=click.Path(path_type=Path),
              help="Ground-truth volume (paired, one per --raw) or clean volume (synthetic).")
@click.option("--volume", "volumes", multiple=True, type=click.Path(path_type=Path),
              help="Anisotropic volume (isotropic), noisy volume (noise2void) or one "
              "acquisition of the sample (noise2noise: repeat for each, two or more).")
@click.option("--family", type=click.Choice(family_names()), default=None,
              help="Model family (default: the config file's, else rcan).")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None,
              help="Network size; replaces the file's network sizes (default: small, with "
              "the file's sizes on top).")
@click.option("-z", "--z-factor", type=click.IntRange(1, 16), default=None,
              help="z upsampling (default: target depth / raw depth, the z/x spacing ratio "
              "for isotropic, 1 for synthetic, noise2void and noise2noise). Shorthand for "
              "--factors F,1,1.")
@click.option("--factors", default=None, metavar="Z,Y,X",
              help="Upsampling per axis, each 1..16: 1,2,2 trains lateral super-resolution "
              "(the target has twice the raw's rows and columns; synthetic inputs are "
              "area-averaged 2x2 in y, x), 4,2,2 also z. Default: from the data as for "
              "--z-factor, y and x 1.")
@click.option("--spatial-dims", type=click.IntRange(2, 3), default=None,
              help="3: volumetric patches; 2: slice by slice (z-factor 1). Default: the "
              "config file's, else 3 (isotropic is always 2D).")
@click.option("--context-planes", type=click.IntRange(0, 4), default=None,
              help="2.5D: a 2D same-shape model (unet, srunet) also sees this many z planes "
              "on each side of the one it restores, as input channels (default 0).")
@click.option("--mask-axis", type=click.Choice(["z", "y", "x"]), default=None,
              help="noise2void: the axis along which the noise is correlated (e.g. scan "
              "lines along x); a line of voxels along it is masked too (structN2V).")
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
@click.option("--tensorboard", is_flag=True,
              help="Also write a TensorBoard log (losses, validation, preview images) into "
              "the model folder's tensorboard/; needs `pip install tensorboard`.")
@click.option("--dry-run", is_flag=True,
              help="Check the inputs and print the resolved config as JSON; do not train.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(config_path, source, raws, targets, volumes, family, preset, z_factor, factors,
          spatial_dims, context_planes, mask_axis, name, steps, minutes, epochs, patch,
          batch_size, learning_rate, device, resume, overwrite, output_dir, tensorboard,
          dry_run, quiet):
    """Train a model on volume files and save it in the model library.

    \b
    Sources:
      paired      --raw LOW.tif --target HIGH.tif  (target depth = raw depth x z-factor)
                  --factors 1,2,2: target rows, columns = raw's x 2 (lateral SR)
      synthetic   --target CLEAN.tif               (inputs degraded on the fly)
      isotropic   --volume ANISO.tif               (self-supervised from the volume alone)
      noise2void  --volume NOISY.tif               (denoising from the noisy volume alone)
      noise2noise --volume A.tif --volume B.tif    (denoising from repeated acquisitions)

    Ctrl-C (or SIGTERM) stops after the current step and saves a checkpoint and the
    model; continue with --resume. A second Ctrl-C aborts at once.
    """
    from ..engine.config_files import load_config_file
    from ..engine.training_request import resolve_training

    try:
        file_values = load_config_file(config_path) if config_path is not None else {}
        blind_spot = None
        if mask_axis is not None:  # the file's other masking settings stay
            given = file_values.get("blind_spot")
            blind_spot = {**(given if isinstance(given, dict) else {}), "mask_axis": mask_axis}
        request = resolve_training(
            source=source, raw=_read_inputs(raws), target=_read_inputs(targets),
            volume=_read_inputs(volumes), family=family, preset=preset,
            **_job_factors(z_factor, _factors(factors)),
            spatial_dims=spatial_dims, context_planes=context_planes, blind_spot=blind_spot,
            name=name, resume=resume,
            overwrite=overwrite, output_dir=output_dir,
            file_values=file_values, steps=steps, minutes=minutes, epochs=epochs,
            patch_shape=_patch_shape(patch), batch_size=batch_size,
            learning_rate=learning_rate, device=device,
            tensorboard=tensorboard or None)  # unset: the config file's
    except (ValueError, VolumeIOError) as exc:
        raise _Failure(str(exc)) from None
    for line in request.note.splitlines():
        click.echo(f"volsr: {line}", err=True)
    if dry_run:
        click.echo(f"would train '{request.config.model.name}' into {request.folder} "
                   f"({request.config.source} data)", err=True)
        click.echo(json.dumps(request.config.model_dump(mode="json"), indent=2))
        return
    _run_training(request, quiet)


def _read_inputs(paths) -> list:
    """Open each file lazily as a VolumeInput named after the file."""
    from ..engine.training_request import VolumeInput

    inputs = []
    for path in paths:
        volume = read_volume(path, lazy=True)
        inputs.append(VolumeInput(volume.data, spacing=volume.spacing, name=_base_name(path),
                                  origin=volume.origin, unit=volume.unit))
    return inputs


def _run_training(request, quiet: bool) -> None:
    """Build the data, drive ``iter_train`` with progress, stop cleanly on Ctrl-C."""
    from ..engine import ddp
    from ..engine.models import ModelError
    from ..engine.train import checkpoint_dir_for

    try:
        request.data  # reads the volumes and cuts the validation set
    except (ValueError, VolumeIOError) as exc:
        raise _Failure(str(exc)) from None
    replica = ddp.from_environment()  # under torchrun: only rank 0 reports
    main_rank = replica is None or replica.is_main
    folder = request.folder
    generator = request.iter_train()
    display = _TrainDisplay(quiet or not main_rank, request.config.minutes)
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
    what, validation = _card_summary(folder)
    if stopped_by is not None:
        raise _Interrupted(
            f"stopped: model saved to {folder} ({what}), checkpoint in {checkpoints}; "
            "continue with --resume", exit_code=128 + int(stopped_by),
        )
    click.echo(f"model '{folder.name}' saved to {folder}")
    click.echo(f"  {what}")
    click.echo(f"  {validation}")
    if request.config.tensorboard:
        from ..engine.tb_log import log_folder

        click.echo(f"  TensorBoard log: {log_folder(folder)}")

