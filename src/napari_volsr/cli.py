"""The ``volsr`` command: train, restore, evaluate, manage models, inspect volumes, demo."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

import click

from .engine.config import PRESET_NAMES
from .engine.io import (
    WRITERS,
    VolumeIOError,
    can_read,
    check_writable,
    format_suffix,
    read_volume,
    remove_tree,
    write_volume,
)
from .engine.registry import Family

SOURCES = ("paired", "synthetic", "isotropic")
OUTPUT_FORMATS = ("tif", "ome.tif", "nii.gz", "zarr")
# What each training source reads, as (role, flag) pairs.
SOURCE_ROLES = {"paired": ("raw", "target"), "synthetic": ("target",), "isotropic": ("volume",)}


class _Failure(click.ClickException):
    """A failure with a one-line message (printed by :func:`main`), exit status 1."""


class _Interrupted(click.ClickException):
    """Stopped by Ctrl-C (or SIGTERM); the message says what was kept. Exit status 130."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


def _int_tuple(text: str, n: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected {n} integers like 32,128,128, got {text!r}",
                                 param_hint=name) from None
    if len(values) == 1:
        values = values * n
    if len(values) != n or any(v < minimum for v in values):
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise click.BadParameter(f"expected {n} integers {kind}, got {text!r}", param_hint=name)
    return values


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def _base_name(path: Path) -> str:
    """File name without its format suffix: ``a.ome.tif`` -> ``a``."""
    suffix = format_suffix(path)
    name = path.name.rstrip("/")
    return name[: len(name) - len(suffix)] if suffix else name


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="napari-volsr")
def cli():
    """Restore 3D volumes and make anisotropic ones isotropic."""


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
def info(path: Path):
    """Print shape, dtype, voxel spacing and size of a volume file."""
    try:
        volume = read_volume(path, lazy=True)
    except VolumeIOError as exc:
        raise _Failure(str(exc)) from None
    data = volume.data
    nbytes = int(data.size) * data.dtype.itemsize
    spacing = " x ".join(f"{s:g}" for s in volume.spacing)
    click.echo(f"file:    {path}")
    click.echo(f"axes:    {volume.axes}")
    click.echo(f"shape:   {tuple(int(n) for n in data.shape)}")
    click.echo(f"dtype:   {data.dtype}")
    click.echo(f"spacing: {spacing} {volume.unit or '(no unit)'}")
    click.echo(f"size:    {_format_bytes(nbytes)} in memory")
    if len(volume.spacing) == 3 and volume.spacing[2] > 0:
        click.echo(f"z/x anisotropy: {volume.spacing[0] / volume.spacing[2]:.2f}")


# ---------------------------------------------------------------- restore


def _temp_siblings(path: Path) -> set[Path]:
    """Temporaries ``io.atomic_path`` makes for ``path`` (``.NAME.<random>.part<suffix>``)."""
    return set(path.parent.glob(f".{glob.escape(path.name)}.*.part*"))


def _stamp(path: Path):
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


class _OutputGuard:
    """Remembers an output's state so an interrupted write can be cleaned up and told apart.

    ``write_volume`` writes to a temporary sibling and renames it, removing the
    temporary on errors; a Ctrl-C landing inside that cleanup could still leave it, so
    temporaries that appeared since the guard was made are removed here as well.
    """

    def __init__(self, path: Path):
        self.path = path
        self.temps = _temp_siblings(path)
        self.stamp = _stamp(path)

    def clean(self) -> bool:
        """Remove new temporaries; True when the output was (re)written completely."""
        for tmp in _temp_siblings(self.path) - self.temps:
            if tmp.is_dir():
                remove_tree(tmp)
            else:
                tmp.unlink(missing_ok=True)
        return self.path.exists() and _stamp(self.path) != self.stamp


def _single_output(input_path: Path, output_path: Path, out_format: str | None) -> Path:
    """Return the output file of one input: ``-o`` itself, or a file in the folder ``-o``."""
    if output_path.is_dir() and not can_read(output_path):
        suffix = f".{out_format}" if out_format else format_suffix(input_path)
        return output_path / f"{_base_name(input_path)}{suffix}"
    if out_format and format_suffix(output_path) != f".{out_format}":
        raise _Failure(f"--format {out_format} does not match the output name {output_path.name}; "
                       f"name it *.{out_format} or leave --format out")
    return output_path


