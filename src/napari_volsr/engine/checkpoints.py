"""Training checkpoints: written atomically beside the model, resumed bit for bit."""

from __future__ import annotations

import json
import pickle
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
