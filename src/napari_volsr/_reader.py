"""npe2 reader: TIFF, NIfTI and zarr volumes with their voxel spacing in ``scale``."""

from __future__ import annotations

from pathlib import Path

from .engine.io import (
    SPATIAL_AXES,
    Volume,
    can_read,
    format_suffix,
    long_unit_name,
    read_volume,
)
from .engine.io.zarr import read_zarr_levels


def get_reader(path):
    """Return a reader for ``path`` or None; cheap, never raises."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        return read_layers if can_read(path) else None
    except Exception:  # npe2 asks every plugin; a bad path is simply not ours
        return None


def volume_layer_kwargs(volume: Volume, name: str) -> dict:
    """napari Image kwargs that place ``volume`` at its physical size.

    ``units`` (pint names napari reads, ``"micrometer"``) are given only where the
    file's unit is a known length; napari's default, pixels, stands for the rest.
    ``axis_labels`` name the spatial axes (``z``, ``y``, ``x``): a channel axis is
    split into layers of its own.
    """
    metadata = dict(volume.metadata)
    metadata["unit"] = volume.unit
    spatial = tuple(a.lower() for a in volume.axes if a in SPATIAL_AXES)
    kwargs = {
        "name": name,
        "scale": volume.spacing,
        "translate": volume.origin,
        "axis_labels": spatial,
        "metadata": metadata,
    }
    unit = long_unit_name(volume.unit)
    if unit is not None:
        kwargs["units"] = (unit,) * len(spatial)
    if volume.channel_axis is not None:
        kwargs["channel_axis"] = volume.channel_axis
        kwargs["name"] = [f"{name} [ch{c}]" for c in range(volume.data.shape[volume.channel_axis])]
    return kwargs


def _layer_name(path: Path) -> str:
    name = path.name.rstrip("/")
    for suffix in (".nii.gz", ".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".nii",
                   ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_layers(path):
    """Read ``path`` into napari layer data tuples (lazy for zarr).

    An OME-Zarr pyramid becomes a multiscale layer: its levels (dask arrays) are the
    layer's data, placed by level 0's scale and translation; napari places the others
    by their shapes, which :func:`~.engine.io.zarr.read_zarr_levels` has checked
    against each level's own transformations.
    """
    path = Path(path[0] if isinstance(path, list) else path)
    lazy = path.is_dir()
    volume = read_volume(path, lazy=lazy)
    metadata_path = {"source_path": str(path)}
    kwargs = volume_layer_kwargs(volume, _layer_name(path))
    kwargs["metadata"].update(metadata_path)
    data = volume.data
    if lazy and format_suffix(path) in (".zarr", ".ome.zarr"):
        levels = read_zarr_levels(path)
        if len(levels) > 1:
            data = [level.data for level in levels]
            kwargs["multiscale"] = True
    return [(data, kwargs, "image")]
