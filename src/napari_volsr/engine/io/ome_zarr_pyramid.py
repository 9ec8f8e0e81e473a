"""OME-Zarr output pyramids: the level plan, metadata through ome-zarr-py, streamed downsampling."""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .volume import SPATIAL_AXES, Volume, VolumeIOError, long_unit_name

# Levels are added until the smallest one is at most this many voxels along every
# spatial axis: small enough for a thumbnail or an overview that loads at once.
PYRAMID_TARGET = 256
NGFF_VERSIONS = ("0.4", "0.5")
DEFAULT_NGFF_VERSION = "0.4"
# Store chunks, voxels a side: dask workers write level 0 chunk by chunk.
CHUNK = 64
_MAX_LEVELS = 16
# atomic_path's temporaries: ``.NAME.<random>.part<suffix>`` (io.files).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[^.]+\.part(?:\.ome)?\.zarr$", re.IGNORECASE)
_DOWNSAMPLING = ("mean of each 2x2(x2) block of the level above (y and x always, z only "
                 "while its voxel is no coarser than the lateral one), edges replicated")


@dataclass(frozen=True)
class Level:
    """One resolution level of an output pyramid.

    Attributes
    ----------
    shape
        Array shape (channel axis included).
    factors
        Downsampling factor from the level above, per array axis (1 for level 0).
    scale, translation
        Its NGFF ``coordinateTransformations``, per array axis: voxel size, and the
        world position of its first voxel's centre.
    """

    shape: tuple[int, ...]
    factors: tuple[int, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...]

    def datasets_entry(self, path: str) -> dict:
        """This level's ``datasets`` entry (scale first, as NGFF asks)."""
        return {"path": path, "coordinateTransformations": [
            {"type": "scale", "scale": list(self.scale)},
            {"type": "translation", "translation": list(self.translation)},
        ]}


def _next_factors(level: Level, axes: str) -> tuple[int, ...]:
    """Halve y and x; halve z only while its voxel is no coarser than the lateral voxel.

    Anisotropic stacks (z coarse) then keep z until the lateral voxels have caught up,
    after which all three halve together: each level's voxels are as near cubic as
    powers of two allow, so a 3D rendering of any level looks like the data
    (Neuroglancer's and BigDataViewer's rule for anisotropic pyramids). y and x always
    halve because napari's 2D view picks its level by the lateral size on screen.
    """
    lateral = [level.scale[i] for i, a in enumerate(axes) if a in "YX" and level.shape[i] > 1]
    finest_lateral = min(lateral) if lateral else math.inf
    factors = []
    for i, a in enumerate(axes):
        if a not in SPATIAL_AXES or level.shape[i] <= 1:
            factors.append(1)
        elif a == "Z":
            factors.append(2 if level.scale[i] <= finest_lateral * (1 + 1e-9) else 1)
        else:
            factors.append(2)
    return tuple(factors)


