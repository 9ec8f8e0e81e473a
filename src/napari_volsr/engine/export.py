"""Export a saved model folder as a zip archive, written atomically."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .io import atomic_path
from .models import ModelError, read_model_config, resolve_model_path


def export_zip(name_or_path: str | os.PathLike, dest: str | os.PathLike,
               overwrite: bool = False) -> tuple[Path, int]:
    """Zip a model folder into ``dest``; unzipping gives the folder back.

    Files sit under a top folder named like the model, so the archive unpacks into a
    folder that ``load_model`` (or ``volsr restore -m FOLDER``) takes as it is. The zip
    is written to a temporary sibling and renamed, so ``dest`` is never half-written.

    Parameters
    ----------
    name_or_path
        Library name or model folder.
    dest
        The ``.zip`` to write; its folder must exist.
    overwrite
        Replace an existing ``dest``.

    Returns
    -------
    tuple
        The written path and the number of files archived.

    Raises
    ------
    ModelError
        Unknown models, unusable destinations.
    """
    folder = resolve_model_path(name_or_path)
    read_model_config(folder)  # refuse folders that are not valid models
    dest = check_archive_dest(folder, dest, overwrite)
    # Hidden files (editor or OS droppings) are not part of the model.
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    top = folder.resolve().name
    with atomic_path(dest) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    return dest, len(files)


def check_archive_dest(folder: Path, dest: str | os.PathLike, overwrite: bool) -> Path:
    """``dest`` as a Path if a ``.zip`` of model ``folder`` may be written there.

    Raises
    ------
    ModelError
        A name without ``.zip``, a folder, an existing file (without ``overwrite``), a
        missing parent folder, or a place inside the model folder.
    """
    dest = Path(dest)
    if dest.suffix.lower() != ".zip":
        raise ModelError(f"{dest}: the archive name must end in .zip")
    if dest.is_dir():
        raise ModelError(f"{dest}: is a folder; give the archive's file name (NAME.zip)")
    if dest.exists() and not overwrite:
        raise ModelError(f"{dest}: exists; pass --overwrite or choose another name")
    if not dest.parent.is_dir():
        raise ModelError(f"{dest.parent}: folder does not exist")
    if folder.resolve() in dest.resolve().parents:
        raise ModelError(f"{dest}: write the archive outside the model folder {folder}")
    return dest
