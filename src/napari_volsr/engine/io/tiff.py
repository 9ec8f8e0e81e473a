"""TIFF (ImageJ hyperstack and OME-TIFF) reading and writing with voxel spacing."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .files import final_path, format_suffix
from .volume import (
    SPATIAL_AXES,
    Volume,
    VolsrWarning,
    VolumeIOError,
    common_unit,
    length_factor,
    normalise_unit,
    one_line_message,
    widen_for_storage,
)

_TIFF_AXIS_MAP = {"I": "Z", "Q": "Z", "S": "C"}


def _valid_size(value) -> bool:
    """A usable voxel size: positive and finite. Others count as missing, like a zero."""
    try:
        return 0 < float(value) < float("inf")
    except (TypeError, ValueError):
        return False


def _ome_pixels(tif) -> dict | None:
    """The first image's ``Pixels`` element of an OME-TIFF as a dict, or None."""
    import tifffile

    if not (tif.is_ome and tif.ome_metadata):
        return None
    try:
        ome = tifffile.xml2dict(tif.ome_metadata)["OME"]
        image = ome["Image"][0] if isinstance(ome["Image"], list) else ome["Image"]
        return image["Pixels"]
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _first_plane(pixels: dict) -> dict:
    """The ``Plane`` element of the first z, channel and time point ({} without planes)."""
    planes = pixels.get("Plane") or []
    planes = [p for p in (planes if isinstance(planes, list) else [planes]) if isinstance(p, dict)]
    firsts = [p for p in planes if p.get("TheC", 0) == 0 and p.get("TheT", 0) == 0]
    return min(firsts, key=lambda p: p.get("TheZ", 0), default={})


def _ome_geometry(pixels: dict) -> tuple[dict, dict, dict]:
    """Voxel sizes, units and first-voxel positions per axis letter from OME ``Pixels``.

    Positions are the first plane's ``PositionZ/Y/X``, converted to each size's unit (a
    ``pixel`` position counts voxels, one in the unstated ``reference frame`` is taken in
    the size's unit); one in a unit that does not convert is left out.
    """
    sizes: dict[str, float] = {}
    units: dict[str, str | None] = {}
    origin: dict[str, float] = {}
    plane = _first_plane(pixels)
    for ax in "XYZ":
        value = pixels.get(f"PhysicalSize{ax}")
        if _valid_size(value):
            sizes[ax] = float(value)
            # The OME schema's default unit, not a guess.
            units[ax] = pixels.get(f"PhysicalSize{ax}Unit", "µm")
        position = plane.get(f"Position{ax}")
        try:
            position = float(position)
        except (TypeError, ValueError):
            continue
        if not np.isfinite(position):
            continue
        where = normalise_unit(plane.get(f"Position{ax}Unit", "reference frame"))
        if where is None:  # "pixel": a voxel index
            origin[ax] = position * sizes.get(ax, 1.0)
        elif where == "reference frame" or where == normalise_unit(units.get(ax)):
            # The schema's default, a stage frame of no stated unit: taken as the image's.
            origin[ax] = position
        elif ax in sizes and length_factor(where, normalise_unit(units[ax]) or "") is not None:
            origin[ax] = position * length_factor(where, normalise_unit(units[ax]))
    return sizes, units, origin


def _imagej_geometry(tif, series) -> tuple[dict, dict, dict]:
    """Voxel sizes, units and first-voxel positions per axis letter from ImageJ metadata.

    ImageJ keeps the origin in pixels, negated (``Calibration.getX(x) = (x - xOrigin) *
    pixelWidth``): the first voxel sits at ``-xorigin * pixelWidth``.
    """
    sizes: dict[str, float] = {}
    units: dict[str, str | None] = {}
    origin: dict[str, float] = {}
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
        units = {"X": unit, "Y": meta.get("yunit", unit), "Z": meta.get("zunit", unit)}
        for ax in "XYZ":
            pixels = meta.get(f"{ax.lower()}origin")
            if isinstance(pixels, (int, float)) and not isinstance(pixels, bool) \
                    and math.isfinite(pixels):
                origin[ax] = -float(pixels) * sizes.get(ax, 1.0)
    return sizes, units, origin


