"""Read and write volumes (TIFF, NIfTI, zarr/OME-Zarr) with their voxel spacing."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

SPATIAL_AXES = "ZYX"


class VolumeIOError(Exception):
    """A file could not be read or written; the message says why and what to do."""


@dataclass(frozen=True)
class Volume:
    """An image volume and its physical geometry.

    Attributes
    ----------
    data
        numpy or dask array, axes as in ``axes`` (spatial axes last).
    spacing
        Voxel size per spatial axis, in ``unit``, same order as the spatial axes.
    axes
        ``"ZYX"``, ``"CZYX"``, ``"YX"`` or ``"CYX"``.
    unit
        Physical unit of ``spacing`` (``"µm"``, ``"nm"``, ``"mm"``) or ``None``.
    origin
        World position of the first voxel's centre per spatial axis.
    metadata
        Format details needed to write the volume back (e.g. the NIfTI affine).
    """

    data: Any
    spacing: tuple[float, ...]
    axes: str = "ZYX"
    unit: str | None = None
    origin: tuple[float, ...] | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.axes) != self.data.ndim:
            raise ValueError(f"axes {self.axes!r} do not match data with {self.data.ndim} dims")
        n_spatial = sum(a in SPATIAL_AXES for a in self.axes)
        if len(self.spacing) != n_spatial:
            raise ValueError(f"spacing {self.spacing} needs {n_spatial} values for {self.axes}")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        if self.origin is None:
            object.__setattr__(self, "origin", (0.0,) * n_spatial)
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"voxel spacing must be positive and finite, got {self.spacing}")

    @property
    def channel_axis(self) -> int | None:
        """Index of the channel axis, or None."""
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes only."""
        return tuple(n for n, a in zip(self.data.shape, self.axes) if a in SPATIAL_AXES)

    def with_data(self, data, spacing=None, origin=None) -> Volume:
        """A copy with new data (and optionally new geometry), metadata kept."""
        return replace(
            self,
            data=data,
            spacing=self.spacing if spacing is None else spacing,
            origin=self.origin if origin is None else origin,
            metadata=dict(self.metadata),
        )


# ---------------------------------------------------------------- path handling

_COMPOUND_SUFFIXES = (".nii.gz", ".ome.tiff", ".ome.tif", ".ome.zarr")


def format_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix that decides the format (``.nii.gz``, ``.ome.tif`` ...)."""
    name = Path(path).name.lower().rstrip("/")
    for suffix in _COMPOUND_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def _normalise_unit(unit: Any) -> str | None:
    if unit is None:
        return None
    text = str(unit).strip()
    # ImageJ stores the micro sign escaped in some files.
    text = text.replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    aliases = {"micron": "µm", "microns": "µm", "um": "µm", "μm": "µm", "pixel": None, "": None}
    return aliases.get(text.lower(), text) if text.lower() in aliases else text


def _one_line(exc: BaseException) -> str:
    """A library's error text on one line (nibabel's span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _require_file(path: Path) -> None:
    if not path.exists():
        raise VolumeIOError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise VolumeIOError(f"{path}: the file is empty")


# ---------------------------------------------------------------- TIFF

_TIFF_AXIS_MAP = {"I": "Z", "Q": "Z", "S": "C"}


def _valid_size(value) -> bool:
    """A usable voxel size: positive and finite. Others count as missing, like a zero."""
    try:
        return 0 < float(value) < float("inf")
    except (TypeError, ValueError):
        return False


def _tiff_spacing(tif, series) -> tuple[dict[str, float], str | None]:
    """Voxel size per axis letter and the unit, from ImageJ or OME metadata."""
    import tifffile

    sizes: dict[str, float] = {}
    unit = None
    if tif.is_ome and tif.ome_metadata:
        try:
            ome = tifffile.xml2dict(tif.ome_metadata)["OME"]
            image = ome["Image"][0] if isinstance(ome["Image"], list) else ome["Image"]
            pixels = image["Pixels"]
            for ax in "XYZ":
                value = pixels.get(f"PhysicalSize{ax}")
                if _valid_size(value):
                    sizes[ax] = float(value)
                    unit = unit or pixels.get(f"PhysicalSize{ax}Unit", "µm")
        except (KeyError, TypeError, ValueError, IndexError):
            sizes = {}
    if not sizes:
        page = series.pages[0] if series.pages else tif.pages[0]
        for ax, tag in (("X", "XResolution"), ("Y", "YResolution")):
            res = page.tags.get(tag)
            if res is not None:
                num, den = res.value
                if num > 0 and den > 0 and (num, den) != (1, 1):
                    sizes[ax] = den / num
        if tif.is_imagej and tif.imagej_metadata:
            meta = tif.imagej_metadata
            if _valid_size(meta.get("spacing")):
                sizes["Z"] = float(meta["spacing"])
            unit = meta.get("unit")
    return sizes, _normalise_unit(unit)


