"""zarr and OME-Zarr 0.4 reading and writing, and waiting for zarr's background writes."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from .volume import SPATIAL_AXES, Volume, VolumeIOError, normalise_unit, one_line_message

# OME-Zarr spells units out; Volume uses the short forms.
_OME_UNITS = {"µm": "micrometer", "nm": "nanometer", "mm": "millimeter"}
_UNITS_FROM_OME = {ome: short for short, ome in _OME_UNITS.items()}


def read_zarr(path: Path, lazy: bool) -> Volume:
    """Read an OME-Zarr group's first level or a plain zarr array, as dask unless not ``lazy``."""
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise VolumeIOError(f"{path}: not a readable zarr store ({one_line_message(exc)})") from exc
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)  # OME-Zarr 0.5 nests its keys under "ome"
    if "multiscales" in ome:
        ms = ome["multiscales"][0]
        first = ms["datasets"][0]
        array = node[first["path"]]
        names = [a["name"].upper() if isinstance(a, dict) else a.upper() for a in ms["axes"]]
        scale = [1.0] * len(names)
        translation = [0.0] * len(names)
        for t in first.get("coordinateTransformations", []):
            if t.get("type") == "scale":
                scale = t["scale"]
            elif t.get("type") == "translation":
                translation = t["translation"]
        units = [a.get("unit") for a in ms["axes"] if isinstance(a, dict)]
        unit = next((u for u in units if u), None)
    elif hasattr(node, "shape"):
        array = node
        names = list(attrs.get("axes", "CZYX"[-node.ndim:] if node.ndim <= 4 else ""))
        scale = [1.0] * (len(names) - 3) + list(attrs.get("voxel_spacing", [1.0] * 3))
        translation = [0.0] * len(names)
        unit = attrs.get("unit")
    else:
        raise VolumeIOError(f"{path}: a zarr group without OME multiscales metadata")
    if len(names) != array.ndim:
        raise VolumeIOError(f"{path}: axes {names} do not match the array's {array.ndim} dims")
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
    target = "".join(a for a in "CZYX" if a in names)
    data = data.transpose([names.index(a) for a in target])
    spatial = [i for i in keep if names[keep.index(i)] in SPATIAL_AXES]
    spacing = tuple(float(scale[i]) for i in spatial)
    origin = tuple(float(translation[i]) for i in spatial)
    if not lazy:
        data = data.compute()
    return Volume(data, spacing, target, normalise_unit(unit), origin, {"source_format": "zarr"})


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
    array = group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks)
    axis_type = {"C": "channel", "Z": "space", "Y": "space", "X": "space"}
    unit = _OME_UNITS.get(volume.unit or "")
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


def unit_from_ome(unit):
    """The short form of an OME-Zarr unit (``"micrometer"`` -> ``"µm"``); others unchanged."""
    return _UNITS_FROM_OME.get(unit, unit)


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
