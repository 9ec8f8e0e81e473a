"""Pydantic configs: one per model family, and the versioned model config saved with weights."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, model_serializer,
                      model_validator)

from .data.blind_spot import BlindSpotConfig, check_self_supervised
from .degrade import DEFAULT_DEGRADATION, DegradationConfig
from .training_config import MAX_CONTEXT_PLANES, check_context, check_training

# Version 2 moved the method-specific training fields into TrainingConfig.method.
CONFIG_VERSION = 2
PRESET_NAMES = ("tiny", "small", "default")

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._ +-]*$"
MODEL_NAME_MAX_LENGTH = 100
MODEL_NAME_RULE = "letters, digits, spaces and . _ - +, starting with a letter or digit"


def check_model_name(name: str) -> str:
    """Return the stripped model name, or raise ValueError saying what a name may hold.

    Parameters
    ----------
    name
        The name as typed (surrounding spaces are dropped).

    Returns
    -------
    str
        The name to use: a library folder name, never a path.
    """
    name = str(name or "").strip()
    if not name:
        raise ValueError(f"Enter a model name ({MODEL_NAME_RULE}).")
    if len(name) > MODEL_NAME_MAX_LENGTH or not re.match(MODEL_NAME_PATTERN, name):
        raise ValueError(f"'{name}' is not a valid model name: use {MODEL_NAME_RULE} "
                         f"(at most {MODEL_NAME_MAX_LENGTH}).")
    return name


# One upsampling factor of one axis (DESIGN 3).
Factor = Annotated[int, Field(ge=1, le=16)]


class StrictModel(BaseModel):
    """Unknown keys are errors; assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RCANConfig(StrictModel):
    """3D-RCAN (Chen et al. 2021): residual groups of channel-attention blocks."""

    family: Literal["rcan"] = "rcan"
    channels: int = Field(32, ge=1, le=512, description="Feature channels of every conv.")
    n_groups: int = Field(5, ge=1, le=32, description="Residual groups G.")
    n_blocks: int = Field(3, ge=1, le=32, description="Channel-attention blocks B per group.")
    reduction: int = Field(8, ge=1, le=64, description="Channel reduction r in the attention.")
    upsampling: Literal["input", "features"] = Field(
        "input", description="z-upsampling: 'input' runs on the cubic-interpolated input "
        "(3D-RCAN); 'features' runs on the input grid and shuffles sub-voxel outputs along z "
        "(z_factor times cheaper).",
    )

    @model_validator(mode="after")
    def _reduction_fits(self):
        if self.reduction > self.channels:
            raise ValueError(f"reduction ({self.reduction}) cannot exceed channels ({self.channels})")
        return self


class SRUNetConfig(StrictModel):
    """3D SR U-Net (Heinrich et al. 2017): lateral pooling only, z upsampled by transposed convs."""

    family: Literal["srunet"] = "srunet"
    widths: tuple[int, int, int] = Field(
        (32, 64, 128), description="Channels of the three levels, fine to coarse."
    )

    @model_validator(mode="after")
    def _positive(self):
        if any(w < 1 or w > 1024 for w in self.widths):
            raise ValueError(f"widths must be 1..1024, got {self.widths}")
        return self


class UNetConfig(StrictModel):
    """CARE / Noise2Void U-Net (Weigert et al. 2018): pools every axis, same-shape restoration.

    ``blur_pool=True, top_skip=False, residual=False`` is N2V2 (Hoeck et al. 2022).
    """

    family: Literal["unet"] = "unet"
    widths: tuple[int, ...] = Field(
        (32, 64, 128),
        description="Channels of the 2..4 levels, fine to coarse (the last: the bottleneck).",
    )
    residual: bool = Field(
        True, description="Learn a correction added to the (z-interpolated) input (CARE)."
    )
    blur_pool: bool = Field(False, description="Blur pooling instead of max pooling (N2V2).")
    top_skip: bool = Field(True, description="Keep the finest skip connection (N2V2 drops it).")

    @model_validator(mode="after")
    def _levels(self):
        if not 2 <= len(self.widths) <= 4:
            raise ValueError(f"widths must have 2..4 entries (one per level), got {self.widths}")
        if any(w < 1 or w > 1024 for w in self.widths):
            raise ValueError(f"widths must be 1..1024, got {self.widths}")
        if self.residual and not self.top_skip:
            raise ValueError("top_skip false (N2V2) needs residual false: without the top skip "
                             "the net never sees single voxels, so the residual would pass the "
                             "input's noise through")
        return self