def _tiff_geometry(tif, series) -> tuple[dict[str, float], dict[str, float], str | None]:
    """Voxel size and first-voxel position per axis letter, and their one unit.

    From OME metadata where it gives sizes, else from the TIFF resolution tags and
    ImageJ's description. Axes given in different length units (OME's
    ``PhysicalSizeZUnit``, ImageJ's ``zunit``) are converted to the smallest of them
    (:func:`~.volume.common_unit`).
    """
    pixels = _ome_pixels(tif)
    sizes, units, origin = _ome_geometry(pixels) if pixels is not None else ({}, {}, {})
    if not sizes:
        sizes, units, origin = _imagej_geometry(tif, series)
    axes = list(sizes)
    unit, values, where = common_unit([units.get(ax) for ax in axes], [sizes[ax] for ax in axes],
                                      [origin.get(ax, 0.0) for ax in axes])
    # Axes without a size keep their origin in pixels, as their spacing is 1.
    return dict(zip(axes, values)), {**origin, **dict(zip(axes, where))}, unit


_IMAGEJ_COUNTS = ("images", "channels", "slices", "frames")


def _check_imagej(tif, path: Path) -> None:
    """Refuse ImageJ metadata that is malformed or contradicts itself.

    tifffile would read such files as it guesses (a few of the planes, or not at all,
    with a message about Python types); ImageJ itself stores images = channels x
    slices x frames.
    """
    meta = tif.imagej_metadata if tif.is_imagej else None
    if not meta:
        return
    counts = {}
    for key in _IMAGEJ_COUNTS:
        value = meta.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise VolumeIOError(
                f"{path}: malformed ImageJ metadata ({key}={value!r} is not a positive "
                "integer); fix it in Fiji (Image > Properties) or save the stack again"
            )
        counts[key] = value
    product = counts["channels"] * counts["slices"] * counts["frames"]
    # A plain stack may give images alone (then they are the slices).
    given = any(key in meta for key in _IMAGEJ_COUNTS[1:])
    if "images" in meta and given and product != counts["images"]:
        raise VolumeIOError(
            f"{path}: the ImageJ metadata contradicts itself: images={counts['images']} but "
            f"channels x slices x frames = {counts['channels']} x {counts['slices']} x "
            f"{counts['frames']} = {product} (edited?); fix it in Fiji (Image > Properties) "
            "or save the stack again"
        )


def _warn_other_series(tif, path: Path) -> None:
    """Say that only the first of several image series is read."""
    series = tif.series
    if len(series) > 1:
        others = ", ".join(str(tuple(s.shape)) for s in series[1:4])
        more = ", ..." if len(series) > 4 else ""
        warnings.warn(
            f"{path}: the file holds {len(series)} image series; reading the first, "
            f"{tuple(series[0].shape)} {series[0].axes}, and leaving {others}{more} "
            "(save each series to its own file to use the others)",
            VolsrWarning, stacklevel=4)


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
    expected = int((tif.imagej_metadata or {}).get("images", 0)) if tif.is_imagej else 0
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
            message = one_line_message(exc)
            raise VolumeIOError(f"{self.path}: damaged image data ({message})") from exc