def _check_complete(tif, series, path: Path) -> None:
    """Refuse truncated files: tifffile would read them, filling the missing part."""
    size = path.stat().st_size
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
    else:
        end = max(
            (o + n for page in series.pages if page is not None
             for o, n in zip(page.dataoffsets, page.databytecounts)),
            default=0,
        )
    # ImageJ writes the plane count up front; fewer readable planes means a cut file.
    expected = (tif.imagej_metadata or {}).get("images", 0) if tif.is_imagej else 0
    planes = 1
    for axis, n in zip(series.axes, series.shape):
        planes *= 1 if axis in "YXS" else n
    if end > size or planes < expected:
        raise VolumeIOError(f"{path}: the TIFF is truncated (incomplete copy or download?)")
    # With pages missing, tifffile falls back to what it finds (one plane: "a 2D image").
    shaped = tif.shaped_metadata if tif.is_shaped else None
    described = shaped[0].get("shape") if shaped else None
    if described and math.prod(described) != math.prod(series.shape):
        raise VolumeIOError(
            f"{path}: the TIFF's metadata describes {tuple(described)} voxels but the file "
            f"holds {tuple(series.shape)} (truncated or edited?)"
        )


class _NamedErrors:
    """A lazily read array whose decoding errors name the file (dask reads it much later)."""

    def __init__(self, array, path: Path):
        self.array, self.path = array, path
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, index):
        try:
            return self.array[index]
        except Exception as exc:  # codecs raise their own types for damaged data
            raise VolumeIOError(f"{self.path}: damaged image data ({_one_line(exc)})") from exc


def _read_tiff(path: Path, lazy: bool) -> Volume:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            _check_complete(tif, series, path)
            sizes, unit = _tiff_spacing(tif, series)
            if lazy:
                import dask.array as da
                import zarr

                array = zarr.open(series.aszarr(), mode="r")
                data = da.from_array(_NamedErrors(array, path), chunks=array.chunks)
            else:
                data = series.asarray()
                if data.shape != tuple(series.shape):  # tifffile warns and returns less
                    raise VolumeIOError(
                        f"{path}: the TIFF's metadata describes {tuple(series.shape)} voxels "
                        f"but the file holds {data.shape} (truncated or edited?)"
                    )
    except VolumeIOError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files
        raise VolumeIOError(f"{path}: not a readable TIFF ({_one_line(exc)})") from exc
    axes = "".join(_TIFF_AXIS_MAP.get(a, a) for a in axes)
    # Drop singleton axes we do not model (T, a second Z from 'I', etc.).
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape)) if a in "CZYX" or n > 1]
    for i, (a, n) in enumerate(zip(axes, data.shape)):
        if i not in keep:
            continue
        if a not in "CZYX":
            raise VolumeIOError(
                f"{path}: axis {a!r} of size {n} is not supported (axes {series.axes}); "
                "save one time point or position per file"
            )
    squeeze = tuple(i for i in range(data.ndim) if i not in keep)
    data = data.squeeze(axis=squeeze) if squeeze else data
    axes = "".join(a for i, a in enumerate(axes) if i in keep)
    if len(set(axes)) != len(axes):
        raise VolumeIOError(f"{path}: repeated axes {series.axes} cannot be interpreted")
    if "C" in axes and data.shape[axes.index("C")] == 1:
        data = data.squeeze(axis=axes.index("C"))
        axes = axes.replace("C", "")
    target = "".join(a for a in "CZYX" if a in axes)
    data = data.transpose([axes.index(a) for a in target])
    spacing = tuple(sizes.get(a, 1.0) for a in target if a in SPATIAL_AXES)
    return Volume(data, spacing, target, unit, metadata={"source_format": "tiff"})


def _storable(data: np.ndarray) -> np.ndarray:
    """Widen types TIFF and NIfTI lack, losslessly: bool -> uint8, float16 -> float32."""
    if data.dtype == bool:
        return data.astype(np.uint8)
    if data.dtype == np.float16:
        return data.astype(np.float32)
    return data


