"""What the Train panel fills in before the user does: the data source, its layers, the patch.

The rules themselves are the engine's (``pair_factors``, ``default_z_factor``,
``fit_patch_shape``); this module only applies them to the layers that are open.
``z_factor`` arguments here take the factors ``(fz, fy, fx)`` too, as the engine's
defaults do.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# Layer names that say which of two same-shaped layers is the degraded one.
RAW_HINT = re.compile(r"raw|noisy|noise|low|input|degraded|lr\b", re.IGNORECASE)
TARGET_HINT = re.compile(r"target|clean|gt\b|ground|truth|high|hr\b|good", re.IGNORECASE)


@dataclass(frozen=True)
class DataChoice:
    """A source and the layers it reads (None where the source does not read that role)."""

    source: str
    raw: object = None
    target: object = None
    volume: object = None


def layer_shape(layer) -> tuple[int, ...]:
    """The shape of an image layer's full-resolution data."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return tuple(int(n) for n in data.shape)


def _volumes(layers) -> list:
    """3D image layers that are data: not a restored result or preview of this plugin."""
    return [layer for layer in layers if len(layer_shape(layer)) == 3
            and "volsr" not in getattr(layer, "metadata", {})]


def _ordered(a, b, layers: list) -> tuple:
    """(raw, target) of two layers with matching shapes: the smaller one is the raw;
    at equal shapes, names decide (``noisy`` / ``clean``...), then the order opened."""
    from ..engine.training_request import pair_factors

    if pair_factors(layer_shape(a), layer_shape(b)) not in (None, (1, 1, 1)):
        return a, b
    if pair_factors(layer_shape(b), layer_shape(a)) not in (None, (1, 1, 1)):
        return b, a
    score = {layer: bool(RAW_HINT.search(layer.name)) - bool(TARGET_HINT.search(layer.name))
             for layer in (a, b)}
    if score[a] != score[b]:
        return (a, b) if score[a] > score[b] else (b, a)
    return (a, b) if layers.index(a) < layers.index(b) else (b, a)


def _pair(volumes: list) -> tuple | None:
    """The most recently opened two volumes that make a training pair."""
    from ..engine.training_request import pair_factors

    for i in range(len(volumes) - 1, 0, -1):
        for j in range(i - 1, -1, -1):
            a, b = volumes[j], volumes[i]
            if pair_factors(layer_shape(a), layer_shape(b)) or \
                    pair_factors(layer_shape(b), layer_shape(a)):
                return _ordered(a, b, volumes)
    return None


def choose_data(layers, selection=()) -> DataChoice | None:
    """The source the open layers suggest, and its layers.

    Two layers of matching shapes (each axis of one equal to the other's or a whole
    multiple of it) train as a pair (raw: the smaller, or the one named like a raw
    acquisition); else one
    anisotropic layer (z spacing a multiple of x) trains self-supervised isotropic, and
    one isotropic layer trains on synthetic degradation. The selected layers are
    considered first; restored results are never proposed. None when no 3D image
    layer is open.
    """
    from ..engine.geometry import default_z_factor

    volumes = _volumes(layers)
    if not volumes:
        return None
    selected = [layer for layer in _volumes(selection) if layer in volumes]
    pair = _pair(selected) if len(selected) >= 2 else None
    pair = pair or _pair(volumes)
    if pair is not None:
        return DataChoice("paired", raw=pair[0], target=pair[1])
    layer = (selected or volumes)[-1]
    if default_z_factor(layer.scale) > 1:
        return DataChoice("isotropic", volume=layer)
    return DataChoice("synthetic", target=layer)


def acquisition_group(layers, selection=()) -> list:
    """Layers to propose as Noise2Noise acquisitions: 3D volumes that share one shape.

    The selected layers first, then all; the group of the most recently opened layer
    that has a partner. Empty when no two volumes share a shape.
    """
    volumes = _volumes(layers)
    selected = [layer for layer in _volumes(selection) if layer in volumes]
    for pool in (selected, volumes):
        for layer in reversed(pool):
            group = [other for other in pool if layer_shape(other) == layer_shape(layer)]
            if len(group) >= 2:
                return group
    return []


def _model_factors(source: str, z_factor) -> dict:
    """ModelConfig's task, ``z_factor`` and ``lateral_factors`` for an int or (fz, fy, fx)."""
    from ..engine.geometry import validate_factors

    factors = validate_factors(z_factor)
    task = ("isotropic" if source == "isotropic" else
            "restore" if factors == (1, 1, 1) else "upsample")
    return dict(task=task, z_factor=factors[0], lateral_factors=factors[1:])


@functools.lru_cache(maxsize=64)
def network_limits(family: str, preset: str, spatial_dims: int, z_factor,
                   isotropic: bool) -> tuple[tuple[int, ...], int]:
    """(input size multiple per patch axis, smallest target patch) of a family's network."""
    from ..engine.config import ModelConfig
    from ..engine.registry import network_config
    from ..engine.training_request import network_divisor

    model = ModelConfig(name="patch-fit", spatial_dims=spatial_dims,
                        network=network_config(family, preset),
                        **_model_factors("isotropic" if isotropic else "", z_factor))
    return network_divisor(model), int(getattr(model.network, "min_target_patch", 1))


@functools.lru_cache(maxsize=64)
def takes_context(source: str, spatial_dims: int, z_factor, family: str) -> bool:
    """Whether a model of these settings can see neighbouring z planes (2.5D).

    The engine's rule, not a copy: a ModelConfig with one plane each side is built and
    ``check_context`` (run by its validator) accepts or refuses it.
    """
    from ..engine.config import ModelConfig
    from ..engine.registry import network_config

    try:
        ModelConfig(name="context-check", spatial_dims=spatial_dims, context_planes=1,
                    network=network_config(family, "tiny"), **_model_factors(source, z_factor))
    except ValueError:  # pydantic's ValidationError included
        return False
    return True


def fitted_patch(source: str, spatial_dims: int, z_factor, family: str, preset: str,
                 shape: tuple | None, val_fraction: float):
    """The engine's default patch for a volume of ``shape`` (a ``PatchFit``).

    The same call ``resolve_training`` makes when no patch is given, so the boxes show
    the patch training will use. Settings the engine refuses (or no volume yet) give
    the unfitted default; Start then says what is wrong.
    """
    from ..engine.config import TrainingConfig
    from ..engine.data.patches import PatchFit, PatchFitError, default_patch_shape, fit_patch_shape

    from ..engine.geometry import validate_factors

    dims = 2 if source == "isotropic" else spatial_dims
    factors = validate_factors(z_factor)
    default = PatchFit(default_patch_shape(source, dims, factors))
    if not shape or len(shape) != 3:
        return default
    try:
        divisor, min_target = network_limits(family, preset, dims, factors,
                                             source == "isotropic")
        return fit_patch_shape(source, dims, factors, [shape], divisor=divisor,
                               min_target=min_target,
                               n_val=TrainingConfig.model_fields["n_val"].default,
                               val_fraction=val_fraction)
    except (PatchFitError, ValueError):
        return default