def read_tiff(path: Path, lazy: bool) -> Volume:
    """Read a TIFF's first series as ``[C]ZYX`` or ``[C]YX`` with its ImageJ or OME spacing."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            _check_imagej(tif, path)
            series = tif.series[0]
            _warn_other_series(tif, path)
            axes = series.axes
            _check_complete(tif, series, path)
            sizes, origins, unit = _tiff_geometry(tif, series)
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
        raise VolumeIOError(f"{path}: not a readable TIFF ({one_line_message(exc)})") from exc
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
    origin = tuple(origins.get(a, 0.0) for a in target if a in SPATIAL_AXES)
    return Volume(data, spacing, target, unit, origin, metadata={"source_format": "tiff"})


def _imagej_unit(unit: str | None) -> str:
    """``unit`` as ImageJ writes it: ``"micron"``, ``"nm"``, ``"pixel"`` for none.

    ImageJ descriptions are ASCII: other characters (``"Å"``) become the Java escapes
    ImageJ itself writes (``"\\u00C5"``).
    """
    if unit is None:
        return "pixel"
    if unit == "µm":
        return "micron"
    return "".join(c if ord(c) < 128 else f"\\u{ord(c):04X}" for c in unit)


def _imagej_origin(sizes: dict, origins: dict) -> dict[str, float]:
    """``xorigin``/``yorigin``/``zorigin`` as ImageJ keeps them: in pixels, negated.

    ImageJ (``FileSaver``) writes only the non-zero ones; so does this.
    """
    return {f"{ax.lower()}origin": -origins[ax] / sizes.get(ax, 1.0)
            for ax in "XYZ" if origins.get(ax)}


def _write_imagej(path: Path, data: np.ndarray, volume: Volume, sizes: dict, origins: dict,
                  unit: str | None) -> None:
    """Write an ImageJ hyperstack with its voxel size, unit and origin."""
    import tifffile

    # ImageJ hyperstacks are TZCYXS: put the channel axis after Z.
    order = "".join(a for a in "ZCYX" if a in volume.axes)
    data = data.transpose([volume.axes.index(a) for a in order])
    resolution = tuple(1 / sizes.get(ax, 1.0) for ax in "XY")
    if not all(2.0**-32 < r < 2.0**32 for r in resolution):  # 32-bit fractions
        raise VolumeIOError(
            f"TIFF stores the x, y voxel size as a fraction of 32-bit integers, which "
            f"cannot hold {sizes.get('X', 1.0):g} x {sizes.get('Y', 1.0):g}; write .zarr "
            "or .nii.gz, or check the input's voxel size"
        )
    metadata: dict[str, Any] = {"axes": order, "unit": _imagej_unit(unit)}
    if "Z" in sizes:
        metadata["spacing"] = sizes["Z"]
    metadata.update(_imagej_origin(sizes, origins))
    tifffile.imwrite(path, data, imagej=True, resolution=resolution, metadata=metadata)


def _ome_planes(volume: Volume, sizes: dict, origins: dict, unit: str | None) -> dict:
    """OME ``Plane`` attributes, one entry per stored plane: each plane's position.

    Planes are stored in the array's order (channels outer, z inner for ``CZYX``); a
    plane's ``PositionZ`` is its own z, Y and X those of its first voxel's centre.
    """
    leading = [(a, n) for a, n in zip(volume.axes, volume.data.shape) if a not in "YX"]
    spatial = [ax for ax in "ZYX" if ax in sizes]
    planes: dict[str, list] = {f"Position{ax}": [] for ax in spatial}
    for index in np.ndindex(*[n for _, n in leading]):
        z = dict(zip([a for a, _ in leading], index)).get("Z", 0)
        for ax in spatial:
            step = z * sizes[ax] if ax == "Z" else 0.0
            planes[f"Position{ax}"].append(origins.get(ax, 0.0) + step)
    count = math.prod(n for _, n in leading)
    planes.update({f"Position{ax}Unit": [unit or "pixel"] * count for ax in spatial})
    return planes


def write_tiff(path: Path, volume: Volume, ome: bool) -> None:
    """Write an ImageJ hyperstack where ImageJ takes the type (and not ``ome``), else OME-TIFF.

    Both keep the first voxel's position: ImageJ's ``xorigin``/``yorigin``/``zorigin``,
    OME's ``Plane`` positions. An OME image is named after the file written (its
    final name, when ``path`` is :func:`~.files.atomic_path`'s temporary).
    """
    import tifffile

    data = widen_for_storage(np.asarray(volume.data))
    if data.dtype.itemsize == 8 and data.dtype.kind in "iu":
        raise VolumeIOError(
            f"TIFF cannot store {data.dtype} values with their voxel spacing; write .nii.gz "
            "or .zarr, or choose a 32-bit or smaller output type"
        )
    spatial = [a for a in volume.axes if a in SPATIAL_AXES]
    sizes = dict(zip(spatial, volume.spacing))
    origins = dict(zip(spatial, volume.origin))
    unit = normalise_unit(volume.unit)
    if data.dtype in (np.uint8, np.uint16, np.float32) and not ome:
        _write_imagej(path, data, volume, sizes, origins, unit)
        return
    final = final_path(path)
    name = final.name[: -len(format_suffix(final))] or final.name
    metadata: dict[str, Any] = {"axes": volume.axes, "Name": name}
    for ax, size in sizes.items():
        metadata[f"PhysicalSize{ax}"] = size
        # Without a unit OME readers take µm: say "pixel" for a volume that has none.
        metadata[f"PhysicalSize{ax}Unit"] = unit or "pixel"
    metadata["Plane"] = _ome_planes(volume, sizes, origins, unit)
    tifffile.imwrite(path, data, ome=True, metadata=metadata, photometric="minisblack")
