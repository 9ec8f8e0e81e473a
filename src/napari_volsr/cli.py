"""The ``volsr`` command: restore files headless, inspect volumes, run the demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .engine.io import VolumeIOError, check_writable, read_volume, write_volume


class _Failure(click.ClickException):
    """A failure with a one-line message (printed by :func:`main`), exit status 1."""


def _int_tuple(text: str, n: int, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected {n} integers like 32,128,128, got {text!r}", param_hint=name)
    if len(values) == 1:
        values = values * n
    if len(values) != n or any(v < 1 for v in values):
        raise click.BadParameter(f"expected {n} positive integers, got {text!r}", param_hint=name)
    return values


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


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


@cli.command()
@click.option("-i", "--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="Volume to restore (.tif, .ome.tif, .nii, .nii.gz, .zarr).")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(path_type=Path),
              help="Where to write the result; the format follows the suffix.")
@click.option("-m", "--method", "--model", "model", default="cubic", show_default=True,
              help="A model from the library (name or folder) or a baseline: nearest, linear, cubic.")
@click.option("-z", "--z-factor", default="auto", show_default=True,
              help="z upsampling factor 1..16, or 'auto': the model's, or round(z spacing / "
              "x spacing) for baselines.")
@click.option("--block-shape", default="auto", show_default=True,
              help="'auto' (from the memory budget) or Z,Y,X block core in input voxels.")
@click.option("--percentiles", default="1,99.8", show_default=True,
              help="Low,high percentiles mapped to 0,1 before the network.")
@click.option("--output-dtype", type=click.Choice(["float32", "input", "uint8", "uint16"]),
              default="float32", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def restore(input_path, output_path, model, z_factor, block_shape, percentiles, output_dtype,
            device, precision, overwrite, quiet):
    """Restore (and z-upsample) a volume file; the output is written atomically."""
    from ._layers import default_z_factor
    from .engine.restorers import BASELINES, get_restorer
    from .engine.predict import RestoreCancelled, iter_restore

    if input_path.resolve() == output_path.resolve():
        raise _Failure("the output path equals the input path; choose another output name")
    if output_path.exists() and not overwrite:
        raise _Failure(f"{output_path} exists; pass --overwrite or choose another name")
    try:
        check_writable(output_path, overwrite=True)
    except VolumeIOError as exc:
        raise _Failure(str(exc)) from None
    try:
        low, high = (float(p) for p in percentiles.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two numbers like 1,99.8, got {percentiles!r}",
                                 param_hint="--percentiles") from None
    blocks = "auto" if block_shape == "auto" else _int_tuple(block_shape, 3, "--block-shape")
    try:
        volume = read_volume(input_path, lazy=True)
        if len(volume.spacing) != 3:
            raise ValueError(
                f"{input_path} is a 2D image {tuple(volume.data.shape)}; "
                "restoration needs a 3D volume (Z, Y, X)"
            )
        if z_factor != "auto":
            factor = _z(z_factor)
        elif model in BASELINES:
            factor = default_z_factor(volume.spacing)
        else:
            factor = None  # a trained model brings its own
        restorer = get_restorer(model, factor)
        factor = restorer.z_factor
        generator = iter_restore(
            volume.data, restorer, spacing=volume.spacing, origin=volume.origin,
            block_shape=blocks, percentiles=(low, high), output_dtype=output_dtype,
            device=device, precision=precision,
        )
        result = _run_with_progress(generator, quiet)
        out = volume.with_data(result.data, spacing=result.spacing, origin=result.origin)
        write_volume(output_path, out, overwrite=overwrite)
    except (VolumeIOError, ValueError) as exc:
        raise _Failure(str(exc)) from None
    except (KeyboardInterrupt, RestoreCancelled):
        raise _Failure("interrupted: no output was written") from None
    spacing = " x ".join(f"{s:g}" for s in result.spacing)
    click.echo(
        f"wrote {output_path}: {tuple(result.data.shape)} {result.data.dtype}, spacing "
        f"{spacing} {volume.unit or ''} ({restorer.name} x{factor}; {result.plan})".rstrip(),
        err=quiet,
    )


def _z(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter(f"expected an integer 1..16 or 'auto', got {text!r}",
                                 param_hint="--z-factor") from None
    if not 1 <= value <= 16:
        raise click.BadParameter(f"must be from 1 to 16, got {value}", param_hint="--z-factor")
    return value


def _run_with_progress(generator, quiet: bool):
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
                bar = click.progressbar(length=record.total, label="restoring", file=sys.stderr)
                bar.__enter__()
            bar.update(record.done - bar.pos)
    finally:
        generator.close()
        if bar is not None:
            bar.__exit__(None, None, None)


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
    try:
        cli.main(args=argv, prog_name="volsr", standalone_mode=False)
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"volsr: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("volsr: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
