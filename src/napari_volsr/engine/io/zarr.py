"""zarr and OME-Zarr (NGFF 0.4 and 0.5) reading and writing, and zarr's background writes."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .ome_zarr_pyramid import create_pyramid, fill_pyramid, ngff_format
from .volume import (
    SPATIAL_AXES,
    VolsrWarning,
    Volume,
    VolumeIOError,
    common_unit,
    one_line_message,
)

ome_zarr_array = create_pyramid  # the name the restore pipelines stream into

_OME_SHAPE = ("the multiscales entry needs 'axes' (one name per array axis) and 'datasets' "
              "whose first has a 'path' and a 'scale' transformation with one value per axis")


@dataclass
class _Layout:
    """Where a zarr store's levels are and how they sit in the world.

    ``scales`` and ``translations`` hold one list per level (one value per array axis,
    the multiscales-wide transformations already applied); ``units`` one unit per axis.
    """

    arrays: list
    names: list[str]
    scales: list[list[float]]
    translations: list[list[float]]
    units: list[str | None]


def _transforms(transforms, n: int, malformed) -> tuple[list[float], list[float]]:
    """(scale, translation) from an NGFF ``coordinateTransformations`` list (identity if absent)."""
    scale, translation = [1.0] * n, [0.0] * n
    if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
        raise malformed("'coordinateTransformations' is not a list")
    for t in transforms:
        for kind, values in (("scale", scale), ("translation", translation)):
            if t.get("type") != kind:
                continue
            given = t.get(kind)
            if not isinstance(given, list) or len(given) != n:
                raise malformed(f"{kind} {given!r} needs {n} numbers, one per axis")
            try:
                values[:] = [float(v) for v in given]
            except (TypeError, ValueError):
                raise malformed(f"{kind} {given!r} holds a value that is not a number") from None
    return scale, translation


def _ome_metadata(path: Path, node) -> dict | None:
    """A group's OME metadata as ome-zarr-py reads it (0.5 nests it under "ome"), or None."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url

    # Opened with the format its zarr version implies, so ome-zarr-py has no
    # "version mismatch" to log for ordinary stores.
    fmt = FormatV05() if node.metadata.zarr_format == 3 else FormatV04()
    location = parse_url(str(path), fmt=fmt)
    attrs = location.root_attrs if location is not None else {}
    return attrs if isinstance(attrs, dict) and "multiscales" in attrs else None


def _ome_axes(ms: dict, ome: dict, malformed) -> list[dict]:
    """The entry's axes as dicts, checked by ome-zarr-py's Axes for the file's NGFF version."""
    from ome_zarr.axes import KNOWN_AXES, Axes
    from ome_zarr.format import FormatV04, format_from_version

    axes = ms.get("axes")
    if not isinstance(axes, list) or not all(
            isinstance(a, str) or isinstance(a, dict) and isinstance(a.get("name"), str)
            for a in axes):
        raise malformed("'axes' is not a list of names")
    # A missing type is read from the name (NGFF says "should", not "must", have one).
    axes = [{"name": a} if isinstance(a, str) else dict(a) for a in axes]
    for a in axes:
        if "type" not in a and a["name"].lower() in KNOWN_AXES:
            a["type"] = KNOWN_AXES[a["name"].lower()]
    try:
        fmt = format_from_version(str(ms.get("version") or ome.get("version") or "0.4"))
    except ValueError:
        fmt = FormatV04()
    try:
        return Axes(axes, fmt=fmt).to_list(fmt)
    except ValueError as exc:
        raise malformed(f"axes {[a['name'] for a in axes]}: {one_line_message(exc)}") from None


