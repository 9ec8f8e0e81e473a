"""``volsr restore``: one file or a folder of files, in process or on a dask cluster."""

from __future__ import annotations

import contextlib
import glob
import sys
from pathlib import Path

import click

from ..engine.io import WRITERS, VolumeIOError, can_read, check_writable, format_suffix, remove_tree
from ..engine.io.ome_zarr_pyramid import NGFF_VERSIONS
from ..engine.pipeline import check_output_path, is_zarr
from ..engine.dtypes import DEFAULT_OUTPUT_DTYPE, OUTPUT_DTYPES
from .app import _Failure, _Interrupted, _sigterm_as_interrupt, interrupted_code
from .options import (
    _base_name,
    _factors,
    _int_tuple,
    _job_factors,
    _percentiles,
    _suffix_as_written,
    _z,
)

OUTPUT_FORMATS = ("tif", "ome.tif", "nii.gz", "zarr")


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
        suffix = f".{out_format}" if out_format else _suffix_as_written(input_path)
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


def _restore_file(input_path: Path, output_path: Path, model, scaling: dict,
                  options: dict, reference: Path | None, overwrite: bool, quiet: bool,
                  label: str, cluster=None) -> str:
    """Restore one file through the engine pipeline; return the line saying what was written.

    ``scaling``: the engine's factor keywords (:func:`~.options._job_factors`).
    """
    from ..engine.pipeline import iter_restore_file

    client, spec = cluster if cluster is not None else (None, None)
    generator = iter_restore_file(input_path, output_path, model, reference=reference,
                                  overwrite=overwrite, client=client, spec=spec, **scaling,
                                  **options)
    return _run_with_progress(generator, quiet, label).describe()


@click.command(short_help="Restore (and upsample) a volume file or a folder of them.")
@click.option("-i", "--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="Volume to restore (.tif, .ome.tif, .nii, .nii.gz, .zarr), or a folder: "
              "batch mode, every readable volume in it.")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(path_type=Path),
              help="Where to write the result; the format follows the suffix. A folder (made "
              "if missing) for batch mode: same base names, format from --format.")
@click.option("-m", "--method", "--model", "model", multiple=True, default=("cubic",),
              show_default=True,
              help="A model from the library (name or folder) or an interpolation baseline: "
              "cubic, linear, nearest... Repeat it to apply models one after the other in "
              "one job (-m n2v -m iso: denoise, then upsample z).")
@click.option("-z", "--z-factor", default="auto", show_default=True,
              help="z upsampling factor 1..16, or 'auto': the model's, or round(z spacing / "
              "x spacing) for baselines. For several -m: the whole job's. Shorthand for "
              "--factors F,1,1.")
@click.option("--factors", "factors", default=None, metavar="Z,Y,X",
              help="Upsampling per axis, each 1..16: 1,2,2 doubles y and x (lateral "
              "super-resolution), 4,2,2 also z. Default: the model's own; z from --z-factor "
              "and y, x 1 for baselines.")
@click.option("--block-shape", default="auto", show_default=True,
              help="'auto' (from the memory budget) or Z,Y,X block core in input voxels.")
@click.option("--overlap", default=None,
              help="Z,Y,X voxels by which blocks overlap and are blended (default: the model's).")
@click.option("--percentiles", default=None,
              help="Low,high percentiles mapped to 0,1 before the network "
                   "[default: the model's own; 1,99.8 for interpolation].")
@click.option("--output-dtype", type=click.Choice(OUTPUT_DTYPES), default=DEFAULT_OUTPUT_DTYPE,
              show_default=True,
              help="auto: the input's type where the values fit it (rounded and clipped to its "
              "range, never wrapped; bool gives float32, 64-bit integers float64); input: the "
              "input's type always; float32 keeps every value (twice the size of 16-bit "
              "data); uint8, uint16: clipped to their range.")
@click.option("--format", "out_format", type=click.Choice(OUTPUT_FORMATS), default=None,
              help="Output format when -o is a folder (default: the input's).")
@click.option("--rescale", "reference", type=click.Path(path_type=Path), default=None,
              help="Ground truth on the output grid: fit the result to it by least squares "
              "(a * x + b) before writing, as 3D-RCAN does. In batch mode a folder of files "
              "named like the inputs.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              default="auto", show_default=True,
              help="Arithmetic of the network: auto is bf16/fp16 on GPUs, fp32 on CPUs.")
@click.option("--tta/--no-tta", "flips", default=None,
              help="Test-time augmentation: average the restore over every flip of the "
                   "network's axes (4 passes for 2D models, 8 for 3D: that many times the "
                   "restore time). Default: the model's own (on for same-shape 2D models).")
