"""Resolve what restores a volume: a baseline name now, saved models later."""

from __future__ import annotations

from .interp import INTERPOLATION_MODES
from .predict import InterpolationRestorer, Restorer, validate_z_factor

BASELINES = INTERPOLATION_MODES


def list_restorers() -> list[str]:
    """Names accepted by :func:`get_restorer`."""
    return list(BASELINES)


def get_restorer(model: str, z_factor: int | None = None) -> Restorer:
    """The restorer called ``model`` for ``z_factor`` (default 1).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or a bad z-factor.
    """
    z_factor = validate_z_factor(1 if z_factor is None else z_factor)
    if model in BASELINES:
        return InterpolationRestorer(model, z_factor)
    raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(list_restorers())}")