def _ome_layout(ome: dict, node, path: Path, all_levels: bool) -> _Layout:
    """The layout an OME-Zarr multiscales entry describes (level 0 only unless ``all_levels``).

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
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise malformed("no 'datasets' list")
    axes = _ome_axes(ms, ome, malformed)
    n = len(axes)
    overall = _transforms(ms.get("coordinateTransformations", []), n, malformed)
    layout = _Layout([], [a["name"].upper() for a in axes], [], [],
                     [a.get("unit") if isinstance(a.get("unit"), str) else None for a in axes])
    for index, entry in enumerate(datasets if all_levels else datasets[:1]):
        where = entry.get("path") if isinstance(entry, dict) else None
        try:
            array = node[str(where)]
        except (KeyError, TypeError):
            array = None
        if index == 0 and array is None:
            raise malformed(f"dataset path {where!r} is not an array in the store")
        if index == 0 and not hasattr(array, "shape"):
            raise malformed(f"dataset path {where!r} is a group, not an array")
        if index == 0 and array.ndim != n:
            raise VolumeIOError(f"{path}: axes {layout.names} do not match the array's "
                                f"{array.ndim} dims")
        if not hasattr(array, "shape") or array.ndim != n:
            warnings.warn(f"{path}: resolution level {where!r} is not a {n}-D array in the "
                          "store; it and the levels after it are left out", VolsrWarning,
                          stacklevel=4)
            break
        scale, translation = _transforms(entry.get("coordinateTransformations", []), n,
                                         malformed)
        # The multiscales-wide transformation applies after each dataset's own.
        layout.arrays.append(array)
        layout.scales.append([s * g for s, g in zip(scale, overall[0])])
        layout.translations.append([t * g + h for t, g, h in zip(translation, *overall)])
    return layout


def _plain_layout(node, attrs: dict, path: Path) -> _Layout:
    """The layout of a plain zarr array (our old layout)."""
    names = list(attrs.get("axes", "CZYX"[-node.ndim:] if node.ndim <= 4 else ""))
    spacing = attrs.get("voxel_spacing", [1.0] * 3)
    try:
        scale = [1.0] * (len(names) - 3) + [float(v) for v in spacing]
    except (TypeError, ValueError):
        raise VolumeIOError(f"{path}: voxel_spacing {spacing!r} is not three numbers") from None
    if len(scale) != len(names):
        raise VolumeIOError(f"{path}: voxel_spacing {spacing!r} is not three numbers")
    unit = attrs.get("unit")
    return _Layout([node], [str(n).upper() for n in names], [scale], [[0.0] * len(names)],
                   [unit if isinstance(unit, str) else None] * len(names))


def _layout(path: Path, all_levels: bool = False, mode: str = "r") -> _Layout:
    import zarr

    try:
        node = zarr.open(str(path), mode=mode)
    except Exception as exc:
        raise VolumeIOError(f"{path}: not a readable zarr store ({one_line_message(exc)})") from exc
    if hasattr(node, "shape"):
        layout = _plain_layout(node, dict(node.attrs), path)
    else:
        ome = _ome_metadata(path, node)
        if ome is None:
            raise VolumeIOError(f"{path}: a zarr group without OME multiscales metadata")
        layout = _ome_layout(ome, node, path, all_levels)
    if len(layout.names) != layout.arrays[0].ndim:
        raise VolumeIOError(f"{path}: axes {layout.names} do not match the array's "
                            f"{layout.arrays[0].ndim} dims")
    return layout


def _as_volume(layout: _Layout, level: int, path: Path) -> Volume:
    """Level ``level`` as a lazy Volume: axes ``[C]ZYX``, units shared (:func:`common_unit`)."""
    import dask.array as da

    array, names = layout.arrays[level], layout.names
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
    kept = [names[i] for i in keep]
    if len(set(kept)) != len(kept):
        raise VolumeIOError(f"{path}: repeated axes {kept} cannot be interpreted")
    target = "".join(a for a in "CZYX" if a in kept)
    data = data.transpose([kept.index(a) for a in target])
    spatial = [names.index(a) for a in target if a in SPATIAL_AXES]
    # Axes in different length units (z in µm, y and x in nm) share the smallest one.
    unit, spacing, origin = common_unit([layout.units[i] for i in spatial],
                                        [layout.scales[level][i] for i in spatial],
                                        [layout.translations[level][i] for i in spatial])
    return Volume(data, spacing, target, unit, origin, {"source_format": "zarr"})


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
    """Read an OME-Zarr image's first level or a plain zarr array, as dask unless not ``lazy``.

    Missing chunks (zarr reads them as the fill value) are counted and warned about.
    """
    layout = _layout(path)
    warn_missing_chunks(layout.arrays[0], path)
    volume = _as_volume(layout, 0, path)
    return volume if lazy else volume.with_data(volume.data.compute())


def read_zarr_levels(path: Path) -> list[Volume]:
    """Every resolution level of an OME-Zarr image as lazy Volumes, level 0 first.

    Each level's spacing and origin come from its own coordinate transformations. A
    level that does not cover the same extent as level 0 (within one of its voxels),
    which a multiscale viewer could not place, is left out with a warning.
    """
    layout = _layout(path, all_levels=True)
    warn_missing_chunks(layout.arrays[0], path)
    levels = [_as_volume(layout, 0, path)]
    for index in range(1, len(layout.arrays)):
        level = _as_volume(layout, index, path)
        first = levels[0]
        extent = [(n * s, s) for n, s in zip(level.spatial_shape, level.spacing)]
        if level.axes != first.axes or level.unit != first.unit or any(
                abs(e - n0 * s0) > s * (1 + 1e-6)
                for (e, s), n0, s0 in zip(extent, first.spatial_shape, first.spacing)):
            warnings.warn(f"{path}: resolution level {index} ({level.data.shape}, voxel "
                          f"{level.spacing}) does not cover level 0's extent; the levels "
                          "from it on are left out", VolsrWarning, stacklevel=2)
            break
        levels.append(level)
    return levels


def pyramid_arrays(path: Path) -> list[tuple]:
    """An OME-Zarr image's levels, writable, as ``(zarr array, factors)`` for fill_pyramid.

    ``factors`` is each level's integer downsampling of the level above, per axis.

    Raises
    ------
    VolumeIOError
        When a level is not the level above downsampled by integer factors.
    """
    layout = _layout(path, all_levels=True, mode="r+")
    levels = [(layout.arrays[0], (1,) * len(layout.names))]
    for i in range(1, len(layout.arrays)):
        factors = tuple(max(1, round(s / a)) for s, a in zip(layout.scales[i],
                                                             layout.scales[i - 1]))
        above, below = layout.arrays[i - 1], layout.arrays[i]
        if tuple(below.shape) != tuple(-(-n // f) for n, f in zip(above.shape, factors)):
            raise VolumeIOError(f"{path}: level {i} {below.shape} is not level {i - 1} "
                                f"{above.shape} downsampled by {factors}")
        levels.append((below, factors))
    return levels


def write_zarr(path: Path, volume: Volume, *, name: str | None = None,
               ngff_version: str | None = None) -> None:
    """Write ``volume`` as an OME-Zarr image pyramid, a dask array chunk by chunk.

    Level 0 is the volume; the levels below are streamed from it (:func:`fill_pyramid`).

    Parameters
    ----------
    name, ngff_version
        As for :func:`~.ome_zarr_pyramid.create_pyramid`: NGFF 0.4 unless ``"0.5"``
        is asked for here or in ``volume.metadata["ngff_version"]``.
    """
    import dask.array as da

    array = ome_zarr_array(path, volume, name=name, ngff_version=ngff_version)
    if isinstance(volume.data, da.Array):
        # Chunk-aligned writes: memory stays bounded by a few chunks, no locks needed.
        da.store(volume.data.rechunk(array.chunks), array, lock=False)
    else:
        array[...] = np.asarray(volume.data)
    fill_pyramid(path)


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


def with_ngff_version(volume: Volume, version: str | None) -> Volume:
    """``volume`` marked to be written as OME-Zarr ``version`` (None: unchanged).

    Raises
    ------
    VolumeIOError
        A version that cannot be written (the message lists the ones that can).
    """
    if version is None:
        return volume
    ngff_format(version)  # refuse unknown versions before any work
    return replace(volume, metadata={**volume.metadata, "ngff_version": str(version)})