def _write_tiff(path: Path, volume: Volume, ome: bool) -> None:
    import tifffile

    data = _storable(np.asarray(volume.data))
    if data.dtype.itemsize == 8 and data.dtype.kind in "iu":
        raise VolumeIOError(
            f"TIFF cannot store {data.dtype} values with their voxel spacing; write .nii.gz "
            "or .zarr, or choose a 32-bit or smaller output type"
        )
    spatial = [a for a in volume.axes if a in SPATIAL_AXES]
    sizes = dict(zip(spatial, volume.spacing))
    unit = volume.unit or "pixel"
    imagej_ok = data.dtype in (np.uint8, np.uint16, np.float32) and not ome
    if imagej_ok:
        # ImageJ hyperstacks are TZCYXS: put the channel axis after Z.
        order = "".join(a for a in "ZCYX" if a in volume.axes)
        data = data.transpose([volume.axes.index(a) for a in order])
        metadata = {"axes": order, "unit": "um" if unit == "µm" else unit}
        if "Z" in sizes:
            metadata["spacing"] = sizes["Z"]
        tifffile.imwrite(
            path,
            data,
            imagej=True,
            resolution=(1 / sizes.get("X", 1.0), 1 / sizes.get("Y", 1.0)),
            metadata=metadata,
        )
    else:
        metadata: dict[str, Any] = {"axes": volume.axes}
        for ax, size in sizes.items():
            metadata[f"PhysicalSize{ax}"] = size
            if volume.unit:
                metadata[f"PhysicalSize{ax}Unit"] = volume.unit
        tifffile.imwrite(path, data, ome=True, metadata=metadata, photometric="minisblack")


# ---------------------------------------------------------------- NIfTI


def _nibabel():
    try:
        import nibabel
    except ImportError as exc:  # nibabel is the `nifti` extra
        raise VolumeIOError(
            "NIfTI support needs nibabel: pip install 'napari-volsr[nifti]'"
        ) from exc
    return nibabel


def _read_nifti(path: Path, lazy: bool) -> Volume:
    nib = _nibabel()
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for broken files
        raise VolumeIOError(f"{path}: not a readable NIfTI file ({_one_line(exc)})") from exc
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4:
        # X, Y, Z, C -> C, Z, Y, X
        data = data.transpose(3, 2, 1, 0)
        axes = "CZYX"
    elif data.ndim == 3:
        data = data.transpose(2, 1, 0)
        axes = "ZYX"
    else:
        raise VolumeIOError(f"{path}: {data.ndim}-D NIfTI data is not supported (3-D or 4-D)")
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    spacing = tuple(reversed(zooms))
    unit = img.header.get_xyzt_units()[0]
    unit = {"mm": "mm", "micron": "µm", "meter": "m"}.get(unit or "", None)
    metadata = {
        "source_format": "nifti",
        "nifti_affine": np.asarray(img.affine, dtype=float).tolist(),
        "nifti_spacing": list(spacing),
    }
    return Volume(np.ascontiguousarray(data), spacing, axes, unit, metadata=metadata)


def nifti_affine_for(volume: Volume) -> np.ndarray:
    """The NIfTI affine for ``volume``, updated when its spacing differs from the file's.

    Voxel ``k`` of the new grid sits at old index ``(k + 0.5) * s_new / s_old - 0.5``
    along each axis (the slab convention), so directions are kept, column lengths
    follow the new spacing and the origin shifts by half a voxel difference.
    """
    spacing_xyz = np.asarray(volume.spacing[::-1], dtype=float)
    affine = volume.metadata.get("nifti_affine")
    if affine is None:
        out = np.diag([*spacing_xyz, 1.0])
        origin_xyz = np.asarray(volume.origin[::-1], dtype=float)
        out[:3, 3] = origin_xyz
        return out
    affine = np.asarray(affine, dtype=float)
    old_xyz = np.asarray(volume.metadata.get("nifti_spacing", volume.spacing)[::-1], dtype=float)
    ratio = spacing_xyz / old_xyz
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * ratio[None, :]
    out[:3, 3] = affine[:3, :3] @ (0.5 * ratio - 0.5) + affine[:3, 3]
    return out


def _write_nifti(path: Path, volume: Volume) -> None:
    nib = _nibabel()
    data = np.asarray(volume.data)
    if volume.axes == "CZYX":
        data = data.transpose(3, 2, 1, 0)
    elif volume.axes == "ZYX":
        data = data.transpose(2, 1, 0)
    else:
        raise VolumeIOError(f"NIfTI output needs ZYX or CZYX data, got axes {volume.axes}")
    data = _storable(data)
    # NIfTI holds 64-bit integers, but nibabel wants that asked for explicitly.
    img = nib.Nifti1Image(np.ascontiguousarray(data), nifti_affine_for(volume), dtype=data.dtype)
    img.header.set_xyzt_units(xyz={"µm": "micron", "m": "meter"}.get(volume.unit or "", "mm"))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))


# ---------------------------------------------------------------- zarr / OME-Zarr


def _read_zarr(path: Path, lazy: bool) -> Volume:
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise VolumeIOError(f"{path}: not a readable zarr store ({_one_line(exc)})") from exc
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
            raise VolumeIOError(f"{path}: axis {names[i]!r} of size {array.shape[i]} is not supported")
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
    return Volume(data, spacing, target, _normalise_unit(unit), origin, {"source_format": "zarr"})


