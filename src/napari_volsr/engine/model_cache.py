"""Loaded models kept while their folders are unchanged, and loading one that is being saved."""

from __future__ import annotations

import glob
import os
import threading
import time
from pathlib import Path

from .models import LoadedModel, ModelError, library_dir, load_model, resolve_model_path

__all__ = ["load_model_cached", "model_stamp", "stamp_or_none"]

_LOADED: dict = {}
_LOADED_LOCK = threading.Lock()


def model_stamp(folder: Path) -> tuple:
    """What changes when a model folder is saved again: its files' inodes and times.

    A save replaces the folder by a new one (new inodes), so a retrained model differs
    even within the file system's time resolution.

    Raises
    ------
    OSError
        The folder is gone (e.g. being replaced right now).
    """
    return tuple(sorted((p.name, p.stat().st_ino, p.stat().st_mtime_ns)
                        for p in folder.iterdir() if p.is_file()))


def stamp_or_none(folder: Path) -> tuple | None:
    """:func:`model_stamp`, or None while the folder is missing."""
    try:
        return model_stamp(folder)
    except OSError:
        return None


def _being_saved(model) -> bool:
    """Whether a save of ``model`` (a library name or folder) is under way: its temporaries."""
    text = str(model)
    path = Path(text).expanduser()
    parent = path.parent if os.sep in text or (os.altsep and os.altsep in text) else library_dir()
    try:
        return any(parent.glob(f".{glob.escape(path.name)}.*"))
    except OSError:
        return False


_LOAD_ATTEMPTS = 5


def load_model_cached(model) -> LoadedModel:
    """Load a model, reusing it while its folder's files are unchanged (one kept).

    A model saved again while it is being loaded (a training run overwriting it) is
    loaded again, whole, rather than mixing the files of two saves.

    Raises
    ------
    ModelError
        As :func:`~.models.load_model`, or a folder that kept changing.
    """
    error = None
    for attempt in range(_LOAD_ATTEMPTS):
        if attempt:
            time.sleep(0.02 * attempt)  # let the save that was under way finish
        try:
            folder = resolve_model_path(model).resolve()
        except ModelError as exc:  # between a save's two renames the folder is missing
            if not _being_saved(model):
                raise
            error = exc
            continue
        before = stamp_or_none(folder)
        key = (str(folder), before)
        with _LOADED_LOCK:
            hit = _LOADED.get(key)
        if hit is not None and before is not None:
            return hit
        try:
            loaded = load_model(folder)
        except ModelError as exc:
            if stamp_or_none(folder) == before:
                raise
            error = ModelError(f"{folder}: the model changed while it was being loaded (saved "
                               "again by a training run?) and kept changing; try again once "
                               "it is saved")
            continue
        if before is not None and stamp_or_none(folder) == before:
            with _LOADED_LOCK:
                _LOADED.clear()
                _LOADED[key] = loaded
            return loaded
    raise error if error is not None else ModelError(
        f"{model}: the model changed while it was being loaded (saved again by a training "
        "run?) and kept changing; try again once it is saved")
