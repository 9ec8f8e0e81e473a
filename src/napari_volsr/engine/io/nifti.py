"""NIfTI reading and writing (needs nibabel, the ``nifti`` extra), the affine kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .volume import Volume, VolumeIOError, one_line_message, widen_for_storage


def _nibabel():
    try:
        import nibabel
    except ImportError as exc:  # nibabel is the `nifti` extra
        raise VolumeIOError(
            "NIfTI support needs nibabel: pip install 'napari-volsr[nifti]'"
        ) from exc
    return nibabel


def read_nifti(path: Path, lazy: bool) -> Volume:
    """Read a 3-D or 4-D NIfTI file as ``ZYX`` or ``CZYX``, keeping its affine in the metadata."""
    nib = _nibabel()
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
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


def write_nifti(path: Path, volume: Volume) -> None:
    """Write ``ZYX`` or ``CZYX`` data as NIfTI with :func:`nifti_affine_for`'s affine."""
    nib = _nibabel()
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
    img.header.set_xyzt_units(xyz={"µm": "micron", "m": "meter"}.get(volume.unit or "", "mm"))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))