class GANConfig(StrictModel):
    """ResNet generator with learned z upsampling and a PatchGAN discriminator."""

    family: Literal["gan"] = "gan"
    channels: int = Field(32, ge=1, le=512, description="Generator feature channels.")
    n_blocks: int = Field(4, ge=1, le=64, description="Generator residual blocks.")
    norm: Literal["batch", "none"] = Field(
        "batch", description="Generator normalisation; batch norm is per-voxel at inference."
    )
    disc_channels: int = Field(16, ge=1, le=512, description="Discriminator's first width.")
    disc_layers: int = Field(3, ge=1, le=6, description="Strided discriminator blocks.")

    @property
    def min_target_patch(self) -> int:
        """Smallest target patch per axis the discriminator's strided layers accept."""
        return 2 ** (self.disc_layers + 1)


class DiffusionConfig(StrictModel):
    """Conditional denoising diffusion UNet (EMDiffuse / SR3)."""

    family: Literal["diffusion"] = "diffusion"
    base_channels: int = Field(32, ge=1, le=512, description="Width of the first level.")
    channel_mults: tuple[int, ...] = Field((1, 2, 4, 8), description="Width multipliers per level.")
    num_res_blocks: int = Field(2, ge=1, le=8, description="Residual blocks per level.")
    groups: int = Field(8, ge=1, le=64, description="GroupNorm groups.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout in residual blocks.")
    attention: bool = Field(True, description="Self-attention in the bottleneck.")
    sample_steps: int = Field(50, ge=1, le=2000, description="Default DDIM steps at restore.")
    n_samples: int = Field(4, ge=1, le=64, description="Default samples (mean + std) at restore.")

    @model_validator(mode="after")
    def _groups_divide(self):
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults must be positive, got {self.channel_mults}")
        for m in self.channel_mults:
            if (self.base_channels * m) % self.groups:
                raise ValueError(
                    f"groups ({self.groups}) must divide every level width "
                    f"(base_channels * mult = {self.base_channels * m})"
                )
        return self


NetworkConfig = Annotated[
    RCANConfig | SRUNetConfig | GANConfig | DiffusionConfig | UNetConfig,
    Field(discriminator="family"),
]