def _write_zarr(path: Path, volume: Volume) -> None:
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
    unit = {"µm": "micrometer", "nm": "nanometer", "mm": "millimeter"}.get(volume.unit or "")
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


def _read_ome_zarr_unit(unit):
    return {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm"}.get(unit, unit)


# ---------------------------------------------------------------- tables

Reader = Callable[[Path, bool], Volume]

READERS: dict[str, Reader] = {
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".ome.tif": _read_tiff,
    ".ome.tiff": _read_tiff,
    ".nii": _read_nifti,
    ".nii.gz": _read_nifti,
    ".zarr": _read_zarr,
    ".ome.zarr": _read_zarr,
}

WRITERS: dict[str, Callable[[Path, Volume], None]] = {
    ".tif": lambda p, v: _write_tiff(p, v, ome=False),
    ".tiff": lambda p, v: _write_tiff(p, v, ome=False),
    ".ome.tif": lambda p, v: _write_tiff(p, v, ome=True),
    ".ome.tiff": lambda p, v: _write_tiff(p, v, ome=True),
    ".nii": _write_nifti,
    ".nii.gz": _write_nifti,
    ".zarr": _write_zarr,
    ".ome.zarr": _write_zarr,
}


def can_read(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a suffix this module reads (a cheap check, no IO)."""
    return format_suffix(path) in READERS


def read_volume(path: str | os.PathLike, lazy: bool = False) -> Volume:
    """Read a TIFF, NIfTI or zarr volume with its voxel spacing.

    Parameters
    ----------
    path
        File or zarr folder.
    lazy
        Return a dask array where the format allows it (zarr, TIFF) instead of
        loading the whole volume.

    Returns
    -------
    Volume
        Data with axes ``[C]ZYX`` (or ``[C]YX`` for a 2-D image).

    Raises
    ------
    VolumeIOError
        Missing, empty, truncated or unsupported files.
    """
    path = Path(path)
    suffix = format_suffix(path)
    if suffix not in READERS:
        raise VolumeIOError(
            f"{path}: unsupported format {suffix or '(no suffix)'}; "
            f"use one of {', '.join(sorted(READERS))}"
        )
    _require_file(path)
    try:
        volume = READERS[suffix](path, lazy)
    except ValueError as exc:  # Volume's checks, e.g. a zero voxel size in the header
        raise VolumeIOError(f"{path}: {exc}") from exc
    if volume.unit:
        object.__setattr__(volume, "unit", _read_ome_zarr_unit(volume.unit))
    return volume


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


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a folder (a temporary store) for good, after zarr's pending writes into it."""
    settle_zarr_writes()
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` and move it into place on success.

    The temporary keeps the final suffix so format detection (``.nii.gz``) works;
    on any error it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    suffix = format_suffix(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            backup = path.with_name(f".{path.name}.old")
            shutil.rmtree(backup, ignore_errors=True)  # left by a process killed mid-swap
            os.replace(path, backup)
            os.replace(tmp, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            remove_tree(tmp)
        elif tmp.exists():
            tmp.unlink()


def check_writable(path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Fail early (before any computation) if ``path`` cannot be written.

    Raises
    ------
    VolumeIOError
        Unknown suffix, missing or read-only folder, or an existing file when
        ``overwrite`` is False.
    """
    path = Path(path)
    suffix = format_suffix(path)
    if suffix not in WRITERS:
        raise VolumeIOError(
            f"{path}: cannot write {suffix or '(no suffix)'}; use one of {', '.join(sorted(WRITERS))}"
        )
    if not path.parent.is_dir():
        raise VolumeIOError(f"{path.parent}: output folder does not exist")
    if path.exists() and not overwrite:
        raise VolumeIOError(f"{path}: exists; choose another name or allow overwriting")
    if not os.access(path.parent, os.W_OK):
        raise VolumeIOError(f"{path.parent}: output folder is not writable")
    return path


def write_volume(path: str | os.PathLike, volume: Volume, overwrite: bool = True) -> Path:
    """Write ``volume`` atomically; the format follows the suffix.

    Parameters
    ----------
    path
        Destination: ``.tif``/``.tiff`` (ImageJ), ``.ome.tif``, ``.nii``/``.nii.gz``,
        ``.zarr``/``.ome.zarr`` (OME-Zarr 0.4).
    volume
        What to write; spacing and unit are stored in the format's own fields.
    overwrite
        Refuse to replace an existing file when False.

    Returns
    -------
    Path
        The written path.
    """
    path = check_writable(path, overwrite)
    suffix = format_suffix(path)
    try:
        with atomic_path(path) as tmp:
            WRITERS[suffix](tmp, volume)
    except VolumeIOError:
        raise
    except OSError as exc:
        raise VolumeIOError(f"{path}: could not write ({exc.strerror or exc})") from exc
    return path
