"""Training helpers shared by the Train panel and the console API (no Qt, no torch at import)."""

from __future__ import annotations

import re

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ +-]*$")
NAME_RULE = "letters, digits, spaces and . _ - +, starting with a letter or digit"


def check_model_name(name: str) -> str:
    """Return the stripped name, or raise ValueError saying what a name may hold."""
    name = str(name or "").strip()
    if not name:
        raise ValueError(f"Enter a model name ({NAME_RULE}).")
    if len(name) > 100 or not _NAME_PATTERN.match(name):
        raise ValueError(f"'{name}' is not a valid model name: use {NAME_RULE} (at most 100).")
    return name


def suggest_model_name(base: str | None, family: str) -> str:
    """``<base>-<family>``, cleaned into a valid name not yet in the library."""
    from .engine.models import library_dir

    cleaned = re.sub(r"[^A-Za-z0-9._ +-]+", "-", str(base or "")).strip(" .-_+")[:80]
    stem = f"{cleaned}-{family}" if cleaned else family
    taken = library_dir()
    name, i = stem, 2
    while (taken / name).exists():
        name, i = f"{stem}-{i}", i + 1
    return name


def pair_z_factor(raw_shape, target_shape) -> int | None:
    """Target depth / raw depth when the pair's Y, X agree and it is a whole number."""
    raw_shape, target_shape = tuple(raw_shape), tuple(target_shape)
    if len(raw_shape) != 3 or len(target_shape) != 3 or raw_shape[1:] != target_shape[1:]:
        return None
    if raw_shape[0] == 0 or target_shape[0] % raw_shape[0]:
        return None
    return target_shape[0] // raw_shape[0]


def check_pair(raw_shape, target_shape, z_factor: int, raw_name="raw", target_name="target"):
    """ValueError with the fix when a raw/target pair does not fit ``z_factor``."""
    raw_shape, target_shape = tuple(raw_shape), tuple(target_shape)
    if raw_shape[1:] != target_shape[1:]:
        raise ValueError(
            f"raw '{raw_name}' {raw_shape} and target '{target_name}' {target_shape} differ in "
            "Y/X: a pair must show the same field of view on the same pixel grid; register and "
            "crop them to the same Y, X size first"
        )
    expected = (raw_shape[0] * z_factor, *raw_shape[1:])
    if target_shape != expected:
        ratio = pair_z_factor(raw_shape, target_shape)
        hint = (f"set the z-factor to {ratio}" if ratio else
                "the target depth must be the raw depth times the z-factor")
        raise ValueError(
            f"with z-factor {z_factor} the target should be {expected}, but '{target_name}' is "
            f"{target_shape} for raw '{raw_name}' {raw_shape}: {hint}"
        )


def training_config(source: str, *, family: str = "rcan", preset: str = "small",
                    z_factor: int = 1, spatial_dims: int | None = None, name: str = "model",
                    network: dict | None = None, model=None, **overrides):
    """Build a validated TrainingConfig; problems become one ValueError naming each field.

    ``task`` follows the source and z-factor: isotropic, upsample (z-factor > 1) or
    restore. The isotropic source always trains a 2D network. A given ``model``
    (a ModelConfig, e.g. from a checkpoint) is used as it is.
    """
    from pydantic import ValidationError

    from .engine.config import ModelConfig, TrainingConfig, describe_validation_error
    from .engine.registry import network_config

    z_factor = int(z_factor)
    if source == "isotropic":
        task, dims = "isotropic", 2
    else:
        task, dims = ("upsample" if z_factor > 1 else "restore"), int(spatial_dims or 3)
    if dims == 2 and source != "isotropic" and z_factor > 1:
        raise ValueError(
            "a 2D network restores slice by slice (z-factor 1); to upsample z use a 3D network, "
            "or the self-supervised isotropic source for one anisotropic volume"
        )
    try:
        if model is not None:
            return TrainingConfig(model=model, source=source, **overrides)
        model = ModelConfig(name=name, task=task, z_factor=z_factor, spatial_dims=dims,
                            network=network_config(family, preset, **(network or {})))
        return TrainingConfig(model=model, source=source, **overrides)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None


def training_data(config, *, raws=None, targets=None, volumes=None):
    """Training pairs for ``config``, including slice-wise (2D, z-factor 1) restoration.

    The engine's paired and synthetic sources crop 3D patches only; a 2D restoration
    model trains on one-slice-thick 3D patches with the z axis dropped.
    """
    from dataclasses import replace

    from .engine import data as sources
    from .engine.train import make_training_data

    if config.model.spatial_dims == 3 or config.source == "isotropic":
        return make_training_data(config, raws=raws, targets=targets, volumes=volumes)
    patch = (1, *config.resolved_patch_shape())
    common = dict(percentiles=config.model.percentiles, n_val=config.n_val,
                  val_fraction=config.val_fraction, foreground=config.foreground,
                  seed=config.seed)
    if config.source == "paired":
        if raws is None or targets is None:
            raise ValueError("the paired source needs raw and target volumes")
        data = sources.paired_data(raws, targets, 1, patch, **common)
    else:
        if targets is None:
            raise ValueError("the synthetic source needs clean target volumes")
        data = sources.synthetic_data(targets, 1, patch, config.degradation, **common)
    sample = data._sample  # the engine's sampler; only the singleton z axis is dropped

    def sample_2d(rng):
        inp, tgt = sample(rng)
        return inp[0], tgt[0]

    summary = {**data.summary, "slice_wise": True}
    return replace(data, spatial_dims=2, patch_shape=patch[1:], summary=summary,
                   validation=[(inp[:, 0], tgt[:, 0]) for inp, tgt in data.validation],
                   _sample=sample_2d)


def refresh_restore_panels(viewer) -> int:
    """Re-read the model library in every Restore panel docked in ``viewer``."""
    window = getattr(viewer, "window", None)
    widgets = []
    try:
        widgets = list(window.dock_widgets.values())
    except Exception:  # older napari: wrapper dock widgets
        try:
            widgets = [dock.widget() for dock in window._dock_widgets.values()]
        except Exception:
            return 0
    refreshed = 0
    for widget in widgets:
        widget = getattr(widget, "_magic_widget", widget)
        refresh = getattr(widget, "refresh_models", None)
        if callable(refresh):
            try:
                refresh()
                refreshed += 1
            except RuntimeError:  # a panel whose Qt side is already gone
                continue
    return refreshed