class ModelConfig(StrictModel):
    """Everything needed to rebuild a trained model; saved as ``config.json``."""

    version: int = Field(CONFIG_VERSION, ge=1, description="Config format version.")
    name: str = Field(
        "model", min_length=1, max_length=MODEL_NAME_MAX_LENGTH, pattern=MODEL_NAME_PATTERN,
        description=f"Library name: {MODEL_NAME_RULE}; no path separators.",
    )
    task: Literal["restore", "upsample", "isotropic"] = Field(
        "restore",
        description="restore: same shape; upsample: z x z_factor with paired or synthetic "
        "targets; isotropic: self-supervised from the anisotropic volume (2D on XZ/YZ planes).",
    )
    spatial_dims: Literal[2, 3] = Field(3, description="2: slice-wise / plane-wise; 3: volumetric.")
    in_channels: int = Field(1, ge=1, le=16, description="Input channels of the network.")
    out_channels: int = Field(1, ge=1, le=16, description="Output channels of the network.")
    z_factor: int = Field(1, ge=1, le=16, description="z upsampling factor (1 = same shape).")
    lateral_factors: tuple[Factor, Factor] = Field(
        (1, 1), description="y and x upsampling factors (lateral super-resolution; 1, 1 = none).",
    )
    context_planes: int = Field(
        0, ge=0, le=MAX_CONTEXT_PLANES,
        description="2.5D: neighbouring z planes on each side a 2D same-shape network sees "
        "as extra input channels (0: the plane alone).",
    )
    network: NetworkConfig = Field(default_factory=RCANConfig, description="Family and sizes.")
    percentiles: tuple[float, float] = Field(
        (1.0, 99.8), description="Normalisation percentiles (low, high) mapped to 0, 1."
    )
    training: dict = Field(default_factory=dict, description="Summary: data, spacing, steps, metrics.")
    package_version: str = Field("", description="napari-volsr version that wrote the model.")

    @model_validator(mode="after")
    def _consistent(self):
        if self.version > CONFIG_VERSION:
            raise ValueError(
                f"config version {self.version} is newer than this napari-volsr understands "
                f"({CONFIG_VERSION}); update napari-volsr"
            )
        if self.task == "restore" and self.factors != (1, 1, 1):
            raise ValueError("task 'restore' needs factors (1, 1, 1); use 'upsample' for "
                             f"factors {self.factors}")
        if self.task == "isotropic" and self.spatial_dims != 2:
            raise ValueError("task 'isotropic' trains a 2D network (spatial_dims 2)")
        if self.task == "isotropic" and self.lateral_factors != (1, 1):
            raise ValueError("task 'isotropic' upsamples z only; lateral factors must be 1, 1")
        if self.spatial_dims == 2 and self.z_factor > 1 and self.lateral_factors != (1, 1):
            # A 2D network upsamples z on XZ/YZ planes or y and x on YX planes, not both.
            raise ValueError(
                f"a 2D model upsamples z (on XZ and YZ planes) or y and x (on YX planes), "
                f"not both: factors {self.factors} need spatial_dims 3, or two models "
                "chained (one for z, one for y and x)")
        check_context(self)
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        return self

    @model_serializer(mode="wrap")
    def _without_default_lateral(self, handler):
        # Models without lateral factors keep the JSON (and config hash) they had before
        # lateral factors existed.
        data = handler(self)
        if tuple(data.get("lateral_factors", ())) == (1, 1):
            data.pop("lateral_factors")
        return data

    @property
    def family(self) -> str:
        """The model family name."""
        return self.network.family

    @property
    def factors(self) -> tuple[int, int, int]:
        """Upsampling per axis (z, y, x) of the volume."""
        return (self.z_factor, *self.lateral_factors)

    @property
    def net_factors(self) -> tuple[int, ...]:
        """The network's own factors, one per its spatial axis.

        3D: the volume's ``(fz, fy, fx)``. 2D: ``(fy, fx)`` on YX planes for lateral
        super-resolution, else ``(fz, 1)`` (XZ/YZ planes, z first; DESIGN 3).
        """
        if self.spatial_dims == 3:
            return self.factors
        if self.lateral_factors != (1, 1):
            return self.lateral_factors
        return (self.z_factor, 1)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field: ``network.channels: ...``."""
    from .registry import family_names  # the registry imports this module

    # The tags pydantic inserts after a tagged union's field: network.rcan.channels.
    tags = {"network": set(family_names()), "method": set(METHOD_CONFIGS)}
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        kept = [p for i, p in enumerate(loc) if not (i and p in tags.get(loc[i - 1], ()))]
        where = ".".join(str(p) for p in kept) or "config"
        lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


DataSource = Literal["paired", "synthetic", "isotropic", "noise2void", "noise2noise"]


class SupervisedTraining(StrictModel):
    """Supervised training (RCAN, SRUNet, U-Net): the network regresses the target."""

    kind: Literal["supervised"] = "supervised"
    loss: Literal["mae", "mse", "cubic_weighted"] = Field(
        "mae", description="Pixel loss (cubic_weighted: the SR U-Net's)."
    )


class GANTraining(StrictModel):
    """Adversarial training: generator against a PatchGAN discriminator."""

    kind: Literal["gan"] = "gan"
    adversarial: Literal["vanilla", "lsgan", "wgangp"] = Field(
        "lsgan", description="Adversarial loss."
    )
    content_weight: float = Field(100.0, ge=0, description="Content (L1) weight.")
    gradient_weight: float = Field(0.0, ge=0, description="Image-gradient penalty weight.")
    d_condition: bool = Field(True, description="The discriminator also sees the input.")
    warmup_steps: int = Field(0, ge=0, description="Content-only steps before adversarial.")


class DiffusionTraining(StrictModel):
    """Denoising diffusion: noise prediction with EMA weights."""

    kind: Literal["diffusion"] = "diffusion"
    val_steps: int = Field(
        10, ge=1, le=2000, description="Sampler steps at validation and for the preview."
    )


MethodConfig = Annotated[
    SupervisedTraining | GANTraining | DiffusionTraining, Field(discriminator="kind")
]
METHOD_CONFIGS: dict[str, type[StrictModel]] = {
    "supervised": SupervisedTraining, "gan": GANTraining, "diffusion": DiffusionTraining,
}
# Version 1 kept these at the top level: field -> (method kind, field of its sub-config).
FLAT_METHOD_FIELDS = {
    "loss": ("supervised", "loss"),
    "adversarial": ("gan", "adversarial"),
    "content_weight": ("gan", "content_weight"),
    "gradient_weight": ("gan", "gradient_weight"),
    "d_condition": ("gan", "d_condition"),
    "warmup_steps": ("gan", "warmup_steps"),
    "diffusion_val_steps": ("diffusion", "val_steps"),
}


def method_kind(family_name: str) -> str:
    """The training method (``supervised``, ``gan``, ``diffusion``) of a model family."""
    from .registry import family_entry  # the registry imports this module

    return family_entry(family_name).method_config.model_fields["kind"].default


def _model_method_kind(model: Any) -> str | None:
    """The method kind of the model given: a ModelConfig, a mapping or None (the default)."""
    if isinstance(model, ModelConfig):
        return method_kind(model.family)
    if model is not None and not isinstance(model, dict):
        return None
    network = (model or {}).get("network")
    if network is None:
        network = ModelConfig.model_fields["network"].default_factory()
    name = network.get("family") if isinstance(network, dict) else getattr(network, "family", None)
    try:
        return None if name is None else method_kind(name)
    except ValueError:
        return None  # an unknown family: the model's own validation names it


def _check_unused(name: str, kind: str, field: str, value: Any) -> None:
    """Check a flat field of another family's method as version 1 did; it is then dropped."""
    try:
        METHOD_CONFIGS[kind].model_validate({field: value})
    except ValidationError as exc:
        raise ValueError(f"{name}: {exc.errors()[0]['msg']}") from None


