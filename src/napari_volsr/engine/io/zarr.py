"""zarr and OME-Zarr 0.4 reading and writing, and waiting for zarr's background writes."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import numpy as np

from .volume import (
    SPATIAL_AXES,
    Volume,
    VolsrWarning,
    VolumeIOError,
    common_unit,
    long_unit_name,
    one_line_message,
)


_OME_SHAPE = ("the multiscales entry needs 'axes' (one name per array axis) and 'datasets' "
              "whose first has a 'path' and a 'scale' transformation with one value per axis")


def _ome_layout(ome: dict, node, path: Path):
    """(array, axis names, scale, translation, units) from OME-Zarr multiscales metadata.

    ``units`` holds each axis's unit, None where the axis has none.

    Raises
    ------
    VolumeIOError
        Naming what is malformed (a missing key, a list of the wrong length...).
    """
    def malformed(what: str) -> VolumeIOError:
        return VolumeIOError(f"{path}: malformed OME-Zarr metadata ({what}); {_OME_SHAPE}")

    multiscales = ome["multiscales"]
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise malformed("'multiscales' is not a list of entries")
    ms = multiscales[0]
    datasets, axes = ms.get("datasets"), ms.get("axes")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise malformed("no 'datasets' list")
    if not isinstance(axes, list) or not all(
            isinstance(a, str) or isinstance(a, dict) and isinstance(a.get("name"), str)
            for a in axes):
        raise malformed("'axes' is not a list of names")
    first = datasets[0]
    try:
        array = node[str(first.get("path"))]
    except (KeyError, TypeError):
        where = first.get("path")
        raise malformed(f"dataset path {where!r} is not an array in the store") from None
    if not hasattr(array, "shape"):
        raise malformed(f"dataset path {first.get('path')!r} is a group, not an array")
    names = [(a["name"] if isinstance(a, dict) else a).upper() for a in axes]
    if len(names) != array.ndim:
        raise VolumeIOError(f"{path}: axes {names} do not match the array's {array.ndim} dims")
    scale, translation = [1.0] * len(names), [0.0] * len(names)
    transforms = first.get("coordinateTransformations", [])
    if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
        raise malformed("'coordinateTransformations' is not a list")
    for t in transforms:
        for kind, values in (("scale", scale), ("translation", translation)):
            if t.get("type") != kind:
                continue
            given = t.get(kind)
            if not isinstance(given, list) or len(given) != len(names):
                raise malformed(f"{kind} {given!r} needs {len(names)} numbers, one per axis")
            try:
                values[:] = [float(v) for v in given]
            except (TypeError, ValueError):
                raise malformed(f"{kind} {given!r} holds a value that is not a number") from None
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    return array, names, scale, translation, [u if isinstance(u, str) else None for u in units]


def _plain_layout(node, attrs: dict, path: Path):
    """(array, axis names, scale, translation, units) of a plain zarr array (our old layout)."""
    names = list(attrs.get("axes", "CZYX"[-node.ndim:] if node.ndim <= 4 else ""))
    spacing = attrs.get("voxel_spacing", [1.0] * 3)
    try:
        scale = [1.0] * (len(names) - 3) + [float(v) for v in spacing]
    except (TypeError, ValueError):
        raise VolumeIOError(f"{path}: voxel_spacing {spacing!r} is not three numbers") from None
    if len(scale) != len(names):
        raise VolumeIOError(f"{path}: voxel_spacing {spacing!r} is not three numbers")
    unit = attrs.get("unit")
    return node, [str(n).upper() for n in names], scale, [0.0] * len(names), (
        [unit if isinstance(unit, str) else None] * len(names))


def warn_missing_chunks(array, path: Path) -> None:
    """Warn, naming how many, when chunks of a zarr array are absent (read as the fill value)."""
    try:
        total, present = int(array.nchunks), int(array.nchunks_initialized)
    except Exception:  # a store that cannot list its keys: nothing to say
        return
    if present < total:
        fill = array.fill_value
        fill = fill.item() if hasattr(fill, "item") else fill  # 0, not np.uint16(0)
        warnings.warn(
            f"{path}: {total - present} of {total} chunks are missing and read as the fill "
            f"value {fill!r}: an incomplete copy (copy the store again), or a writer that "
            "leaves out chunks holding only that value",
            VolsrWarning, stacklevel=3)


def read_zarr(path: Path, lazy: bool) -> Volume:
    """Read an OME-Zarr group's first level or a plain zarr array, as dask unless not ``lazy``.

    Missing chunks (zarr reads them as the fill value) are counted and warned about.
    """
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise VolumeIOError(f"{path}: not a readable zarr store ({one_line_message(exc)})") from exc
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)  # OME-Zarr 0.5 nests its keys under "ome"
    if isinstance(ome, dict) and "multiscales" in ome:
        array, names, scale, translation, units = _ome_layout(ome, node, path)
    elif hasattr(node, "shape"):
        array, names, scale, translation, units = _plain_layout(node, attrs, path)
    else:
        raise VolumeIOError(f"{path}: a zarr group without OME multiscales metadata")
    if len(names) != array.ndim:
        raise VolumeIOError(f"{path}: axes {names} do not match the array's {array.ndim} dims")
    warn_missing_chunks(array, path)
    data = da.from_zarr(array)
    keep = [i for i, a in enumerate(names) if a in "CZYX" or array.shape[i] > 1]
    for i in keep:
        if names[i] not in "CZYX":
            raise VolumeIOError(
                f"{path}: axis {names[i]!r} of size {array.shape[i]} is not supported"
            )
    drop = tuple(i for i in range(array.ndim) if i not in keep)
    if drop:
        data = data.squeeze(axis=drop)
    names = [names[i] for i in keep]
    if len(set(names)) != len(names):
        raise VolumeIOError(f"{path}: repeated axes {names} cannot be interpreted")
    target = "".join(a for a in "CZYX" if a in names)
    data = data.transpose([names.index(a) for a in target])
    spatial = [i for i in keep if names[keep.index(i)] in SPATIAL_AXES]
    # Axes in different length units (z in µm, y and x in nm) share the smallest one.
    unit, spacing, origin = common_unit([units[i] for i in spatial],
                                        [scale[i] for i in spatial],
                                        [translation[i] for i in spatial])
    if not lazy:
        data = data.compute()
    return Volume(data, spacing, target, unit, origin, {"source_format": "zarr"})


def write_zarr(path: Path, volume: Volume) -> None:
    """Write ``volume`` as OME-Zarr 0.4, a dask array chunk by chunk."""
    import dask.array as da

    array = ome_zarr_array(path, volume)
    if isinstance(volume.data, da.Array):
        # Chunk-aligned writes: memory stays bounded by a few chunks, no locks needed.
        da.store(volume.data.rechunk(array.chunks), array, lock=False)
    else:
        array[...] = np.asarray(volume.data)


def ome_zarr_array(path: Path, volume: Volume):
    """Create an OME-Zarr 0.4 group at ``path`` for ``volume`` and return its empty level 0.

    Only ``volume.data``'s shape and dtype are used, so a lazy array can be written
    into the result chunk by chunk (by dask workers too: chunks are 64 voxels a side).
    """
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    data = volume.data
    chunks = tuple(min(n, 64) for n in volume.spatial_shape)
    if volume.channel_axis is not None:
        chunks = (1, *chunks)
    # Every chunk is written, even one holding only zeros, so that a missing chunk
    # always means an incomplete store (read_zarr warns about those).
    array = group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks,
                               config={"write_empty_chunks": True})
    axis_type = {"C": "channel", "Z": "space", "Y": "space", "X": "space"}
    # UDUNITS-2 names, as OME-Zarr asks; a unit we do not know is written as it is.
    unit = long_unit_name(volume.unit) or volume.unit
    axes_meta = []
    for a in volume.axes:
        entry = {"name": a.lower(), "type": axis_type[a]}
        if a in SPATIAL_AXES and unit:
            entry["unit"] = unit
        axes_meta.append(entry)
    spacing = iter(volume.spacing)
    origin = iter(volume.origin)
    scale = [1.0 if a == "C" else next(spacing) for a in volume.axes]
    translation = [0.0 if a == "C" else next(origin) for a in volume.axes]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": path.stem,
            "axes": axes_meta,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": scale},
                        {"type": "translation", "translation": translation},
                    ],
                }
            ],
        }
    ]
    group.attrs["napari_volsr"] = json.loads(json.dumps(volume.metadata, default=str))
    return array


def settle_zarr_writes(timeout: float = 30.0) -> None:
    """Wait until zarr's background IO has finished what it started.

    zarr-python 3 runs store IO as coroutines on its own event-loop thread. A
    KeyboardInterrupt in the waiting thread abandons the wait, not the write, so a
    chunk can land after its store was removed and bring the folder back.
    """
    import asyncio

    try:
        from zarr.core import sync as zarr_sync
    except ImportError:
        return
    loops = getattr(zarr_sync, "loop", None)
    loop = loops[0] if isinstance(loops, list) and loops else None
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def _drain():
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(_drain(), loop).result(timeout)
