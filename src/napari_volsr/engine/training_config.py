"""The one builder of TrainingConfig: a config file's values, then a door's arguments."""

from __future__ import annotations

import copy

DEFAULT_FAMILY = "rcan"
# Same-shape restoration (denoising, deblurring: z-factor 1, every source but isotropic)
# trains a CARE U-Net: on the FIB-SEM volume at 30 photons, synthetic noise, 1.5
# CPU-minutes, U-Net small 2D reached 25.9 dB (1679 steps) where RCAN small 3D, the
# earlier default, made 4 steps (13.8 dB; noisy input 17.8). Blind-spot training also
# needs a network that does not add its input back, which RCAN always does. Upsampling
# keeps RCAN.
SAME_SHAPE_FAMILY = "unet"
DEFAULT_PRESET = "small"
BUDGET_FIELDS = ("steps", "epochs", "minutes")
# Same-shape restoration trains slice by slice (2D) unless the door or the file says 3:
# measured on the FIB-SEM volume at 30 photons, 1.5 CPU-minutes, U-Net small, the 2D
# network ran 1679 steps to 25.9 dB (synthetic noise; Noise2Void 24.3 dB), the 3D one at
# 16 x 32 x 32 100 steps to 24.0 dB (Noise2Void 21.4 dB): on two cores a 3D step costs
# what 10-17 2D steps do, and short budgets reward steps. Upsampling z needs 3D;
# isotropic is always 2D (planes).
SAME_SHAPE_SPATIAL_DIMS = 2


# 2.5D context for 2D same-shape models: neighbouring planes on each side as input
# channels, at the cost of the first convolution only. Measured with
# benchmarks/denoise_defaults.py (U-Net small 2D, 1.5 CPU-minutes, 0 / 1 / 2 planes):
# FIB-SEM at 30 photons, synthetic noise 25.87 / 26.59 / 26.62 dB, Noise2Void 24.56 /
# 25.34 / 25.07; ovule nuclei at 10 photons, synthetic 22.81 / 22.90 / 22.93, Noise2Void
# 20.50 / 20.68 (2: not run). One plane each side wins or ties everywhere.
DEFAULT_CONTEXT_PLANES = 1


