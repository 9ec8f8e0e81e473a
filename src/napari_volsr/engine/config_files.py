"""TrainingConfig files: a JSON or YAML mapping of TrainingConfig fields."""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def load_config_file(path) -> dict:
    """Read the mapping in a ``.json``, ``.yaml`` or ``.yml`` file.

    YAML is read with ``yaml.safe_load`` (plain data only) and needs PyYAML; JSON always
    works.

    Raises
    ------
    ValueError
        One line naming the file and what is wrong with it.
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
    values = _parse_json(path, text) if suffix == ".json" else _parse_yaml(path, text)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of TrainingConfig fields (source, model, "
                         f"steps, ...), got {type(values).__name__}")
    return values


def _parse_json(path: Path, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg})") from None


def _parse_yaml(path: Path, text: str):
    try:
        import yaml
    except ImportError:
        raise ValueError(f"{path}: YAML config files need PyYAML (pip install pyyaml); "
                         "or write the config as JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = " ".join((getattr(exc, "problem", None) or str(exc)).split())
        raise ValueError(f"{path}: not valid YAML ({where}{problem})") from None


def _mapping(value, where: str, holds: str) -> dict:
    """``value`` if it is a mapping, {} if absent; ValueError naming ``where`` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping ({holds}), got {type(value).__name__}")
    return value


def model_section(values: dict) -> dict:
    """Return the ``model`` mapping of a config file's values (empty when absent)."""
    return _mapping(values.get("model"), "model", "name, z_factor, network, ...")


def network_section(values: dict) -> dict:
    """Return the ``model.network`` mapping of a config file's values (empty when absent)."""
    return _mapping(model_section(values).get("network"), "model.network",
                    "with a 'family' key")