def plan_levels(shape, axes: str, spacing, origin, target: int | None = None) -> list[Level]:
    """The levels of an output pyramid, level 0 (the volume itself) first.

    Parameters
    ----------
    shape, axes
        The volume's array shape and axes (``"ZYX"``, ``"CZYX"``, ``"YX"``...).
    spacing, origin
        Voxel size and first voxel's centre per spatial axis.
    target
        Stop once every spatial axis of the last level is at most this long
        (default :data:`PYRAMID_TARGET`).

    Returns
    -------
    list of Level
        Each level halves some axes of the one above (:func:`_next_factors`), rounding
        sizes up; its translation moves by ``(f - 1) / 2`` voxels of the level above, so
        that a level's voxel centre is the centre of the voxels it averages.
    """
    target = PYRAMID_TARGET if target is None else int(target)
    spacing, origin = iter(spacing), iter(origin)
    scale = tuple(1.0 if a == "C" else float(next(spacing)) for a in axes)
    translation = tuple(0.0 if a == "C" else float(next(origin)) for a in axes)
    levels = [Level(tuple(int(n) for n in shape), (1,) * len(axes), scale, translation)]
    spatial = [i for i, a in enumerate(axes) if a in SPATIAL_AXES]
    while len(levels) < _MAX_LEVELS:
        last = levels[-1]
        if max(last.shape[i] for i in spatial) <= target:
            break
        factors = _next_factors(last, axes)
        if all(f == 1 for f in factors):
            break
        levels.append(Level(
            tuple(-(-n // f) for n, f in zip(last.shape, factors)),
            factors,
            tuple(s * f for s, f in zip(last.scale, factors)),
            tuple(t + (f - 1) / 2 * s for t, s, f in zip(last.translation, last.scale, factors)),
        ))
    return levels


def ngff_format(version: str | None):
    """ome-zarr-py's format class for an NGFF version (``"0.4"`` or ``"0.5"``)."""
    from ome_zarr.format import FormatV04, FormatV05

    version = DEFAULT_NGFF_VERSION if version is None else str(version)
    formats = {"0.4": FormatV04, "0.5": FormatV05}
    if version not in formats:
        raise VolumeIOError(f"OME-Zarr (NGFF) version {version!r} cannot be written; "
                            f"use one of {', '.join(NGFF_VERSIONS)}")
    return formats[version]()


def output_name(path: Path) -> str:
    """The image name for an output at ``path``: its file name without ``.ome.zarr``.

    An atomic writer's temporary (``.out.ome.zarr.x1y2.part.ome.zarr``) is named after
    the file it becomes.
    """
    name = Path(path).name.rstrip("/")
    match = _TEMPORARY.match(name)
    if match:
        name = match["name"]
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _chunks(shape, axes: str) -> tuple[int, ...]:
    return tuple(1 if a == "C" else min(n, CHUNK) for n, a in zip(shape, axes))


def _axes_metadata(volume: Volume) -> list[dict]:
    """NGFF axes: names, types, and the UDUNITS-2 unit of each spatial axis."""
    types = {"C": "channel", "Z": "space", "Y": "space", "X": "space"}
    # A unit we do not know is written as it is rather than dropped.
    unit = long_unit_name(volume.unit) or volume.unit
    axes = []
    for a in volume.axes:
        entry = {"name": a.lower(), "type": types[a]}
        if a in SPATIAL_AXES and unit:
            entry["unit"] = unit
        axes.append(entry)
    return axes


def create_pyramid(path: Path, volume: Volume, *, name: str | None = None,
                   ngff_version: str | None = None, target: int | None = None):
    """Create an OME-Zarr image group at ``path`` for ``volume``; return its empty level 0.

    Every level's array and the multiscales metadata (written by ome-zarr-py) exist at
    once; levels below 0 are filled by :func:`fill_pyramid` once level 0 is written.
    Only ``volume.data``'s shape and dtype are used.

    Parameters
    ----------
    name
        The image's name (default: the output file's name, :func:`output_name`).
    ngff_version
        ``"0.4"`` (zarr v2, the default) or ``"0.5"`` (zarr v3); else
        ``volume.metadata["ngff_version"]``.
    target
        As for :func:`plan_levels`.
    """
    import zarr

    with warnings.catch_warnings():
        # ome-zarr 0.14+ builds a deprecated Scaler as a default argument on import.
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_multiscales_metadata

    fmt = ngff_format(ngff_version or volume.metadata.get("ngff_version"))
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    data = volume.data
    levels = plan_levels(data.shape, volume.axes, volume.spacing, volume.origin, target)
    # NGFF 0.5 asks every array of zarr v3 to name its dimensions as the axes do.
    names = {"dimension_names": [a.lower() for a in volume.axes]} if fmt.zarr_format == 3 else {}
    arrays = [
        # Every chunk is written, even one holding only zeros, so that a missing chunk
        # always means an incomplete store (read_zarr warns about those).
        group.create_array(str(i), shape=level.shape, dtype=data.dtype,
                           chunks=_chunks(level.shape, volume.axes),
                           chunk_key_encoding=fmt.chunk_key_encoding,
                           config={"write_empty_chunks": True}, **names)
        for i, level in enumerate(levels)
    ]
    write_multiscales_metadata(
        group, [level.datasets_entry(str(i)) for i, level in enumerate(levels)], fmt=fmt,
        axes=_axes_metadata(volume), name=name or output_name(path),
        metadata={"description": f"napari-volsr output; levels below 0: {_DOWNSAMPLING}",
                  "method": f"{__name__}._downsample_block"},
    )
    group.attrs["napari_volsr"] = json.loads(json.dumps(volume.metadata, default=str))
    return arrays[0]


def _downsample_block(block: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Mean of each ``factors`` block; edges replicated where a size is not a multiple.

    Means are taken in float64 and rounded back for integer types, so a level keeps
    the data's type and units (no rescaling, no overflow).
    """
    pad = [(0, -n % f) for n, f in zip(block.shape, factors)]
    if any(after for _, after in pad):
        block = np.pad(block, pad, mode="edge")
    split = []
    for n, f in zip(block.shape, factors):
        split += [n // f, f]
    mean = block.reshape(split).mean(axis=tuple(range(1, 2 * block.ndim, 2)), dtype=np.float64)
    if np.issubdtype(block.dtype, np.integer) or block.dtype == bool:
        mean = np.rint(mean)
    return mean.astype(block.dtype)


def fill_pyramid(path: Path, levels: list | None = None) -> None:
    """Write each level below 0 of the OME-Zarr group at ``path`` from the level above.

    A streamed pass: each level is read chunk-wise with dask, in blocks that map onto
    whole chunks of the level below, so memory holds a few chunks whatever the volume
    (and a dask.distributed client, when one is the default scheduler, does the work).

    Parameters
    ----------
    levels
        The group's levels as ``(zarr array, factors)`` pairs, level 0 first; read from
        the group's metadata when None.
    """
    import dask.array as da

    if levels is None:
        from .zarr import pyramid_arrays

        levels = pyramid_arrays(path)
    for (above, _), (below, factors) in zip(levels, levels[1:]):
        source = da.from_zarr(above, chunks=tuple(c * f for c, f in zip(below.chunks, factors)))
        out_chunks = tuple(tuple(-(-n // f) for n in axis)
                           for axis, f in zip(source.chunks, factors))
        down = source.map_blocks(_downsample_block, factors=tuple(factors), chunks=out_chunks,
                                 dtype=above.dtype)
        da.store(down, below, lock=False)
