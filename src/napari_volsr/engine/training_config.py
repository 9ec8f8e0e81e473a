"""The one builder of TrainingConfig: a config file's values, then a door's arguments."""

from __future__ import annotations

import copy

DEFAULT_FAMILY = "rcan"
DEFAULT_PRESET = "small"
BUDGET_FIELDS = ("steps", "epochs", "minutes")


class TrainingRequestError(ValueError):
    """A training request that cannot run; the message says what to change."""


def file_network(file_values: dict) -> dict:
    from .config_files import network_section

    return {k: v for k, v in network_section(file_values).items() if k != "family"}


def preset_split(values: dict) -> dict:
    """Keyword arguments of ``network_config`` for a full network mapping."""
    return {"preset": "default", **{k: v for k, v in values.items() if k != "family"}}


def network_values(family: str, preset: str | None, network: dict | None,
                    file_values: dict) -> dict:
    """The network mapping: a preset, the file's sizes over it, then ``network`` over both.

    ``preset`` given wins over the file's sizes (arguments override the file); without
    it the file's fields apply on top of the default preset. A family other than the
    file's drops the file's fields, which belong to the other family.
    """
    from .config_files import network_section
    from .registry import network_config

    from_file = network_section(file_values)
    try:
        values = network_config(family, preset or DEFAULT_PRESET).model_dump(mode="json")
    except ValueError as exc:
        raise TrainingRequestError(f"model.network.family: {exc}") from None
    if preset is None and str(from_file.get("family") or family).lower() == values["family"]:
        values.update({k: v for k, v in from_file.items() if k != "family"})
    values.update(network or {})
    return values


def build_training_config(file_values: dict | None = None, *, source: str, name: str,
                          model=None, family: str | None = None, preset: str | None = None,
                          z_factor: int = 1, spatial_dims: int | None = None,
                          network: dict | None = None, overrides: dict | None = None):
    """The one builder of TrainingConfig: file values, then arguments, validated.

    ``model`` (a ModelConfig, e.g. a checkpoint's) is used as it is; otherwise the model
    is built from the family, preset, network overrides and z-factor, and its task
    follows the source (isotropic) and the z-factor (upsample or restore).
    """
    from pydantic import ValidationError

    from .config import TrainingConfig, describe_validation_error
    from .config_files import model_section

    values = copy.deepcopy(dict(file_values or {}))
    if model is not None:
        values["model"] = model.model_dump(mode="json")
    else:
        section = dict(model_section(values))
        family = family or DEFAULT_FAMILY
        dims = 2 if source == "isotropic" else int(spatial_dims or section.get("spatial_dims", 3))
        task = ("isotropic" if source == "isotropic" else
                "upsample" if isinstance(z_factor, int) and z_factor > 1 else "restore")
        if dims == 2 and task == "upsample":
            raise TrainingRequestError(
                "a 2D network restores slice by slice (z-factor 1); to upsample z use a 3D "
                "network, or the self-supervised isotropic source for one anisotropic volume")
        section.update(name=name, z_factor=z_factor, task=task, spatial_dims=dims,
                       network=network_values(family, preset, network, values))
        values["model"] = section
    values["source"] = source
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if any(k in given for k in BUDGET_FIELDS) and "steps" not in given and "steps" not in values:
        values["steps"] = None
    values.update(given)
    try:
        return TrainingConfig.model_validate(values)
    except ValidationError as exc:
        raise TrainingRequestError(describe_validation_error(exc)) from None
