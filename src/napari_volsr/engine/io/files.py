"""Paths on disk: the format suffix, atomic replacement and removal of temporary stores."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .volume import VolumeIOError
from .zarr import settle_zarr_writes

_COMPOUND_SUFFIXES = (".nii.gz", ".ome.tiff", ".ome.tif", ".ome.zarr")


def format_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix that decides the format (``.nii.gz``, ``.ome.tif`` ...)."""
    name = Path(path).name.lower().rstrip("/")
    for suffix in _COMPOUND_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def require_file(path: Path) -> None:
    """Refuse a missing path or an empty file before any reader sees it."""
    if not path.exists():
        raise VolumeIOError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise VolumeIOError(f"{path}: the file is empty")


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a folder (a temporary store) for good, after zarr's pending writes into it."""
    settle_zarr_writes()
    shutil.rmtree(path, ignore_errors=True)


def final_path(path: str | os.PathLike) -> Path:
    """The file a temporary from :func:`atomic_path` becomes; other paths as they are.

    Writers see only the temporary (``.out.ome.tif.k2x9.part.ome.tif``), but names
    stored inside a file (an OME image name) must be the final file's.
    """
    path = Path(path)
    suffix = format_suffix(path)
    name, tail = path.name, f".part{suffix}"
    if not (name.startswith(".") and name.lower().endswith(tail)):
        return path
    # mkstemp's random part holds no dots: drop it and the leading dot.
    stem, _, random = name[1:-len(tail)].rpartition(".")
    return path.with_name(stem) if stem and random else path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` and move it into place on success.

    The temporary keeps the final suffix so format detection (``.nii.gz``) works;
    on any error it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    suffix = format_suffix(path)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent
    )
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