def migrate_training_values(data: dict) -> dict:
    """Version-1 (flat) TrainingConfig values in the version-2 shape.

    ``loss``, ``adversarial``, ``warmup_steps``... move into ``method``, whose kind
    follows the model's family; flat fields of another family's method were unused in
    version 1 and are dropped once checked. Flat fields override the same fields given
    in ``method`` (command-line flags over a config file).

    Parameters
    ----------
    data
        TrainingConfig fields (version 1 or 2, or a mix of both).

    Returns
    -------
    dict
        A new mapping in the version-2 shape.
    """
    flat = {k: data[k] for k in FLAT_METHOD_FIELDS if k in data}
    out = {k: v for k, v in data.items() if k not in FLAT_METHOD_FIELDS}
    if out.get("version") == 1:
        out["version"] = CONFIG_VERSION
    method = out.get("method")
    kind = _model_method_kind(out.get("model"))
    if method is None and kind is not None:
        method = {"kind": kind}
    given_kind = method.kind if isinstance(method, BaseModel) else (
        method.get("kind", kind) if isinstance(method, dict) else None)
    merged = {}
    for name, value in flat.items():
        flat_kind, field = FLAT_METHOD_FIELDS[name]
        if flat_kind == given_kind:
            merged[field] = value
        else:
            _check_unused(name, flat_kind, field, value)
    if isinstance(method, BaseModel) and merged:
        method = method.model_dump()
    if isinstance(method, dict):
        out["method"] = {"kind": given_kind, **method, **merged} if given_kind else method
    elif method is not None:
        out["method"] = method  # a sub-config as it is, or something to refuse
    return out


