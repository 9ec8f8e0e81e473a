"""A training request's upsampling factors: given, inferred from a pair, checked per source."""

from __future__ import annotations

from .data.blind_spot import SELF_SUPERVISED_SOURCES
from .geometry import MAX_FACTOR, describe_factors, resolve_factors
from .training_config import TrainingRequestError


def pair_z_factor(raw_shape, target_shape) -> int | None:
    """Target depth / raw depth when the pair's Y, X agree and it is a whole number."""
    raw_shape, target_shape = tuple(raw_shape), tuple(target_shape)
    if len(raw_shape) != 3 or len(target_shape) != 3 or raw_shape[1:] != target_shape[1:]:
        return None
    if raw_shape[0] == 0 or target_shape[0] % raw_shape[0]:
        return None
    return target_shape[0] // raw_shape[0]


def pair_factors(raw_shape, target_shape) -> tuple[int, int, int] | None:
    """Per-axis ``target / raw`` ratios ``(fz, fy, fx)`` when each is a whole number 1..16.

    None when the shapes are not both ZYX, or an axis of the target is not a whole
    multiple (up to 16) of the raw's.
    """
    raw_shape, target_shape = tuple(raw_shape), tuple(target_shape)
    if len(raw_shape) != 3 or len(target_shape) != 3:
        return None
    ratios = []
    for raw, target in zip(raw_shape, target_shape, strict=True):
        if raw == 0 or target % raw or not 1 <= target // raw <= MAX_FACTOR:
            return None
        ratios.append(target // raw)
    return tuple(ratios)


def _named(factors: tuple[int, int, int]) -> str:
    """``z-factor 2`` for z alone, ``factors (1, 2, 2)`` otherwise (z, y, x)."""
    if factors[1:] == (1, 1):
        return f"z-factor {factors[0]}"
    return f"factors {describe_factors(factors)[1:].replace(',', ', ')}"


def check_pair(raw_shape, target_shape, z_factor, raw_name="raw", target_name="target"):
    """Raise TrainingRequestError with the fix when a pair does not fit its factors.

    ``z_factor`` is the z-factor (an int) or the factors ``(fz, fy, fx)``: the target
    must be the raw's shape times them, axis by axis.
    """
    raw_shape, target_shape = tuple(raw_shape), tuple(target_shape)
    factors = resolve_factors(factors=z_factor) if isinstance(z_factor, (tuple, list)) \
        else (int(z_factor), 1, 1)
    ratio = pair_factors(raw_shape, target_shape)
    lateral_pair = ratio is not None and ratio[1:] != (1, 1)
    if factors[1:] == (1, 1) and raw_shape[1:] != target_shape[1:] and not lateral_pair:
        raise TrainingRequestError(
            f"raw '{raw_name}' {raw_shape} and target '{target_name}' {target_shape} differ in "
            "Y/X: a pair must show the same field of view on the same pixel grid; register and "
            "crop them to the same Y, X size first")
    expected = tuple(n * f for n, f in zip(raw_shape, factors, strict=True))
    if target_shape != expected:
        if ratio is not None:
            hint = (f"set the z-factor to {ratio[0]}" if ratio[1:] == (1, 1) else
                    f"set the factors to {','.join(map(str, ratio))} (z, y, x)")
        elif factors[1:] == (1, 1):
            hint = "the target depth must be the raw depth times the z-factor"
        else:
            hint = "each axis of the target must be the raw's times its factor (z, y, x)"
        raise TrainingRequestError(
            f"with {_named(factors)} the target should be {expected}, but '{target_name}' is "
            f"{target_shape} for raw '{raw_name}' {raw_shape}: {hint}")


def _check_given(source: str, factors: tuple[int, int, int]) -> None:
    """Refuse factors the source cannot train, saying what it can."""
    if source in SELF_SUPERVISED_SOURCES and factors != (1, 1, 1):
        if factors[1:] == (1, 1):
            raise TrainingRequestError(
                f"the {source} source denoises on the volume's own grid, so its z-factor is 1 "
                f"(got {factors[0]}): leave the z-factor unset, or upsample z with the "
                "isotropic source")
        raise TrainingRequestError(
            f"the {source} source denoises on the volume's own grid, so its factors are 1, 1, "
            f"1 (got {','.join(map(str, factors))}): leave them unset, or train lateral "
            "super-resolution with the paired or synthetic source")
    if source == "isotropic" and factors[1:] != (1, 1):
        raise TrainingRequestError(
            "the isotropic source upsamples z only (its lateral planes are the reference), "
            f"not factors {','.join(map(str, factors))}: set the z-factor alone, or train "
            "lateral super-resolution with the paired or synthetic source")
    if source == "isotropic" and factors[0] < 2:
        raise TrainingRequestError("z-factor 1 leaves nothing to make isotropic: set it to "
                                   "the volume's z spacing / x spacing")


def resolve_request_factors(source: str, inputs: dict, z_factor=None,
                            factors=None) -> tuple[int, int, int]:
    """The factors given (``z_factor`` and/or ``factors``), else those the data implies.

    Implied: a pair's per-axis shape ratios (paired), the z/x spacing ratio (isotropic),
    else ``(1, 1, 1)``.

    Raises
    ------
    TrainingRequestError
        For malformed or disagreeing factors, factors a source cannot train, a pair
        whose shapes are no whole multiple of each other, or an isotropic volume
        without a usable spacing.
    """
    if z_factor is not None and (isinstance(z_factor, bool) or not isinstance(z_factor, int)):
        raise TrainingRequestError(f"model.z_factor: expected an integer from 1 to 16, got "
                                   f"{z_factor!r}")
    if factors is None:  # a z-factor out of range is the model config's to name
        given = None if z_factor is None else (z_factor, 1, 1)
    else:
        try:
            given = resolve_factors(z_factor, factors)
        except ValueError as exc:
            raise TrainingRequestError(f"model.factors: {exc}") from None
    if given is not None:
        _check_given(source, given)
        return given
    if source == "paired":
        raw, target = inputs["raw"][0], inputs["target"][0]
        ratio = pair_factors(raw.shape, target.shape)
        if ratio is None:
            check_pair(raw.shape, target.shape, 1, raw.name or "raw", target.name or "target")
        return ratio
    if source == "isotropic":
        return (_isotropic_z_factor(inputs["volume"][0]), 1, 1)
    return (1, 1, 1)


def _isotropic_z_factor(volume) -> int:
    from .geometry import default_z_factor

    label = volume.name or "the volume"
    if volume.spacing is None:
        raise TrainingRequestError(f"{label} has no voxel spacing: set the z-factor, the "
                                   "ratio of z spacing to x spacing")
    factor = default_z_factor(volume.spacing)
    if factor < 2:
        spacing = " x ".join(f"{s:g}" for s in volume.spacing)
        raise TrainingRequestError(f"{label} looks isotropic (spacing {spacing}): set the "
                                   "z-factor, the ratio of z spacing to x spacing")
    return factor