def _batch_inputs(folder: Path) -> list[Path]:
    """Readable volumes in a folder (not hidden), sorted by name."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and can_read(p))


def _reference_for(input_path: Path, reference: Path | None) -> Path | None:
    """Return the ground truth for ``input_path`` (None without ``--rescale``).

    That is ``reference`` itself, or a file of the same name (or base name) in the
    folder ``reference``, as 3D-RCAN's apply pairs them.
    """
    if reference is None or not (reference.is_dir() and not can_read(reference)):
        return reference
    same = reference / input_path.name
    if same.exists():
        return same
    base = _base_name(input_path)
    for candidate in _batch_inputs(reference):
        if _base_name(candidate) == base:
            return candidate
    raise ValueError(f"no reference for {input_path.name} in {reference} (expected a file "
                     f"named {input_path.name} or {base}.*)")


def _is_zarr(path: Path) -> bool:
    return format_suffix(path) in (".zarr", ".ome.zarr")


def _restore_file(input_path: Path, output_path: Path, restorer_for, options: dict,
                  reference: Path | None, overwrite: bool, quiet: bool, label: str,
                  cluster=None) -> str:
    """Restore one file and write it; return the line that says what was written.

    Zarr outputs are streamed: blocks merge into a scratch store beside the output
    (or, with ``cluster`` = (client, spec_for), workers write the output directly), so
    memory is bounded by the block plan, not the volume.
    """
    import numpy as np

    from .engine.evaluate import check_same_shape, rescale_to
    from .engine.predict import iter_restore, to_output_dtype

    volume = read_volume(input_path, lazy=True)
    if len(volume.spacing) != 3:
        raise ValueError(
            f"{input_path} is a 2D image {tuple(volume.data.shape)}; "
            "restoration needs a 3D volume (Z, Y, X)"
        )
    if cluster is not None:
        from .engine.dask_restore import iter_restore_to_zarr

        client, spec_for = cluster
        run = {k: v for k, v in options.items() if k not in ("device", "precision")}
        result = _run_with_progress(
            iter_restore_to_zarr(input_path, spec_for(volume.spacing), output_path, client,
                                 overwrite=overwrite, **run), quiet, label)
        spacing = " x ".join(f"{s:g}" for s in result.spacing)
        return (f"wrote {output_path}: {tuple(result.data.shape)} {result.data.dtype}, spacing "
                f"{spacing} {volume.unit or ''} ({result.settings['method']} x{result.z_factor}; "
                f"{result.plan} on {result.settings['workers']} dask workers)")
    restorer = restorer_for(volume.spacing)
    factor = restorer.z_factor
    ground_truth = None
    if reference is not None:
        ground_truth = read_volume(reference, lazy=True)
        shape = list(volume.data.shape)
        shape[-3] *= factor
        check_same_shape(shape, ground_truth.data.shape, what=f"the result of {input_path.name}")
    output_dtype = options["output_dtype"]
    run_options = dict(options, output_dtype="float32") if ground_truth is not None else options
    scratch = None
    if _is_zarr(output_path) and ground_truth is None:
        # Named like io.atomic_path's temporaries, so an interrupt's cleanup finds it.
        scratch = Path(tempfile.mkdtemp(prefix=f".{output_path.name}.", suffix=".part-merge.zarr",
                                        dir=output_path.parent))
        run_options = dict(run_options, out_store=str(scratch))
    try:
        generator = iter_restore(volume.data, restorer, spacing=volume.spacing,
                                 origin=volume.origin, **run_options)
        result = _run_with_progress(generator, quiet, label)
        data, note = result.data, ""
        if ground_truth is not None:
            data, gain, offset = rescale_to(np.asarray(data), ground_truth.data)
            data = to_output_dtype(data, output_dtype, volume.data.dtype)
            note = f"; fitted to {reference.name}: {gain:.6g} * x + {offset:.6g}"
        out = volume.with_data(data, spacing=result.spacing, origin=result.origin)
        write_volume(output_path, out, overwrite=overwrite)
    finally:
        if scratch is not None:
            remove_tree(scratch)
    spacing = " x ".join(f"{s:g}" for s in result.spacing)
    return (f"wrote {output_path}: {tuple(data.shape)} {data.dtype}, spacing {spacing} "
            f"{volume.unit or ''} ({restorer.name} x{factor}; {result.plan}{note})")


@cli.command()
@click.option("-i", "--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="Volume to restore (.tif, .ome.tif, .nii, .nii.gz, .zarr), or a folder: "
              "batch mode, every readable volume in it.")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(path_type=Path),
              help="Where to write the result; the format follows the suffix. A folder (made "
              "if missing) for batch mode: same base names, format from --format.")
@click.option("-m", "--method", "--model", "model", default="cubic", show_default=True,
              help="A model from the library (name or folder) or a baseline: nearest, linear, cubic.")
@click.option("-z", "--z-factor", default="auto", show_default=True,
              help="z upsampling factor 1..16, or 'auto': the model's, or round(z spacing / "
              "x spacing) for baselines.")
@click.option("--block-shape", default="auto", show_default=True,
              help="'auto' (from the memory budget) or Z,Y,X block core in input voxels.")
@click.option("--overlap", default=None,
              help="Z,Y,X voxels by which blocks overlap and are blended (default: the model's).")
@click.option("--percentiles", default="1,99.8", show_default=True,
              help="Low,high percentiles mapped to 0,1 before the network.")
@click.option("--output-dtype", type=click.Choice(["float32", "input", "uint8", "uint16"]),
              default="float32", show_default=True)
@click.option("--format", "out_format", type=click.Choice(OUTPUT_FORMATS), default=None,
              help="Output format when -o is a folder (default: the input's).")
@click.option("--rescale", "reference", type=click.Path(path_type=Path), default=None,
              help="Ground truth on the output grid: fit the result to it by least squares "
              "(a * x + b) before writing, as 3D-RCAN does. In batch mode a folder of files "
              "named like the inputs.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Restore on a local dask.distributed cluster of N worker processes "
              "(zarr output).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Restore on a running dask.distributed cluster (e.g. tcp://host:8786); "
              "the output zarr must be on storage every worker can write.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def restore(input_path, output_path, model, z_factor, block_shape, overlap, percentiles,
            output_dtype, out_format, reference, device, precision, overwrite, workers,
            scheduler, quiet):
    """Restore (and z-upsample) a volume file, or every volume in a folder.

    Outputs are written atomically: Ctrl-C leaves finished files and no partial ones.
    Zarr outputs are streamed block by block, so volumes larger than memory work.
    In batch mode a file that fails is reported and the others go on; the exit status
    is then non-zero.
    """
    try:
        low, high = (float(p) for p in percentiles.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two numbers like 1,99.8, got {percentiles!r}",
                                 param_hint="--percentiles") from None
    blocks = "auto" if block_shape == "auto" else _int_tuple(block_shape, 3, "--block-shape")
    overlaps = None if overlap is None else _int_tuple(overlap, 3, "--overlap", minimum=0)
    factor = None if z_factor == "auto" else _z(z_factor)
    batch = input_path.is_dir() and not can_read(input_path)
    if batch:
        jobs = _batch_jobs(input_path, output_path, out_format)
    else:
        output_path = _single_output(input_path, output_path, out_format)
        if input_path.resolve() == output_path.resolve():
            raise _Failure("the output path equals the input path; choose another output name")
        if output_path.exists() and not overwrite:
            raise _Failure(f"{output_path} exists; pass --overwrite or choose another name")
        try:
            check_writable(output_path, overwrite=True)
        except VolumeIOError as exc:
            raise _Failure(str(exc)) from None
        jobs = [(input_path, output_path)]
    if reference is not None and not reference.exists():
        raise _Failure(f"{reference}: no such reference file or folder (--rescale)")
    if batch and reference is not None and can_read(reference) and len(jobs) > 1:
        raise _Failure(f"--rescale {reference} is one file but {input_path} holds {len(jobs)} "
                       "volumes; pass a folder of references named like the inputs")
    restorer_for = _restorer_factory(model, factor, device)
    options = dict(block_shape=blocks, overlap=overlaps, percentiles=(low, high),
                   output_dtype=output_dtype, device=device, precision=precision)
    distributed = workers is not None or scheduler is not None
    if distributed:
        _check_distributed(workers, scheduler, [out for _, out in jobs], reference)
    with _dask_cluster(workers, scheduler, model, factor, device, precision) as cluster:
        if batch:
            _restore_batch(jobs, input_path, output_path, restorer_for, options, reference,
                           overwrite, quiet, cluster)
            return
        guard = _OutputGuard(output_path)
        try:
            line = _restore_file(input_path, output_path, restorer_for, options,
                                 _reference_for(input_path, reference), overwrite, quiet,
                                 "restoring", cluster)
        except (VolumeIOError, ValueError) as exc:
            raise _Failure(str(exc)) from None
        except KeyboardInterrupt:
            written = guard.clean()
            raise _Interrupted(f"{output_path} was written before the interrupt" if written
                               else "no output was written") from None
    click.echo(line.rstrip(), err=quiet)


def _check_distributed(workers, scheduler, outputs: list[Path], reference) -> None:
    if workers is not None and scheduler is not None:
        raise _Failure("give --workers (a local cluster) or --scheduler (an existing one), "
                       "not both")
    if reference is not None:
        raise _Failure("--rescale needs the whole result in memory; restore without "
                       "--workers/--scheduler")
    if not all(_is_zarr(out) for out in outputs):
        raise _Failure("dask workers write their blocks into one zarr store: name the output "
                       "*.zarr (or --format zarr for a folder)")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise _Failure("--workers/--scheduler need dask.distributed: "
                       "pip install 'napari-volsr[distributed]'") from None


@contextlib.contextmanager
def _dask_cluster(workers, scheduler, model, factor, device, precision):
    """Yield (client, spacing -> RestorerSpec) for distributed restoration, or None."""
    if workers is None and scheduler is None:
        yield None
        return
    from ._layers import default_z_factor
    from .engine.dask_restore import local_cluster_client, model_spec, torch_threads_per_worker
    from .engine.restorers import BASELINES

    threads = torch_threads_per_worker(workers) if workers else None
    try:
        spec = model_spec(model, factor, device, precision, threads)
    except Exception as exc:
        raise _Failure(str(exc)) from None

    def spec_for(spacing):
        if model in BASELINES and factor is None:
            return dataclasses.replace(spec, z_factor=default_z_factor(spacing))
        return spec

    if workers is not None:
        client = local_cluster_client(workers)
    else:
        from distributed import Client

        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise _Failure(f"cannot reach the dask scheduler at {scheduler} ({exc})") from None
    try:
        yield client, spec_for
    finally:
        cluster = client.cluster if workers is not None else None
        client.close()
        if cluster is not None:
            cluster.close()


def _restorer_factory(model: str, factor: int | None, device: str):
    """Return ``spacing -> restorer``, failing early on unusable models or devices.

    A trained model is loaded once; baselines follow each file's spacing unless ``-z``
    is given.
    """
    from ._layers import default_z_factor
    from .engine.predict import resolve_device
    from .engine.restorers import BASELINES, get_restorer

    try:
        resolve_device(device)
        if model in BASELINES:
            def for_spacing(spacing):
                return get_restorer(model, factor or default_z_factor(spacing))

            get_restorer(model, factor or 1)  # check the options once, before any work
            return for_spacing
        shared = get_restorer(model, factor)
    except ValueError as exc:
        raise _Failure(str(exc)) from None
    return lambda spacing: shared


def _batch_jobs(input_dir: Path, output_dir: Path,
                out_format: str | None) -> list[tuple[Path, Path]]:
    """(input, output) pairs of batch mode, checked before any work."""
    if output_dir.exists() and not output_dir.is_dir():
        raise _Failure(f"-o {output_dir} is a file; with a folder as input, -o must be a folder")
    if format_suffix(output_dir) in WRITERS:
        raise _Failure(f"-o {output_dir} names a volume; with a folder as input, -o must be a "
                       "folder (choose the format with --format)")
    if output_dir.resolve() == input_dir.resolve():
        raise _Failure("the output folder equals the input folder; choose another output folder")
    inputs = _batch_inputs(input_dir)
    if not inputs:
        raise _Failure(f"{input_dir}: no volumes to restore (looked for .tif, .tiff, .ome.tif, "
                       ".nii, .nii.gz, .zarr)")
    jobs = []
    for path in inputs:
        suffix = f".{out_format}" if out_format else format_suffix(path)
        jobs.append((path, output_dir / f"{_base_name(path)}{suffix}"))
    return jobs


def _restore_batch(jobs, input_dir: Path, output_dir: Path, restorer_for, options: dict,
                   reference: Path | None, overwrite: bool, quiet: bool, cluster=None) -> None:
    """Restore every file; report failures one by one and fail at the end if any did."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _Failure(f"{output_dir}: cannot make the output folder "
                       f"({exc.strerror or exc})") from None
    failures, written, claimed = [], 0, {}
    n = len(jobs)
    for i, (input_path, output_path) in enumerate(jobs, start=1):
        guard = _OutputGuard(output_path)
        try:
            if output_path in claimed:
                raise ValueError(f"{claimed[output_path].name} already writes {output_path.name}; "
                                 "rename one of them or choose another --format")
            claimed[output_path] = input_path
            if output_path.exists() and not overwrite:
                raise ValueError(f"{output_path} exists; pass --overwrite")
            line = _restore_file(input_path, output_path, restorer_for, options,
                                 _reference_for(input_path, reference), overwrite, quiet,
                                 f"[{i}/{n}] {input_path.name}", cluster)
        except KeyboardInterrupt:
            if guard.clean():
                written += 1
            raise _Interrupted(
                f"stopped at {input_path.name}: {written} of {n} volumes written to {output_dir}, "
                "no partial files left"
            ) from None
        except Exception as exc:  # one bad file must not stop the batch
            guard.clean()
            message = " ".join(str(exc).split()) or type(exc).__name__
            failures.append(input_path.name)
            click.echo(f"volsr: {input_path.name}: failed: {message}", err=True)
            continue
        written += 1
        click.echo(line.rstrip(), err=quiet)
    click.echo(f"restored {written} of {n} volumes from {input_dir} into {output_dir}", err=quiet)
    if failures:
        raise _Failure(f"{len(failures)} of {n} volumes failed: {', '.join(failures)}")


