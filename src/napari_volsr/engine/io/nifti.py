"""NIfTI reading and writing (needs nibabel, the ``nifti`` extra), the affine kept."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from .volume import (
    Volume,
    VolsrWarning,
    VolumeIOError,
    length_factor,
    normalise_unit,
    one_line_message,
    widen_for_storage,
)

# The only length units a NIfTI header holds (xyzt_units), largest first.
_NIFTI_UNITS = {"m": "meter", "mm": "mm", "µm": "micron"}


def _nibabel():
    try:
        import nibabel
    except ImportError as exc:  # nibabel is the `nifti` extra
        raise VolumeIOError(
            "NIfTI support needs nibabel: pip install 'napari-volsr[nifti]'"
        ) from exc
    return nibabel


def _open(path: Path):
    import gzip

    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _load(nib, path: Path):
    """(image, voxels, pixdim as stored) of a NIfTI file, also one named ``X.NII.GZ``.

    nibabel replaces a pixdim of 0 by 1 while loading; the stored one is read apart.
    """
    if path.name.endswith((".nii", ".nii.gz")):
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    else:  # nibabel finds files by their lower-case extensions only: read it as a stream
        from nibabel.fileholders import FileHolder

        with _open(path) as fh:
            holder = FileHolder(fileobj=fh)
            img = nib.Nifti1Image.from_file_map({"header": holder, "image": holder})
            data = np.array(img.dataobj)
    with _open(path) as fh:
        stored = type(img.header).from_fileobj(fh, check=False)
    return img, data, np.asarray(stored["pixdim"][1:4], dtype=float)


def _spacing(img, raw: np.ndarray, path: Path) -> tuple[float, ...]:
    """Voxel size (x, y, z) from the header's pixdim, or from the affine where it is unusable.

    A pixdim of 0 (nibabel then assumes 1) or one that disagrees with the sform/qform
    columns would put the voxels elsewhere than the affine says: the affine wins, said.
    """
    zooms = np.asarray([float(z) for z in img.header.get_zooms()[:3]], dtype=float)
    columns = np.linalg.norm(np.asarray(img.affine, dtype=float)[:3, :3], axis=0)
    usable = np.all(np.isfinite(raw) & (raw > 0))
    agrees = np.allclose(raw, columns, rtol=1e-3, atol=0)
    if usable and agrees or not np.all(np.isfinite(columns) & (columns > 0)):
        return tuple(zooms)
    why = "is 0 or invalid" if not usable else "disagrees with its affine"
    header = " x ".join(f"{z:g}" for z in raw)
    warnings.warn(
        f"{path}: the header's voxel size (pixdim {header}) {why}; the spacing "
        f"{' x '.join(f'{c:.6g}' for c in columns)} (x, y, z) comes from the affine instead",
        VolsrWarning, stacklevel=4)
    return tuple(float(c) for c in columns)


def _origin(affine: np.ndarray, spacing_xyz) -> tuple[float, ...] | None:
    """The first voxel's position (x, y, z) in the volume's own axes, from its affine.

    With ``R`` the affine's directions (its columns over the voxel size), a layer's
    coordinates are ``R^-1 world``: the world rotated (or mirrored) onto the data's
    axes, so that scale and translate alone place every voxel, and the translation
    ``t`` becomes the origin ``R^-1 t``. None where the directions are degenerate.
    """
    directions = affine[:3, :3] / np.asarray(spacing_xyz, dtype=float)[None, :]
    try:
        origin = np.linalg.solve(directions, affine[:3, 3])
    except np.linalg.LinAlgError:
        return None
    return tuple(float(o) for o in origin) if np.all(np.isfinite(origin)) else None


def read_nifti(path: Path, lazy: bool) -> Volume:
    """Read a 3-D or 4-D NIfTI file as ``ZYX`` or ``CZYX``, keeping its affine in the metadata.

    The spacing is the header's pixdim, or the affine's column lengths where pixdim is 0
    or disagrees with the affine (a warning says so). The origin is the first voxel's
    position in the volume's own axes (:func:`_origin`); the qform and sform codes and
    the time unit are kept for writing the volume back.
    """
    nib = _nibabel()
    try:
        img, data, pixdim = _load(nib, path)
    except Exception as exc:  # nibabel raises several types for broken files
        raise VolumeIOError(f"{path}: not a readable NIfTI file ({one_line_message(exc)})") from exc
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
    spacing_xyz = _spacing(img, pixdim, path)
    affine = np.asarray(img.affine, dtype=float)
    xyz_unit, time_unit = img.header.get_xyzt_units()
    metadata = {
        "source_format": "nifti",
        "nifti_affine": affine.tolist(),
        "nifti_spacing": list(reversed(spacing_xyz)),
        "nifti_codes": [int(img.header["qform_code"]), int(img.header["sform_code"])],
        "nifti_time_unit": time_unit,
    }
    origin = _origin(affine, spacing_xyz)
    if origin is not None:
        metadata["nifti_origin_from_affine"] = True
        origin = tuple(reversed(origin))
    unit = normalise_unit(xyz_unit)  # "unknown" -> None
    return Volume(np.ascontiguousarray(data), tuple(reversed(spacing_xyz)), axes, unit, origin,
                  metadata=metadata)


def nifti_affine_for(volume: Volume) -> np.ndarray:
    """The NIfTI affine for ``volume``: its spacing and origin, a kept affine's directions.

    A volume read from NIfTI keeps its file's directions ``R`` (the affine's columns
    over the voxel size): the new affine is ``R diag(spacing)`` with translation
    ``R origin`` (the inverse of :func:`_origin`), so a z-upsampled or cropped result
    lands where its origin says. Without a kept affine it is ``diag(spacing)`` and the
    origin. A kept affine without an origin read from it (a volume built by hand) is
    shifted on the slab grid instead: voxel ``k`` of the new grid sits at old index
    ``(k + 0.5) * s_new / s_old - 0.5`` along each axis.
    """
    spacing_xyz = np.asarray(volume.spacing[::-1], dtype=float)
    origin_xyz = np.asarray(volume.origin[::-1], dtype=float)
    affine = volume.metadata.get("nifti_affine")
    if affine is None:
        out = np.diag([*spacing_xyz, 1.0])
        out[:3, 3] = origin_xyz
        return out
    affine = np.asarray(affine, dtype=float)
    old_xyz = np.asarray(volume.metadata.get("nifti_spacing", volume.spacing)[::-1], dtype=float)
    directions = affine[:3, :3] / old_xyz[None, :]
    out = affine.copy()
    out[:3, :3] = directions * spacing_xyz[None, :]
    if volume.metadata.get("nifti_origin_from_affine"):
        out[:3, 3] = directions @ origin_xyz
    else:
        ratio = spacing_xyz / old_xyz
        out[:3, 3] = affine[:3, :3] @ (0.5 * ratio - 0.5) + affine[:3, 3]
    return out


def _in_nifti_unit(volume: Volume) -> tuple[Volume, str]:
    """``volume`` in a length unit NIfTI knows, and that unit's header name.

    Other lengths are converted, never relabelled: nanometres become micrometres
    (spacing, origin and a kept affine times 1e-3), centimetres millimetres. A volume
    without a unit is written as ``unknown``, not as NIfTI readers' usual mm.
    """
    unit = normalise_unit(volume.unit)
    if unit is None:
        return volume, "unknown"
    if unit in _NIFTI_UNITS:
        return volume, _NIFTI_UNITS[unit]
    factors = {target: length_factor(unit, target) for target in _NIFTI_UNITS}
    if any(f is None for f in factors.values()):
        warnings.warn(f"NIfTI stores lengths in m, mm or µm only; the unit {unit!r} is not a "
                      "length this plugin converts, so the file says 'unknown'",
                      VolsrWarning, stacklevel=4)
        return volume, "unknown"
    # The largest NIfTI unit not larger than ``unit`` (µm for anything smaller).
    target = next((t for t, f in factors.items() if f >= 1.0), "µm")
    factor = factors[target]
    metadata = dict(volume.metadata)
    if "nifti_affine" in metadata:
        affine = np.asarray(metadata["nifti_affine"], dtype=float)
        affine[:3] *= factor
        metadata["nifti_affine"] = affine.tolist()
    if "nifti_spacing" in metadata:
        metadata["nifti_spacing"] = [float(s) * factor for s in metadata["nifti_spacing"]]
    converted = replace(volume, spacing=tuple(s * factor for s in volume.spacing),
                        origin=tuple(t * factor for t in volume.origin), unit=target,
                        metadata=metadata)
    return converted, _NIFTI_UNITS[target]


def _codes(volume: Volume) -> tuple[int, int]:
    """The (qform, sform) codes to write: a NIfTI input's own, else 1 (scanner) for both.

    1 says the affine gives the instrument's own coordinates, which is what a volume's
    spacing and origin are (stage or scanner positions), not an alignment to another
    image (2) or a template (3, 4, 5); both transforms are written, as some tools read
    only the qform and others prefer the sform. An input without either code (0, 0)
    gets 1 too: with code 0 readers would drop the origin the result is placed at.
    """
    codes = volume.metadata.get("nifti_codes")
    if not codes or not any(codes):
        return 1, 1
    return int(codes[0]), int(codes[1])


def write_nifti(path: Path, volume: Volume) -> None:
    """Write ``ZYX`` or ``CZYX`` data as NIfTI with :func:`nifti_affine_for`'s affine."""
    nib = _nibabel()
    volume, xyz_unit = _in_nifti_unit(volume)
    data = np.asarray(volume.data)
    if volume.axes == "CZYX":
        data = data.transpose(3, 2, 1, 0)
    elif volume.axes == "ZYX":
        data = data.transpose(2, 1, 0)
    else:
        raise VolumeIOError(f"NIfTI output needs ZYX or CZYX data, got axes {volume.axes}")
    data = widen_for_storage(data)
    # NIfTI holds 64-bit integers, but nibabel wants that asked for explicitly.
    img = nib.Nifti1Image(np.ascontiguousarray(data), nifti_affine_for(volume), dtype=data.dtype)
    qform_code, sform_code = _codes(volume)
    img.header.set_xyzt_units(xyz=xyz_unit, t=volume.metadata.get("nifti_time_unit", "unknown"))
    img.set_qform(img.affine, code=qform_code)
    img.set_sform(img.affine, code=sform_code)
    nib.save(img, str(path))