@click.option("--ngff-version", type=click.Choice(NGFF_VERSIONS), default=None,
              help="OME-Zarr (NGFF) version of .zarr outputs: 0.4 (the default, which "
                   "most viewers read) or 0.5 (zarr v3).")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Restore on a local dask.distributed cluster of N worker processes "
              "(zarr output); at most one per core and per GiB of free memory.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Restore on a running dask.distributed cluster (e.g. tcp://host:8786); "
              "the output zarr must be on storage every worker can write.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def restore(input_path, output_path, model, z_factor, factors, block_shape, overlap,
            percentiles, output_dtype, out_format, reference, device, precision, flips,
            ngff_version, overwrite, workers, scheduler, quiet):
    """Restore (and upsample) a volume file, or every volume in a folder.

    \b
    Examples:
      volsr restore -i stack.tif -o iso.tif             z-factor from the spacing
      volsr restore -i stack.tif -o iso.tif -m my-rcan  a model from the library
      volsr restore -i raw/ -o out/ --format zarr       every volume in raw/
      volsr restore -i in.tif -o iso.tif -m n2v -m iso  denoise, then upsample z
      volsr restore -i in.tif -o sr.tif --factors 1,2,2
                                                  y and x upsampled x2 (lateral SR)

    The output keeps the input's data type, values rounded and clipped to its range
    (--output-dtype float32 keeps every value).
    Interpolation at z-factor 1 would change nothing, so it is refused.
    Outputs are written atomically: Ctrl-C (or SIGTERM, exit status 143) leaves
    finished files and no partial ones. Zarr outputs are streamed block by block, so
    volumes larger than memory work. In batch mode a file that fails is reported and
    the others go on; the exit status is then non-zero.
    """
    with _sigterm_as_interrupt():
        _restore(input_path, output_path, model, z_factor, factors, block_shape, overlap,
                 percentiles, output_dtype, out_format, reference, device, precision, flips,
                 ngff_version, overwrite, workers, scheduler, quiet)


def _restore(input_path, output_path, model, z_factor, factors, block_shape, overlap,
             percentiles, output_dtype, out_format, reference, device, precision, flips,
             ngff_version, overwrite, workers, scheduler, quiet):
    model = model[0] if len(model) == 1 else list(model)  # several: a chain, in order
    percentiles = _percentiles(percentiles)
    blocks = "auto" if block_shape == "auto" else _int_tuple(block_shape, 3, "--block-shape")
    overlaps = None if overlap is None else _int_tuple(overlap, 3, "--overlap", minimum=0)
    # z-only requests stay the calls they always were; --factors adds the engine's keyword.
    scaling = _job_factors(None if z_factor == "auto" else _z(z_factor), _factors(factors))
    batch = input_path.is_dir() and not can_read(input_path)
    if batch:
        jobs = _batch_jobs(input_path, output_path, out_format)
    else:
        output_path = _single_output(input_path, output_path, out_format)
        _check_paths(input_path, output_path)
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
    if ngff_version is not None and not all(is_zarr(out) for _, out in jobs):
        raise _Failure(f"--ngff-version {ngff_version} applies to .zarr outputs; name the "
                       "output *.ome.zarr (or pass --format zarr)")
    distributed = workers is not None or scheduler is not None
    if distributed:
        workers = _check_distributed(workers, scheduler, [out for _, out in jobs], reference,
                                     model)
    _check_model(model, scaling, device, fitted=reference is not None)
    restorer_options = {} if flips is None else {"flips": flips}
    options = dict(block_shape=blocks, overlap=overlaps, percentiles=percentiles,
                   output_dtype=output_dtype, device=device, precision=precision,
                   restorer_options=restorer_options)
    if ngff_version is not None:
        options["ngff_version"] = ngff_version
    with _dask_cluster(workers, scheduler, model, scaling, device, precision,
                       restorer_options) as cluster:
        if batch:
            _restore_batch(jobs, input_path, output_path, (model, scaling), options, reference,
                           overwrite, quiet, cluster)
            return
        guard = _OutputGuard(output_path)
        try:
            line = _restore_file(input_path, output_path, model, scaling, options,
                                 _reference_for(input_path, reference), overwrite, quiet,
                                 "restoring", cluster)
        except (VolumeIOError, ValueError) as exc:
            raise _Failure(str(exc)) from None
        except KeyboardInterrupt as exc:
            written = guard.clean()
            raise _Interrupted(_stopped_by(exc) + (
                f"{output_path} was written before the interrupt" if written
                else "no output was written"), interrupted_code(exc)) from None
    click.echo(line, err=quiet)