def default_context_planes(source: str, spatial_dims: int, z_factor,
                           family: str | None = None, depth: int | None = None) -> int:
    """Context planes a model gets when neither the door nor a config file sets them.

    Only 2D same-shape models (every source but isotropic, z-factor 1) of the
    ``CONTEXT_FAMILIES`` can take them; the others get 0, never a refusal. With the
    thinnest training volume's ``depth`` known, no more than its planes allow.
    """
    if source == "isotropic" or spatial_dims != 2 or not _same_shape(z_factor):
        return 0
    if family is not None and family not in CONTEXT_FAMILIES:
        return 0
    if depth is not None:
        return max(0, min(DEFAULT_CONTEXT_PLANES, (int(depth) - 1) // 2))
    return DEFAULT_CONTEXT_PLANES


MAX_CONTEXT_PLANES = 4
# Families whose first layer is a plain convolution of the input and whose output does
# not add the whole input back, so 2c+1 planes in and one plane out is well defined
# (the U-Net adds its centre channel). RCAN's and the GAN's global residual, and the
# diffusion UNet's conditioning, assume the input and output channels correspond.
CONTEXT_FAMILIES = ("unet", "srunet")


def check_context(model, loss: str | None = None) -> None:
    """Raise ValueError when a ModelConfig's ``context_planes`` cannot work with it.

    Parameters
    ----------
    model
        The ModelConfig (its dimensionality, z-factor, task and family).
    loss
        The supervised loss it trains with, if known: ``cubic_weighted`` compares the
        input with the target voxel by voxel, which a stack of planes does not allow.
    """
    c = model.context_planes
    if not c:
        return
    if model.spatial_dims != 2 or tuple(model.factors) != (1, 1, 1) or model.task == "isotropic":
        raise ValueError(f"context_planes {c} needs a 2D same-shape model (spatial_dims 2, "
                         "factors 1, 1, 1, task restore), where neighbouring planes become "
                         "input channels")
    if model.network.family not in CONTEXT_FAMILIES:
        raise ValueError(f"context_planes {c} needs a network that takes its planes as "
                         f"channels: family {' or '.join(CONTEXT_FAMILIES)}, not "
                         f"{model.network.family}")
    if loss == "cubic_weighted":
        raise ValueError("loss 'cubic_weighted' compares the input with the target voxel by "
                         "voxel, which context planes do not allow: use mae or mse")


def _same_shape(z_factor) -> bool:
    """Whether a z-factor (None, an int, or the factors (fz, fy, fx)) upsamples nothing."""
    return z_factor in (None, 1) or (isinstance(z_factor, (tuple, list))
                                     and all(f == 1 for f in z_factor))


def default_spatial_dims(source: str, z_factor) -> int:
    """The model's dimensionality when neither the door nor a config file sets it.

    Upsampling z (``z_factor``, or the factors ``(fz, fy, fx)`` with fz above 1) trains
    in 3D; upsampling y and x alone trains 2D networks on YX planes, as EMDiffuse-r and
    SemSR do: a 3D RCAN ran about 5 s per step on this 2-core machine, which left a
    10-minute budget a hundred steps.
    """
    if source == "isotropic":
        return 2
    if isinstance(z_factor, (tuple, list)) and z_factor[0] == 1 and max(z_factor) > 1:
        return 2
    return SAME_SHAPE_SPATIAL_DIMS if _same_shape(z_factor) else 3


def check_training(config) -> None:
    """Raise ValueError when a TrainingConfig's patch, method or degradation cannot work.

    The GAN discriminator needs target patches (the patch times the network's factors)
    of ``min_target_patch`` voxels per axis; the synthetic source at factors 1 needs
    some blur or noise, or its inputs equal their targets.
    """
    from .config import GANConfig, method_kind

    model, patch = config.model, config.patch_shape
    if patch is not None:
        if len(patch) != model.spatial_dims:
            raise ValueError(f"patch_shape {patch} needs {model.spatial_dims} values for a "
                             f"{model.spatial_dims}D model")
        if any(p < 4 for p in patch):
            raise ValueError(f"patch_shape values must be >= 4, got {patch}")
    expected = method_kind(model.family)
    if config.method.kind != expected:
        raise ValueError(
            f"a {model.family} model trains with the '{expected}' method, not "
            f"'{config.method.kind}': set method.kind to '{expected}' or leave it out"
        )
    check_context(model, getattr(config.method, "loss", None))
    network = model.network
    if isinstance(network, GANConfig):
        target = tuple(p * f for p, f in zip(config.resolved_patch_shape(), model.net_factors,
                                             strict=False))
        need = network.min_target_patch
        if min(target) < need:
            raise ValueError(
                f"the GAN discriminator ({network.disc_layers} layers) needs target patches "
                f"of at least {need} voxels per axis, got {target}: enlarge "
                "patch_shape or lower network.disc_layers"
            )
    degradation = config.degradation
    if (config.source == "synthetic" and tuple(model.factors) == (1, 1, 1)
            and max(degradation.blur_sigma) == 0 and degradation.poisson_peak is None
            and max(degradation.gaussian_sigma) == 0):
        raise ValueError(
            "with z-factor 1 and no blur or noise the simulated input equals the target: "
            "set a degradation (blur_sigma, poisson_peak or gaussian_sigma) or a z-factor "
            "above 1"
        )


# Network values a source brings for a family, under the file's and the door's: N2V2
# (Hoeck et al. 2022) blur-pools and drops the top skip connection, which removes the
# checkerboard artefacts of blind-spot training. Like N2V's own U-Net it adds no input
# residual: at a blind spot the input holds the neighbours' median, so a network that
# starts as the identity already scores well there and stays one (measured: 300 steps
# on a 2D noisy volume went 16.5 -> 26.0 dB without the residual, 16.5 -> 16.5 with it).
SOURCE_NETWORK_DEFAULTS = {
    ("noise2void", "unet"): {"blur_pool": True, "top_skip": False, "residual": False},
}


class TrainingRequestError(ValueError):
    """A training request that cannot run; the message says what to change."""


def default_family(source: str, z_factor) -> str:
    """The family a request trains when neither the door nor a config file names one.

    ``z_factor`` may be the factors ``(fz, fy, fx)``: any above 1 upsamples.
    """
    if source != "isotropic" and _same_shape(z_factor):
        return SAME_SHAPE_FAMILY
    return DEFAULT_FAMILY


def file_network(file_values: dict) -> dict:
    from .config_files import network_section

    return {k: v for k, v in network_section(file_values).items() if k != "family"}


def preset_split(values: dict) -> dict:
    """Keyword arguments of ``network_config`` for a full network mapping."""
    return {"preset": "default", **{k: v for k, v in values.items() if k != "family"}}


def network_values(family: str, preset: str | None, network: dict | None,
                    file_values: dict, source: str | None = None) -> dict:
    """The network mapping: a preset, the file's sizes over it, then ``network`` over both.

    ``preset`` given wins over the file's sizes (arguments override the file); without
    it the file's fields apply on top of the default preset. A family other than the
    file's drops the file's fields, which belong to the other family. The source's own
    values (``SOURCE_NETWORK_DEFAULTS``, N2V2's for noise2void U-Nets) go on the preset.
    """
    from .config_files import network_section
    from .registry import network_config

    from_file = network_section(file_values)
    try:
        values = network_config(family, preset or DEFAULT_PRESET).model_dump(mode="json")
    except ValueError as exc:
        raise TrainingRequestError(f"model.network.family: {exc}") from None
    values.update(SOURCE_NETWORK_DEFAULTS.get((source, values["family"]), {}))
    if preset is None and str(from_file.get("family") or family).lower() == values["family"]:
        values.update({k: v for k, v in from_file.items() if k != "family"})
    values.update(network or {})
    return values


def _asked_loss(values: dict, overrides: dict) -> str | None:
    """The supervised loss a door or a file asks for (flat or in its method section)."""
    for source in (overrides, values):
        method = source.get("method")
        loss = source.get("loss") or (method.get("loss") if isinstance(method, dict) else None)
        if loss:
            return loss
    return None


def _lateral(factors, z_factor, section: dict) -> tuple[int, int]:
    """Lateral factors (fy, fx): from ``factors``, else the file's model section, else (1, 1).

    ``factors`` must agree with ``z_factor`` on z.
    """
    from .geometry import resolve_factors

    if factors is not None:
        try:
            z = z_factor if isinstance(z_factor, int) and not isinstance(z_factor, bool) else None
            return tuple(resolve_factors(z, factors)[1:])
        except ValueError as exc:
            raise TrainingRequestError(f"model.factors: {exc}") from None
    given = section.get("lateral_factors")
    if isinstance(given, (list, tuple)) and len(given) == 2:
        return tuple(given)
    return (1, 1)


def _model_values(section: dict, values: dict, overrides: dict, *, source, name, family,
                  preset, z_factor, lateral, spatial_dims, context_planes, network, depth):
    """The model section of a new model: the file's, completed by the door's arguments."""
    upsampling = (z_factor if lateral == (1, 1) else
                  (z_factor if isinstance(z_factor, int) else 1, *lateral))
    family = family or default_family(source, upsampling)
    # A patch given with 2 or 3 values says the dimensionality meant, when nothing else does.
    patch = overrides.get("patch_shape") or values.get("patch_shape")
    implied = len(patch) if isinstance(patch, (list, tuple)) and len(patch) in (2, 3) else None
    dims = 2 if source == "isotropic" else int(
        spatial_dims or section.get("spatial_dims") or implied
        or default_spatial_dims(source, upsampling))
    z_up = isinstance(z_factor, int) and z_factor > 1
    task = ("isotropic" if source == "isotropic" else
            "upsample" if z_up or lateral != (1, 1) else "restore")
    if dims == 2 and task == "upsample" and z_up:
        raise TrainingRequestError(
            "a 2D network restores slice by slice (z-factor 1); to upsample z use a 3D "
            "network, or the self-supervised isotropic source for one anisotropic volume")
    if context_planes is None:
        context_planes = section.get("context_planes")
    if context_planes is None:
        context_planes = default_context_planes(source, dims, upsampling, family, depth)
        if _asked_loss(values, overrides) == "cubic_weighted":
            context_planes = 0  # that loss needs one plane in: a default never refuses
    section.update(name=name, z_factor=z_factor, task=task, spatial_dims=dims,
                   context_planes=context_planes,
                   network=network_values(family, preset, network, values, source))
    if lateral != (1, 1) or "lateral_factors" in section:
        section["lateral_factors"] = list(lateral)
    return section


def build_training_config(file_values: dict | None = None, *, source: str, name: str,
                          model=None, family: str | None = None, preset: str | None = None,
                          z_factor: int = 1, spatial_dims: int | None = None,
                          context_planes: int | None = None, network: dict | None = None,
                          overrides: dict | None = None, depth: int | None = None,
                          factors=None):
    """The one builder of TrainingConfig: file values, then arguments, validated.

    ``model`` (a ModelConfig, e.g. a checkpoint's) is used as it is; otherwise the model
    is built from the family, preset, network overrides and z-factor (or ``factors``
    ``(fz, fy, fx)``, whose z must agree with it), and its task follows the source
    (isotropic) and the factors (upsample or restore); its dimensionality defaults to
    the source's (``default_spatial_dims``), its context planes to
    ``default_context_planes`` (at most what ``depth``, the thinnest training volume's
    planes, allows).
    """
    from pydantic import ValidationError

    from .config import TrainingConfig, describe_validation_error
    from .config_files import model_section

    values = copy.deepcopy(dict(file_values or {}))
    if model is not None:
        values["model"] = model.model_dump(mode="json")
    else:
        section = dict(model_section(values))
        if factors is not None and z_factor in (None, 1):
            z_factor = factors[0] if isinstance(factors, (list, tuple)) and factors else z_factor
        values["model"] = _model_values(
            section, values, overrides or {}, source=source, name=name, family=family,
            preset=preset, z_factor=z_factor, lateral=_lateral(factors, z_factor, section),
            spatial_dims=spatial_dims, context_planes=context_planes, network=network,
            depth=depth)
    values["source"] = source
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if any(k in given for k in BUDGET_FIELDS) and "steps" not in given and "steps" not in values:
        values["steps"] = None
    values.update(given)
    try:
        return TrainingConfig.model_validate(values)
    except ValidationError as exc:
        raise TrainingRequestError(describe_validation_error(exc)) from None