class TrainingConfig(StrictModel):
    """How to train a model: data source, patches, budget, optimisation, checkpoints."""

    version: int = Field(CONFIG_VERSION, ge=1, description="Config format version.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="What to train.")
    source: DataSource = Field(
        "paired",
        description="paired: raw + target volumes; synthetic: targets degraded on the fly; "
        "isotropic: self-supervised from the anisotropic volume alone; noise2void: "
        "denoising from the noisy volume(s) alone (blind spots); noise2noise: denoising "
        "from two or more acquisitions of the same sample.",
    )
    blind_spot: BlindSpotConfig = Field(
        default_factory=BlindSpotConfig,
        description="Blind-spot masking of the noise2void source (unused by the others).",
    )
    degradation: DegradationConfig = Field(
        default_factory=lambda: DegradationConfig(),
        description="Degradation ranges for the synthetic and isotropic sources; "
        "default: the source's (degrade.default_degradation).",
    )
    patch_shape: tuple[int, ...] | None = Field(
        None, description="Patch on the input grid (z, y, x) or (y, x); None: per task default."
    )
    batch_size: int = Field(4, ge=1, le=512, description="Patches per step.")
    steps: int | None = Field(1000, ge=1, description="Step budget (None: no step limit).")
    epochs: float | None = Field(
        None, gt=0, description="Epoch budget: one epoch sees the training region's voxels once."
    )
    minutes: float | None = Field(None, gt=0, description="Wall-clock budget in minutes.")
    learning_rate: float | None = Field(
        None, gt=0, lt=1, description="Adam learning rate; None: the family's default."
    )
    lr_decay: Literal["quarters", "cosine", "none"] = Field(
        "quarters",
        description="quarters: halve the learning rate every quarter of the budget (steps or "
        "time); cosine: anneal it to zero over the budget.",
    )
    method: MethodConfig = Field(
        default_factory=SupervisedTraining,
        description="The family's training method and its settings (default: the family's).",
    )
    validate_every: int = Field(50, ge=1, description="Steps between validations.")
    checkpoint_every: int = Field(500, ge=1, description="Steps between checkpoints.")
    n_val: int = Field(
        8, ge=0, le=512,
        description="Fixed validation patches (0: none, for volumes too small to hold them apart).",
    )
    val_fraction: float = Field(0.1, gt=0, lt=0.9, description="Share of each volume kept for validation.")
    foreground: float = Field(
        0.0, ge=0, le=1, description="Minimum share of bright voxels in a patch (0: keep all)."
    )
    seed: int = Field(0, ge=0, description="Seed for weights, patches and noise.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16/fp16 autocast on CUDA, fp32 on CPUs."
    )
    prefetch: int = Field(2, ge=0, le=16, description="Batches prepared ahead in a thread.")
    tensorboard: bool = Field(
        False, description="Also write a TensorBoard event log (history scalars, validation and "
        "preview images) into the model folder's tensorboard/ (needs the tensorboard package).")

    @model_validator(mode="before")
    @classmethod
    def _version_1(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = migrate_training_values(data)
        if "degradation" not in data:  # the source's default ranges, defined once
            source = data.get("source", cls.model_fields["source"].default)
            data["degradation"] = DEFAULT_DEGRADATION.get(source, {})
        return data

    @model_validator(mode="after")
    def _budget_and_patch(self):
        if self.steps is None and self.epochs is None and self.minutes is None:
            raise ValueError("set at least one budget: steps, epochs or minutes")
        if self.version > CONFIG_VERSION:
            raise ValueError(f"config version {self.version} is newer than this napari-volsr")
        if self.source == "isotropic" and self.model.task != "isotropic":
            raise ValueError("source 'isotropic' trains a model with task 'isotropic'")
        check_self_supervised(self)
        check_training(self)  # patch, method, context, GAN patch, degradation
        return self

    def resolved_patch_shape(self) -> tuple[int, ...]:
        """The patch shape on the input grid, with a default per source and dimensionality."""
        from .data.patches import default_patch_shape

        if self.patch_shape is not None:
            return tuple(self.patch_shape)
        return default_patch_shape(self.source, self.model.spatial_dims, self.model.factors)
