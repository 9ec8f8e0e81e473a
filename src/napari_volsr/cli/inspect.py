"""``volsr info``, ``volsr evaluate`` and ``volsr demo``: look at volumes and scores, try the plugin."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..engine.io import VolumeIOError, can_read, read_volume
from ..engine.text import format_bytes
from .app import _Failure
from .restore import restore


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def info(paths: tuple[Path, ...]):
    """Print shape, dtype, voxel spacing and size of volume files.

    PATHS are files (or zarr stores), or folders: every readable volume in them.
    """
    from .restore import _batch_inputs

    files = []
    for path in paths:
        if path.is_dir() and not can_read(path):
            found = _batch_inputs(path)
            if not found:
                raise _Failure(f"{path}: no volumes in this folder (looked for .tif, .tiff, "
                               ".ome.tif, .nii, .nii.gz, .zarr)")
            files.extend(found)
        else:
            files.append(path)
    if len(files) == 1:
        try:
            _describe(files[0])
        except VolumeIOError as exc:
            raise _Failure(str(exc)) from None
        return
    failed = []
    for i, path in enumerate(files):
        if i:
            click.echo("")
        try:
            _describe(path)
        except VolumeIOError as exc:
            failed.append(path.name)
            click.echo(f"volsr: {path.name}: failed: {' '.join(str(exc).split())}", err=True)
    if failed:
        raise _Failure(f"{len(failed)} of {len(files)} files could not be read: "
                       f"{', '.join(failed)}")


def _describe(path: Path) -> None:
    """Print one volume's block of ``volsr info``."""
    volume = read_volume(path, lazy=True)
    data = volume.data
    nbytes = int(data.size) * data.dtype.itemsize
    spacing = " x ".join(f"{s:g}" for s in volume.spacing)
    click.echo(f"file:    {path}")
    click.echo(f"axes:    {volume.axes}")
    click.echo(f"shape:   {tuple(int(n) for n in data.shape)}")
    click.echo(f"dtype:   {data.dtype}")
    click.echo(f"spacing: {spacing} {volume.unit or '(no unit)'}")
    click.echo(f"size:    {format_bytes(nbytes)} in memory")
    if len(volume.spacing) == 3 and volume.spacing[2] > 0:
        click.echo(f"z/x anisotropy: {volume.spacing[0] / volume.spacing[2]:.2f}")


# ---------------------------------------------------------------- evaluate


@click.command(short_help="PSNR, SSIM and NRMSE of a result against a reference.")
@click.argument("result", type=click.Path(path_type=Path))
@click.argument("reference", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the scores as a JSON object.")
def evaluate(result: Path, reference: Path, as_json: bool):
    """PSNR, SSIM and NRMSE of RESULT against REFERENCE (data range: the reference's).

    Both volumes must have the same shape. In JSON, a PSNR of identical volumes
    (infinite) is null.
    """
    import math

    from ..engine.evaluate import check_same_shape, compare

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


# ---------------------------------------------------------------- demo


@click.command(short_help="Open napari with a sample volume, or restore it headless.")
@click.option("--headless", is_flag=True, help="Restore without opening a window, even with a display.")
@click.option("-o", "--output", "output_path", type=click.Path(path_type=Path),
              default=Path("volsr-demo") / "chromosomes_cubic_x4.tif", show_default=True,
              help="Headless mode: where to write the restored sample.")
def demo(headless: bool, output_path: Path):
    """Open napari with a sample volume and the Restore panel (headless: write a file)."""
    from .._sample_data import SAMPLE_DIR

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
