"""Training configs from a JSON or YAML file plus command-line overrides (``volsr train``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
DEFAULT_PRESET = "small"  # the console API's default
BUDGET_FIELDS = ("steps", "epochs", "minutes")


def load_config_file(path) -> dict:
    """Read the mapping in a ``.json``, ``.yaml`` or ``.yml`` file; ValueError in one line.

    YAML is read with ``yaml.safe_load`` (plain data only) and needs PyYAML; JSON always
    works.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"{path}: a config file is .json, .yaml or .yml, not "
                         f"{suffix or '(no suffix)'}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable config file ({exc})") from None
    if suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg})") from None
    else:
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: YAML config files need PyYAML (pip install pyyaml); "
                             "or write the config as JSON") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            problem = " ".join(problem.split())
            raise ValueError(f"{path}: not valid YAML ({where}{problem})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of TrainingConfig fields (source, model, "
                         f"steps, ...), got {type(values).__name__}")
    return values


def file_model_section(values: dict) -> dict:
    """Return the ``model`` mapping of a config file (empty when absent)."""
    model = values.get("model")
    if model is None:
        return {}
    if not isinstance(model, dict):
        raise ValueError(f"model: expected a mapping (name, z_factor, network, ...), got "
                         f"{type(model).__name__}")
    return model


def _network(model: dict, family: str | None, preset: str | None) -> dict:
    """Return the network section: a preset, with the file's own fields over it.

    ``--preset`` given on the command line wins over the file's sizes (flags override
    the file); without it, the file's fields apply on top of the default preset. A
    ``--family`` other than the file's drops the file's fields, which belong to the
    other family.
    """
    from .engine.registry import network_config

    network = model.get("network")
    if network is not None and not isinstance(network, dict):
        raise ValueError(f"model.network: expected a mapping with a 'family' key, got "
                         f"{type(network).__name__}")
    network = network or {}
    file_family = network.get("family")
    chosen = family or file_family or "rcan"
    try:
        values = network_config(chosen, preset or DEFAULT_PRESET).model_dump(mode="json")
    except ValueError as exc:
        raise ValueError(f"model.network.family: {exc}") from None
    if preset is None and str(file_family or chosen).lower() == values["family"]:
        values.update({k: v for k, v in network.items() if k != "family"})
    return values


def build_training_config(file_values: dict, *, source: str, z_factor: int, name: str,
                          family: str | None = None, preset: str | None = None,
                          overrides: dict | None = None, model_config=None):
    """Return a validated TrainingConfig: the file's values, then the command line's.

    Parameters
    ----------
    file_values
        The config file's mapping (fields of TrainingConfig); may be empty.
    source, z_factor, name
        Resolved by the caller (flag, else file, else from the data).
    family, preset
        ``--family`` / ``--preset`` or None (see :func:`_network`).
    overrides
        Top-level TrainingConfig fields from flags; None values are not given. A budget
        flag given without ``steps`` (on the command line or in the file) drops the
        default step budget, so ``--minutes 30`` means thirty minutes.
    model_config
        A ModelConfig used as it is (a checkpoint's, to resume); the model arguments
        and the file's ``model`` section are then not used.

    Raises
    ------
    ValueError
        One line naming each bad field (``model.network.channels: ...``).
    """
    values = copy.deepcopy(file_values)
    if model_config is not None:
        values.update(model=model_config.model_dump(mode="json"), source=source)
        return _validated(values, file_values, overrides)
    model = dict(file_model_section(values))
    network = _network(model, family, preset)
    if source == "isotropic":
        task, dims = "isotropic", 2
    else:
        dims = model.get("spatial_dims", 3)
        task = "upsample" if isinstance(z_factor, int) and z_factor > 1 else "restore"
        if dims == 2 and task == "upsample":
            raise ValueError(
                "model.spatial_dims: a 2D network restores slice by slice (z-factor 1); to "
                "upsample z use a 3D network, or the isotropic source for one anisotropic volume"
            )
    model.update(name=name, z_factor=z_factor, task=task, spatial_dims=dims, network=network)
    values.update(model=model, source=source)
    return _validated(values, file_values, overrides)


def _validated(values: dict, file_values: dict, overrides: dict | None):
    from pydantic import ValidationError

    from .engine.config import TrainingConfig, describe_validation_error

    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    budget_given = any(k in given for k in BUDGET_FIELDS)
    if budget_given and "steps" not in given and "steps" not in file_values:
        values["steps"] = None
    values.update(given)
    try:
        return TrainingConfig.model_validate(values)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None


def checkpoint_model(folder: Path):
    """Return ``(ModelConfig, step)`` of the checkpoint beside a model folder."""
    from pydantic import ValidationError

    from .engine.config import ModelConfig, describe_validation_error
    from .engine.train import CHECKPOINT_META, checkpoint_dir_for

    meta_path = checkpoint_dir_for(folder) / CHECKPOINT_META
    if not meta_path.is_file():
        raise ValueError(f"'{folder.name}' has no checkpoint to resume from (looked in "
                         f"{meta_path.parent}); train it without --resume")
    try:
        meta = json.loads(meta_path.read_text())
        return ModelConfig.model_validate(meta["model"]), int(meta.get("step", 0))
    except ValidationError as exc:
        raise ValueError(f"the checkpoint of '{folder.name}' is unreadable "
                         f"({describe_validation_error(exc)}); train a new model") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the checkpoint of '{folder.name}' is unreadable ({exc}); train a "
                         "new model") from None