def _stopped_by(exc: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM); " if interrupted_code(exc) != 130 else ""


def _check_paths(input_path: Path, output_path: Path) -> None:
    """The engine's refusal of an output that is, holds or lies inside the input."""
    try:
        check_output_path(input_path, output_path)
    except ValueError as exc:
        raise _Failure(str(exc)) from None


def _check_distributed(workers, scheduler, outputs: list[Path], reference,
                       model) -> int | None:
    """Refuse what workers cannot do; return the number of local workers to start."""
    from ..engine.pipeline import check_distributable

    if workers is not None and scheduler is not None:
        raise _Failure("give --workers (a local cluster) or --scheduler (an existing one), "
                       "not both")
    try:
        check_distributable(model)
    except ValueError as exc:
        raise _Failure(str(exc)) from None
    if reference is not None:
        raise _Failure("--rescale needs the whole result in memory; restore without "
                       "--workers/--scheduler")
    if not all(is_zarr(out) for out in outputs):
        raise _Failure("dask workers write their blocks into one zarr store: name the output "
                       "*.zarr (or --format zarr for a folder)")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise _Failure("--workers/--scheduler need dask.distributed: "
                       "pip install 'napari-volsr[distributed]'") from None
    from ..engine.dask_restore import cap_local_workers, check_scheduler_address

    if scheduler is not None:
        try:
            check_scheduler_address(scheduler)
        except ValueError as exc:
            raise _Failure(f"--scheduler: {exc}") from None
        return None
    workers, note = cap_local_workers(workers)
    if note is not None:
        click.echo(f"volsr: warning: --workers: {note}", err=True)
    return workers


@contextlib.contextmanager
def _dask_cluster(workers, scheduler, model, scaling, device, precision, restorer_options):
    """Yield (client, RestorerSpec) for distributed restoration, or None."""
    if workers is None and scheduler is None:
        yield None
        return
    from ..engine.dask_restore import local_cluster_client, model_spec, torch_threads_per_worker

    threads = torch_threads_per_worker(workers) if workers else None
    try:
        spec = model_spec(model, device=device, precision=precision, torch_threads=threads,
                          options=restorer_options, **scaling)
    except Exception as exc:
        raise _Failure(str(exc)) from None
    if workers is not None:
        client = local_cluster_client(workers)
    else:
        from distributed import Client

        try:
            client = Client(scheduler.strip(), timeout="10s")
        except Exception as exc:  # OSError, TimeoutError, ValueError for odd addresses...
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise _Failure(f"cannot reach the dask scheduler at {scheduler} ({message})") from None
    try:
        yield client, spec
    finally:
        cluster = client.cluster if workers is not None else None
        client.close()
        if cluster is not None:
            cluster.close()


def _check_model(model, scaling: dict, device: str, fitted: bool = False) -> None:
    """Fail before any work on unusable models (or chains), devices or a no-op z-factor.

    Models are loaded into the engine's cache, where every file's restore finds them.
    A baseline's automatic z-factor follows each file's spacing: checked per file.
    """
    from ..engine.chain import check_models
    from ..engine.devices import resolve_device

    try:
        resolve_device(device)
        check_models(model, allow_identity=fitted, **scaling)
    except ValueError as exc:
        raise _Failure(str(exc)) from None


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
        suffix = f".{out_format}" if out_format else _suffix_as_written(path)
        jobs.append((path, output_dir / f"{_base_name(path)}{suffix}"))
        _check_paths(path, jobs[-1][1])
    return jobs


def _restore_batch(jobs, input_dir: Path, output_dir: Path, restorer: tuple, options: dict,
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
            line = _restore_file(input_path, output_path, *restorer, options,
                                 _reference_for(input_path, reference), overwrite, quiet,
                                 f"[{i}/{n}] {input_path.name}", cluster)
        except KeyboardInterrupt as exc:
            if guard.clean():
                written += 1
            raise _Interrupted(
                f"{_stopped_by(exc)}stopped at {input_path.name}: {written} of {n} volumes "
                f"written to {output_dir}, no partial files left", interrupted_code(exc)
            ) from None
        except Exception as exc:  # one bad file must not stop the batch
            guard.clean()
            message = " ".join(str(exc).split()) or type(exc).__name__
            failures.append(input_path.name)
            click.echo(f"volsr: {input_path.name}: failed: {message}", err=True)
            continue
        written += 1
        click.echo(line, err=quiet)
    click.echo(f"restored {written} of {n} volumes from {input_dir} into {output_dir}", err=quiet)
    if failures:
        raise _Failure(f"{len(failures)} of {n} volumes failed: {', '.join(failures)}")


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
