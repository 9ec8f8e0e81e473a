"""Training checkpoints: written atomically beside the model, resumed bit for bit."""

from __future__ import annotations

import json
import os
import pickle
import secrets
import socket
import stat
from contextlib import contextmanager
from pathlib import Path

import torch

from .config import TrainingConfig
from .io import atomic_path
from .methods.base import TrainingMethod
from .models import ModelError

CHECKPOINT_WEIGHTS = "weights.safetensors"
CHECKPOINT_STATE = "state.pt"
CHECKPOINT_META = "checkpoint.json"


def checkpoint_dir_for(model_folder: Path) -> Path:
    """Checkpoints live beside the model folder, hidden, so saving the model keeps them."""
    return model_folder.parent / ".checkpoints" / model_folder.name


def save_checkpoint(folder: Path, method: TrainingMethod, step: int, elapsed: float,
                    history: list[dict], config: TrainingConfig) -> None:
    """Write the weights, optimizer, scaler and RNG states and the history atomically."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        state = {k: v.detach().cpu().contiguous().clone() for k, v in method.state_dict().items()}
        save_file(state, str(tmp / CHECKPOINT_WEIGHTS))
        torch.save({
            **method.training_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }, tmp / CHECKPOINT_STATE)
        meta = {"step": step, "elapsed": elapsed, "history": history,
                "model": config.model.model_dump(mode="json")}
        (tmp / CHECKPOINT_META).write_text(json.dumps(meta))
        # safetensors writes owner-only files; keep them as readable as the rest (umask).
        os.chmod(tmp / CHECKPOINT_WEIGHTS, stat.S_IMODE((tmp / CHECKPOINT_META).stat().st_mode))


def _same_model(saved: dict, config: TrainingConfig) -> bool:
    # The format version is no setting: a checkpoint written before an upgrade resumes.
    def settings(values: dict) -> dict:
        return {k: v for k, v in values.items() if k != "version"}

    return settings(saved) == settings(config.model.model_dump(mode="json"))


def load_checkpoint(folder: Path, method: TrainingMethod, config: TrainingConfig
                    ) -> tuple[int, float, list]:
    """Restore ``method`` and the RNG from a checkpoint; ``(step, elapsed, history)``.

    Raises
    ------
    ModelError
        No checkpoint, one of another model config, or a damaged one.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    backup = folder.with_name(f".{folder.name}.old")  # io.atomic_path's, mid-swap
    if not (folder / CHECKPOINT_META).is_file() and (backup / CHECKPOINT_META).is_file():
        folder = backup  # killed between the two renames: the previous checkpoint is whole
    meta_path = folder / CHECKPOINT_META
    if not meta_path.is_file():
        raise ModelError(f"{folder}: no checkpoint to resume from; start a new run")
    meta = json.loads(meta_path.read_text())
    if not _same_model(meta["model"], config):
        raise ModelError(
            f"{folder}: the checkpoint belongs to a different model config; "
            "resume with the same settings or start a new run under another name"
        )
    try:
        method.load_state_dict(load_file(str(folder / CHECKPOINT_WEIGHTS)))
        # Our own file, but loaded like any other: tensors and plain containers only.
        state = torch.load(folder / CHECKPOINT_STATE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, OSError, RuntimeError, EOFError) as exc:
        raise ModelError(
            f"{folder}: the checkpoint is damaged or holds more than tensors (refused, nothing "
            f"in it was run: {type(exc).__name__}); train the model anew instead of resuming"
        ) from exc
    method.load_training_state(state)
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(meta["step"]), float(meta["elapsed"]), list(meta["history"])


# ---------------------------------------------------------------- name reservation
def reservation_path(model_folder: Path) -> Path:
    """The hidden marker that holds a model name while a run trains it."""
    model_folder = Path(model_folder)
    return model_folder.parent / f".{model_folder.name}.reserved"


def _pid_alive(pid: int) -> bool:
    try:
        import psutil
    except ImportError:
        if os.name == "nt":
            return True  # no safe probe: count the marker as held
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return psutil.pid_exists(pid)


def _read_marker(marker: Path) -> dict | None:
    """The marker's holder, ``{}`` when unreadable (being written), None when absent."""
    try:
        return json.loads(marker.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _stale(holder: dict) -> bool:
    """A marker left by a run on this machine whose process has ended."""
    pid = holder.get("pid")
    return (holder.get("host") == socket.gethostname() and isinstance(pid, int)
            and not _pid_alive(pid))


def reservation_holder(model_folder: Path) -> dict | None:
    """``{"pid", "host", ...}`` of the live run that holds this model name, else None."""
    holder = _read_marker(reservation_path(model_folder))
    return None if holder is None or _stale(holder) else holder


def name_exists_message(model_folder: Path) -> str:
    """The sentence every door shows when a model of this name is already saved."""
    model_folder = Path(model_folder)
    return (f"a model named '{model_folder.name}' exists in {model_folder.parent}: choose "
            "another name, resume it or overwrite it")


def name_taken_message(model_folder: Path, holder: dict) -> str:
    """The sentence every door shows when another run holds the model name."""
    model_folder = Path(model_folder)
    who = (f"process {holder['pid']} on {holder.get('host', '?')}" if "pid" in holder
           else "a process starting up")
    return (f"another training run ({who}) is already training a model named "
            f"'{model_folder.name}' in {model_folder.parent}: choose another name or wait "
            f"for it to finish (if no run is training it, delete "
            f"{reservation_path(model_folder)})")


def _break_stale(marker: Path, holder: dict) -> None:
    """Move a dead run's marker aside, putting back a live one moved by mistake."""
    aside = marker.with_name(f"{marker.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        os.rename(marker, aside)
    except FileNotFoundError:
        return
    if _read_marker(aside) == holder:
        aside.unlink(missing_ok=True)
        return
    try:  # another run reserved the name in between: its marker goes back
        os.link(aside, marker)
    except OSError:
        pass
    aside.unlink(missing_ok=True)


@contextmanager
def reserve_model_name(model_folder: Path):
    """Hold a model name for one training run (atomic; markers of ended runs are ignored).

    Raises
    ------
    ModelError
        When another live run holds the name; the message says what to do.
    """
    marker = reservation_path(model_folder)
    marker.parent.mkdir(parents=True, exist_ok=True)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "token": secrets.token_hex(8)}
    for _ in range(3):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = _read_marker(marker)
            if holder and _stale(holder):
                _break_stale(marker, holder)
                continue
            if holder is None:
                continue  # released in between
            raise ModelError(name_taken_message(model_folder, holder)) from None
        with os.fdopen(fd, "w") as stream:
            json.dump(mine, stream)
        break
    else:
        raise ModelError(name_taken_message(model_folder, _read_marker(marker) or {}))
    try:
        yield marker
    finally:
        if _read_marker(marker) == mine:
            marker.unlink(missing_ok=True)
