"""Saved models (config.json + safetensors) and the model library."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from .config import MODEL_NAME_PATTERN, ModelConfig, describe_validation_error
from .io import atomic_path

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
EMA_WEIGHTS_FILE = "weights_ema.safetensors"
HISTORY_FILE = "history.csv"
LIBRARY_ENV = "NAPARI_VOLSR_MODELS"


class ModelError(Exception):
    """A model folder or weights file cannot be used; the message says why."""


@dataclass
class LoadedModel:
    """A network rebuilt from a saved folder, in eval mode on the CPU.

    Attributes
    ----------
    config
        The validated model config.
    net
        The network to restore with (the EMA weights for diffusion).
    folder
        Where it was loaded from (None for a model that was never saved).
    """

    config: ModelConfig
    net: object
    folder: Path | None = None

    @property
    def config_hash(self) -> str:
        """Short hash of the config, to tell models and their outputs apart."""
        text = json.dumps(self.config.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def library_dir() -> Path:
    """The model library: ``$NAPARI_VOLSR_MODELS`` or the user data directory.

    The variable's value is stripped of surrounding blanks (a pasted newline), ``~`` is
    expanded and a relative path is made absolute (against the current folder).
    """
    env = (os.environ.get(LIBRARY_ENV) or "").strip()
    if env:
        return Path(env).expanduser().absolute()
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-volsr", appauthor=False)) / "models"


def library_problem(root: Path | None = None) -> str | None:
    """Why the model library cannot hold models (a file in the way), or None."""
    root = library_dir() if root is None else Path(root)
    where = (f"{LIBRARY_ENV}={os.environ[LIBRARY_ENV].strip()!r}"
             if (os.environ.get(LIBRARY_ENV) or "").strip() else "the model library")
    for path in (root, *root.parents):
        if path.exists() and not path.is_dir():
            what = "is" if path == root else f"is inside {path}, which is"
            return (f"{where}: {root} {what} a file, not a folder; set {LIBRARY_ENV} to a "
                    "folder (it is made when the first model is saved)")
        if path.exists():
            return None
    return None


def list_library() -> list[str]:
    """Names of the model folders in the library (those with a config.json).

    Hidden folders are skipped: a save killed midway leaves its temporary there.
    A library that is not a folder holds none (:func:`library_problem` says why).
    """
    root = library_dir()
    if not root.is_dir():
        return []
    try:
        entries = list(root.iterdir())
    except OSError:  # unreadable: no models to offer
        return []
    return sorted(p.name for p in entries
                  if not p.name.startswith(".") and (p / CONFIG_FILE).is_file())


_NAME = re.compile(MODEL_NAME_PATTERN)


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A model folder from a library name or a path.

    Raises
    ------
    ModelError
        A name that is neither an existing folder nor a library entry.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if os.sep in text or (os.altsep and os.altsep in text) or not _NAME.match(text):
        raise ModelError(f"{text}: no such model folder (library names have no path separators)")
    candidate = library_dir() / text
    if candidate.is_dir():
        return candidate
    problem = library_problem()
    if problem is not None:
        raise ModelError(f"unknown model {text!r}: {problem}")
    known = ", ".join(list_library()) or "none yet: train one first"
    raise ModelError(f"unknown model {text!r}; models in the library: {known}")


def read_model_config(name_or_path: str | os.PathLike) -> ModelConfig:
    """The config of a saved model, without loading its weights (cheap)."""
    return _read_config(resolve_model_path(name_or_path))


def _read_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{folder}: not a model folder ({CONFIG_FILE} is missing)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable JSON ({exc})") from exc
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ModelError(f"{path}: {describe_validation_error(exc)}") from exc


def _load_weights(net, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelError(f"{path.parent}: {path.name} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable safetensors file ({exc})") from exc
    check_state_dict(net, state, path)
    net.load_state_dict(state)


def check_state_dict(net, state: dict, source) -> None:
    """Raise ModelError naming missing, unexpected or mis-shaped tensors."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"shape mismatch: {'; '.join(shapes[:3])}")
    if problems:
        raise ModelError(
            f"{source}: weights do not match the config ({' / '.join(problems)}); "
            "the folder mixes files of different models"
        )


