"""Read and write volumes (TIFF, NIfTI, zarr/OME-Zarr) with their voxel spacing, by suffix."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .files import atomic_path, format_suffix, remove_tree, require_file
from .nifti import nifti_affine_for, read_nifti, write_nifti
from .tiff import read_tiff, write_tiff
from .volume import (
    SPATIAL_AXES,
    Volume,
    VolsrWarning,
    VolumeIOError,
    common_unit,
    length_factor,
    long_unit_name,
    normalise_unit,
)
from .zarr import ome_zarr_array, read_zarr, settle_zarr_writes, with_ngff_version, write_zarr

__all__ = [
    "READERS",
    "SPATIAL_AXES",
    "WRITERS",
    "Reader",
    "Volume",
    "VolsrWarning",
    "VolumeIOError",
    "atomic_path",
    "can_read",
    "check_writable",
    "common_unit",
    "format_suffix",
    "length_factor",
    "long_unit_name",
    "nifti_affine_for",
    "normalise_unit",
    "ome_zarr_array",
    "read_volume",
    "remove_tree",
    "settle_zarr_writes",
    "with_ngff_version",
    "write_volume",
]

Reader = Callable[[Path, bool], Volume]

READERS: dict[str, Reader] = {
    ".tif": read_tiff,
    ".tiff": read_tiff,
    ".ome.tif": read_tiff,
    ".ome.tiff": read_tiff,
    ".nii": read_nifti,
    ".nii.gz": read_nifti,
    ".zarr": read_zarr,
    ".ome.zarr": read_zarr,
}

WRITERS: dict[str, Callable[[Path, Volume], None]] = {
    ".tif": lambda p, v: write_tiff(p, v, ome=False),
    ".tiff": lambda p, v: write_tiff(p, v, ome=False),
    ".ome.tif": lambda p, v: write_tiff(p, v, ome=True),
    ".ome.tiff": lambda p, v: write_tiff(p, v, ome=True),
    ".nii": write_nifti,
    ".nii.gz": write_nifti,
    ".zarr": write_zarr,
    ".ome.zarr": write_zarr,
}


def _listed_suffix(path: Path, table: dict, refusal: str) -> str:
    """``path``'s format suffix, or a VolumeIOError listing the suffixes ``table`` knows."""
    suffix = format_suffix(path)
    if suffix not in table:
        raise VolumeIOError(
            f"{path}: {refusal} {suffix or '(no suffix)'}; use one of {', '.join(sorted(table))}"
        )
    return suffix


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
    suffix = _listed_suffix(path, READERS, "unsupported format")
    require_file(path)
    try:
        volume = READERS[suffix](path, lazy)
    except ValueError as exc:  # Volume's checks, e.g. a zero voxel size in the header
        raise VolumeIOError(f"{path}: {exc}") from exc
    if volume.unit:  # every format's spelling ("micron", "micrometer") as one short form
        object.__setattr__(volume, "unit", normalise_unit(volume.unit))
    return volume


def check_writable(path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Fail early (before any computation) if ``path`` cannot be written.

    Raises
    ------
    VolumeIOError
        Unknown suffix, missing or read-only folder, or an existing file when
        ``overwrite`` is False.
    """
    path = Path(path)
    _listed_suffix(path, WRITERS, "cannot write")
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