def _z(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter(f"expected an integer 1..16 or 'auto', got {text!r}",
                                 param_hint="--z-factor") from None
    if not 1 <= value <= 16:
        raise click.BadParameter(f"must be from 1 to 16, got {value}", param_hint="--z-factor")
    return value


def _run_with_progress(generator, quiet: bool, label: str = "restoring"):
    """Drain a progress generator, drawing a bar for the blocks stage on stderr."""
    bar = None
    try:
        while True:
            try:
                record = next(generator)
            except StopIteration as stop:
                return stop.value
            if quiet or record.stage != "blocks" or record.total < 1:
                continue
            if bar is None:
                bar = click.progressbar(length=record.total, label=label, file=sys.stderr)
                bar.__enter__()
            bar.update(record.done - bar.pos)
    finally:
        generator.close()
        if bar is not None:
            bar.__exit__(None, None, None)


# ---------------------------------------------------------------- evaluate


@cli.command()
@click.argument("result", type=click.Path(path_type=Path))
@click.argument("reference", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the scores as a JSON object.")
def evaluate(result: Path, reference: Path, as_json: bool):
    """PSNR, SSIM and NRMSE of RESULT against REFERENCE (data range: the reference's).

    Both volumes must have the same shape. In JSON, a PSNR of identical volumes
    (infinite) is null.
    """
    import math

    from .engine.evaluate import check_same_shape, compare

    try:
        got, truth = read_volume(result, lazy=True), read_volume(reference, lazy=True)
        check_same_shape(got.data.shape, truth.data.shape, what=f"result {result.name}")
        scores = compare(got.data, truth.data)
    except (VolumeIOError, ValueError) as exc:
        raise _Failure(str(exc)) from None
    if as_json:
        finite = {k: (v if v is None or math.isfinite(v) else None) for k, v in scores.items()}
        click.echo(json.dumps({"result": str(result), "reference": str(reference),
                               "shape": list(truth.data.shape), **finite}, indent=2))
        return
    ssim_text = ("n/a (an axis is thinner than 3 voxels)" if scores["ssim"] is None
                 else f"{scores['ssim']:.6f}")
    click.echo(f"PSNR:  {scores['psnr']:.4f} dB")
    click.echo(f"SSIM:  {ssim_text}")
    click.echo(f"NRMSE: {scores['nrmse']:.6f}")
    click.echo(f"(data range {scores['data_range']:g}, shape {tuple(truth.data.shape)})")


# ---------------------------------------------------------------- models


@cli.group()
def models():
    """List, show and export the models in the library ($NAPARI_VOLSR_MODELS)."""


def _model_row(folder: Path) -> dict:
    from .engine.models import ModelError, read_model_config

    try:
        config = read_model_config(folder)
    except ModelError as exc:
        return {"name": folder.name, "folder": str(folder), "error": str(exc)}
    training = config.training or {}
    validation = training.get("final_validation") or {}
    return {
        "name": folder.name, "family": config.family, "task": config.task,
        "z_factor": config.z_factor, "spatial_dims": config.spatial_dims,
        "steps": training.get("steps"), "val_psnr": validation.get("psnr"),
        "val_ssim": validation.get("ssim"), "folder": str(folder),
    }


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def models_list(as_json: bool):
    """Name, family, task, z-factor, steps and validation PSNR of each model."""
    from .engine.models import library_dir, list_library

    root = library_dir()
    rows = [_model_row(root / name) for name in list_library()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no models in {root} yet: train one with 'volsr train'", err=True)
        return
    table = [("NAME", "FAMILY", "TASK", "Z", "STEPS", "VAL PSNR")]
    for row in rows:
        if "error" in row:
            table.append((row["name"], "?", "unreadable", "", "", ""))
            continue
        psnr = row["val_psnr"]
        table.append((row["name"], row["family"], row["task"], str(row["z_factor"]),
                      "-" if row["steps"] is None else str(row["steps"]),
                      "-" if psnr is None else f"{psnr:.2f} dB"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@models.command("show")
@click.argument("name")
def models_show(name: str):
    """Print a model's config and training card as JSON."""
    from .engine.models import ModelError, read_model_config

    try:
        config = read_model_config(name)
    except ModelError as exc:
        raise _Failure(str(exc)) from None
    click.echo(json.dumps(config.model_dump(mode="json"), indent=2))


@models.command("export")
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing archive.")
def models_export(name: str, dest: Path, overwrite: bool):
    """Zip the model folder NAME into DEST.zip (unzips into a loadable model folder)."""
    from .engine.export import export_zip
    from .engine.models import ModelError

    try:
        path, n_files = export_zip(name, dest, overwrite=overwrite)
    except ModelError as exc:
        raise _Failure(str(exc)) from None
    except KeyboardInterrupt:
        raise _Interrupted(f"{dest} was not written") from None
    click.echo(f"wrote {path}: {n_files} files, {_format_bytes(path.stat().st_size)}")


# ---------------------------------------------------------------- train


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
    from ._layers import default_z_factor
    from ._training import check_pair, pair_z_factor

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
    from ._training import suggest_model_name

    name = stem = suggest_model_name(base, family)
    i = 2
    while (parent / name).exists():
        name, i = f"{stem}-{i}", i + 1
    return name


def _card_summary(folder: Path) -> tuple[str, str]:
    """Two lines about a saved model: what it is, and its final validation."""
    from .engine.models import ModelError, read_model_config

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


@cli.command()
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
    from ._train_config import (
        build_training_config,
        checkpoint_model,
        file_model_section,
        load_config_file,
    )
    from ._training import check_model_name, check_pair
    from .engine.models import library_dir

    if resume and overwrite:
        raise _Failure("choose --resume (continue the model) or --overwrite (start it anew), "
                       "not both")
    try:
        file_values = load_config_file(config_path) if config_path is not None else {}
        file_model = file_model_section(file_values)
    except ValueError as exc:
        raise _Failure(str(exc)) from None
    source = source or file_values.get("source") or _infer_source(raws, targets, volumes)
    if source not in SOURCES:
        raise _Failure(f"source: must be one of {', '.join(SOURCES)}, got {source!r}")
    inputs = _training_volumes(source, {"raw": raws, "target": targets, "volume": volumes})
    first_path, first = inputs[SOURCE_ROLES[source][0]][0]
    parent = output_dir if output_dir is not None else library_dir()
    network = file_model.get("network") if isinstance(file_model.get("network"), dict) else {}
    chosen_family = family or network.get("family") or "rcan"
    patch_shape = None
    if patch is not None:
        n = len(patch.replace("x", ",").split(","))
        patch_shape = _int_tuple(patch, n if n in (2, 3) else 3, "--patch")
    overrides = dict(steps=steps, minutes=minutes, epochs=epochs, patch_shape=patch_shape,
                     batch_size=batch_size, learning_rate=learning_rate, device=device)
    try:
        name = name or file_model.get("name")
        if name is None:
            if resume:
                raise ValueError("--resume needs the model's --name")
            name = _free_name(parent, _base_name(first_path), str(chosen_family))
        name = check_model_name(name)
        folder = parent / name
        resumed, start_step = None, 0
        if resume:
            checkpoint_config, start_step = checkpoint_model(folder)
            if (checkpoint_config.task == "isotropic") != (source == "isotropic"):
                kind = ("the isotropic source" if checkpoint_config.task == "isotropic"
                        else "paired or synthetic data")
                raise ValueError(f"'{name}' was trained with {kind}: pass the same kind of "
                                 "data to resume it")
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
    except ValueError as exc:
        raise _Failure(str(exc)) from None
    if dry_run:
        click.echo(f"would train '{name}' into {folder} ({source} data)", err=True)
        click.echo(json.dumps(config.model_dump(mode="json"), indent=2))
        return
    roles = {"raw": "raws", "target": "targets", "volume": "volumes"}
    arrays = {roles[role]: [v.data for _, v in items] for role, items in inputs.items()}
    _run_training(config, arrays, folder, first.spacing, resume, overwrite, quiet)


def _run_training(config, arrays: dict, folder: Path, spacing, resume: bool, overwrite: bool,
                  quiet: bool) -> None:
    """Build the data, drive ``iter_train`` with progress, stop cleanly on Ctrl-C."""
    from ._training import training_data
    from .engine.models import ModelError
    from .engine.train import checkpoint_dir_for, iter_train

    try:
        data = training_data(config, **arrays)
    except (ValueError, VolumeIOError) as exc:
        raise _Failure(str(exc)) from None
    from .engine import ddp

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


# ---------------------------------------------------------------- demo


@cli.command()
@click.option("--headless", is_flag=True, help="Restore without opening a window, even with a display.")
@click.option("-o", "--output", "output_path", type=click.Path(path_type=Path),
              default=Path("volsr-demo") / "chromosomes_cubic_x4.tif", show_default=True,
              help="Headless mode: where to write the restored sample.")
def demo(headless: bool, output_path: Path):
    """Open napari with a sample volume and the Restore panel (headless: write a file)."""
    from ._sample_data import SAMPLE_DIR

    sample = SAMPLE_DIR / "chromosomes_anisotropic.tif"
    if headless or not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        output_path.parent.mkdir(parents=True, exist_ok=True)
        click.echo("no display: restoring the sample headless", err=True)
        restore.main(
            ["-i", str(sample), "-o", str(output_path), "--model", "cubic", "--overwrite"],
            standalone_mode=False,
        )
        return
    import napari

    viewer = napari.Viewer(title="napari-volsr demo")
    viewer.open(sample, plugin="napari-volsr")
    viewer.dims.ndisplay = 2
    viewer.window.add_plugin_dock_widget("napari-volsr", "Restore")
    napari.run()


def main(argv=None):
    """Entry point of the ``volsr`` command: errors are one line, never a traceback."""
    # tifffile logs what it finds wrong in a file before raising; our error names the
    # file and the problem in one line, so its log lines would only repeat it, noisily.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        cli.main(args=argv, prog_name="volsr", standalone_mode=False)
    except _Interrupted as exc:
        click.echo(f"volsr: interrupted: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"volsr: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("volsr: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # what no command anticipated: out of memory, a full disk...
        message = " ".join(str(exc).split()) or "no details"
        click.echo(f"volsr: error: {type(exc).__name__}: {message}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
