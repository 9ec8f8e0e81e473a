"""Which upsampling factors a restore uses: baselines follow the spacing, models their own."""

from __future__ import annotations

import numpy as np

from .geometry import default_z_factor, resolve_factors, validate_factors, validate_z_factor
from .interp import INTERPOLATION_MODES

BASELINES = INTERPOLATION_MODES


def is_baseline(model) -> bool:
    """Whether ``model`` names an interpolation baseline (not a trained model)."""
    return isinstance(model, str) and model in BASELINES


def _spacing_text(spacing) -> str:
    return " x ".join(f"{float(s):g}" for s in spacing)


def tuple_text(factors) -> str:
    """``x(4,1,1)``: every axis spelled out, for messages that compare factors."""
    return "x(" + ",".join(str(f) for f in factors) + ")"


def resolve_z_factor(model, z_factor=None, spacing=None) -> int | None:
    """The z-factor a restore uses when ``z_factor`` is not given (None).

    Baselines follow the voxel ``spacing`` (:func:`~.geometry.default_z_factor`; 1
    without one); a trained model uses its own factor (None is returned).

    Raises
    ------
    ValueError
        A spacing whose z / x ratio asks for more than 16 (an absurd voxel size).
    """
    if z_factor is not None:
        return z_factor
    if is_baseline(model):
        if spacing is None:
            return 1
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) >= 3 and spacing[-1] > 0:
            with np.errstate(over="ignore", divide="ignore"):
                ratio = np.float64(spacing[-3]) / np.float64(spacing[-1])
            if not np.isfinite(ratio) or ratio >= 16.5:
                raise ValueError(
                    f"the voxel spacing {_spacing_text(spacing)} asks for a z-factor of "
                    f"{ratio:.3g} (z spacing / x spacing), beyond 16: check the voxel size "
                    "the file gives, or choose a z-factor from 1 to 16"
                )
        return default_z_factor(spacing)
    return None


def resolve_restore_factors(model, z_factor=None, factors=None, spacing=None
                            ) -> tuple[int, int, int] | None:
    """The ``(fz, fy, fx)`` a restore asks for; None: a trained model's own.

    Given ``factors`` (and/or ``z_factor``, the shorthand ``(z_factor, 1, 1)``) are
    returned as one tuple. Without either, a baseline follows the spacing for z only
    (:func:`resolve_z_factor`; laterally 1).
    """
    asked = resolve_factors(z_factor, factors)
    if asked is not None or not is_baseline(model):
        return asked
    return (resolve_z_factor(model, None, spacing), 1, 1)


def check_model_factors(config, z_factor=None, factors=None) -> None:
    """Refuse factors a trained model was not trained for, naming both.

    ``factors`` must equal the model's ``(fz, fy, fx)``; ``z_factor`` alone (the doors'
    shorthand) must equal its z factor, so callers that only know z keep working.
    """
    own = tuple(config.factors)
    if factors is None and z_factor is None:
        return
    if factors is None and own[1:] == (1, 1):
        if validate_z_factor(z_factor) != own[0]:
            raise ValueError(
                f"model '{config.name}' was trained for z-factor {own[0]}, not {z_factor}; "
                f"use {own[0]} or an interpolation baseline")
        return
    asked = resolve_factors(z_factor, factors)
    if factors is None and asked[0] == own[0]:
        return  # z_factor alone speaks for z only
    if asked != own:
        raise ValueError(
            f"model '{config.name}' was trained for factors {tuple_text(own)}, not "
            f"{tuple_text(asked)}; use {tuple_text(own)} or an interpolation baseline")


def check_not_a_no_op(model: str, z_factor, spacing=None, given: bool = True) -> None:
    """Refuse interpolation that upsamples no axis: it returns the volume unchanged.

    ``z_factor``: an int (z only) or ``(fz, fy, fx)``. ``given``: the factors were asked
    for (else they came from ``spacing``, or from no spacing at all).
    """
    if any(f != 1 for f in validate_factors(z_factor)):
        return
    if given:
        why = ""
    elif spacing is None:
        why = " (no voxel spacing was given, so the z-factor is 1)"
    else:
        why = f" (the voxel spacing {_spacing_text(spacing)} needs no z-upsampling)"
    raise ValueError(
        f"{model} interpolation with z-factor 1 returns the volume unchanged{why}: nothing "
        "to do; choose a z-factor from 2 to 16, or a trained model"
    )


def axes_text(factors) -> str:
    """The upsampled axes in words: ``z``, ``y and x``, ``z, y and x`` (``z`` for none)."""
    axes = [a for a, f in zip("zyx", factors, strict=True) if f > 1] or ["z"]
    return axes[0] if len(axes) == 1 else ", ".join(axes[:-1]) + " and " + axes[-1]