def load_model(name_or_path: str | os.PathLike) -> LoadedModel:
    """Load a saved model by library name or folder path (JSON and safetensors only)."""
    from .registry import build_network

    folder = resolve_model_path(name_or_path)
    config = _read_config(folder)
    net = build_network(config)
    ema = folder / EMA_WEIGHTS_FILE
    # Diffusion restores with the EMA weights (DESIGN 4) when they were saved.
    _load_weights(net, ema if ema.is_file() else folder / WEIGHTS_FILE)
    net.eval()
    return LoadedModel(config, net, folder)


def _save_tensors(module, path: Path) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared or strided storage: give each tensor its own copy.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def save_model(
    folder: str | os.PathLike,
    config: ModelConfig,
    net,
    ema_net=None,
    history: list[dict] | None = None,
    overwrite: bool = False,
    keep: tuple[str, ...] = (),
) -> Path:
    """Write a model folder atomically: a temporary sibling renamed into place.

    Parameters
    ----------
    folder
        Destination folder (its name need not equal ``config.name``).
    config
        The model config; the package version is filled in.
    net
        The network whose weights are saved.
    ema_net
        EMA copy of the network (diffusion), saved as ``weights_ema.safetensors``.
    history
        Training records (dicts) written to ``history.csv``.
    overwrite
        Replace an existing folder; otherwise an existing folder is an error.
    keep
        Subfolders of the existing folder copied into the new one (the training's
        TensorBoard log, written there while it trained).
    """
    from .. import __version__

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise ModelError(f"{folder}: exists; choose another model name")
    config = config.model_copy(update={"package_version": __version__})
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder) as tmp:
            _write_model_files(tmp, config, net, ema_net, history)
            for name in keep:
                if (folder / name).is_dir():
                    shutil.copytree(folder / name, tmp / name)
    except OSError as exc:
        in_library = folder.parent == library_dir()
        denied = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        hint = f"; set {LIBRARY_ENV} to a folder you can write" if in_library and denied else ""
        problem = library_problem(folder.parent) if in_library else None
        raise ModelError(problem or f"{folder}: could not save the model "
                         f"({exc.strerror or exc}){hint}") from exc
    return folder


def _write_model_files(tmp: Path, config: ModelConfig, net, ema_net, history) -> None:
    """Fill the new folder ``tmp``; the weights get config.json's permissions."""
    tmp.mkdir()
    (tmp / CONFIG_FILE).write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    # safetensors writes its files readable by the owner alone; a shared library needs
    # them as readable as config.json (the umask decides).
    mode = stat.S_IMODE((tmp / CONFIG_FILE).stat().st_mode)
    _save_tensors(net, tmp / WEIGHTS_FILE)
    os.chmod(tmp / WEIGHTS_FILE, mode)
    if ema_net is not None:
        _save_tensors(ema_net, tmp / EMA_WEIGHTS_FILE)
        os.chmod(tmp / EMA_WEIGHTS_FILE, mode)
    rows = history or []
    with open(tmp / HISTORY_FILE, "w", newline="") as fh:
        fields = sorted({k for row in rows for k in row})
        writer = csv.DictWriter(fh, fieldnames=fields or ["step"])
        writer.writeheader()
        writer.writerows(rows)


def import_torch_weights(path: str | os.PathLike) -> dict:
    """A state dict from a legacy ``.pt``/``.pth`` file, never running pickled code.

    Only ``torch.load(weights_only=True)`` is used: files holding anything other than
    tensors and plain containers are refused.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as exc:
        raise ModelError(
            f"{path}: refused: the file is not a plain tensor checkpoint (it may carry code; "
            "only weights are imported, never unpickled objects)"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: expected a dict of tensors (a state dict)")
    return obj
