"""Parsers for the ``volsr`` options that click's types do not cover, and output naming."""

from __future__ import annotations

from pathlib import Path

import click

from ..engine.io import format_suffix


def _int_tuple(text: str, n: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected {n} integers like 32,128,128, got {text!r}",
                                 param_hint=name) from None
    if len(values) == 1:
        values = values * n
    if len(values) != n or any(v < minimum for v in values):
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise click.BadParameter(f"expected {n} integers {kind}, got {text!r}", param_hint=name)
    return values


def _z(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter(f"expected an integer 1..16 or 'auto', got {text!r}",
                                 param_hint="--z-factor") from None
    if not 1 <= value <= 16:
        raise click.BadParameter(f"must be from 1 to 16, got {value}", param_hint="--z-factor")
    return value


def _factors(text: str | None) -> tuple[int, int, int] | None:
    """``--factors Z,Y,X``: per-axis upsampling, three integers 1..16 (``1,2,2``)."""
    if text is None:
        return None
    from ..engine.geometry import validate_factors

    try:
        return validate_factors(tuple(int(v) for v in text.replace("x", ",").split(",")))
    except ValueError:
        raise click.BadParameter(f"expected three integers from 1 to 16 as Z,Y,X (e.g. 1,2,2 "
                                 f"doubles y and x), got {text!r}",
                                 param_hint="--factors") from None


def _job_factors(z_factor: int | None, factors: tuple[int, int, int] | None) -> dict:
    """The engine's factor keywords for ``--z-factor`` and ``--factors`` (one line if they
    disagree): ``z_factor`` as today, plus ``factors`` only when it was given."""
    if factors is None:
        return {"z_factor": z_factor}
    if z_factor is not None and z_factor != factors[0]:
        z, y, x = factors
        raise click.UsageError(f"--z-factor {z_factor} disagrees with --factors {z},{y},{x} "
                               f"(z x{z}): give one of them")
    return {"z_factor": factors[0], "factors": factors}


def _percentiles(text: str | None) -> tuple[float, float] | None:
    if text is None:  # the model's own (interpolation: 1,99.8)
        return None
    try:
        low, high = (float(p) for p in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected two numbers like 1,99.8, got {text!r}",
                                 param_hint="--percentiles") from None
    return low, high


def _patch_shape(text: str | None) -> tuple[int, ...] | None:
    """``--patch``: Z,Y,X, or Y,X for 2D isotropic training; one number means a cube."""
    if text is None:
        return None
    n = len(text.replace("x", ",").split(","))
    return _int_tuple(text, n if n in (2, 3) else 3, "--patch")


def _base_name(path: Path) -> str:
    """File name without its format suffix: ``a.ome.tif`` -> ``a``."""
    suffix = format_suffix(path)
    name = path.name.rstrip("/")
    return name[: len(name) - len(suffix)] if suffix else name


def _suffix_as_written(path: Path) -> str:
    """The format suffix in the case the name spells it: ``A.TIF`` -> ``.TIF``."""
    return path.name.rstrip("/")[len(_base_name(path)):]
