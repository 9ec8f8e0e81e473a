"""Pydantic configs: one per model family, and the versioned model config saved with weights."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_VERSION = 1
PRESET_NAMES = ("tiny", "small", "default")


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
    RCANConfig | SRUNetConfig | GANConfig | DiffusionConfig, Field(discriminator="family")
]


class ModelConfig(StrictModel):
    """Everything needed to rebuild a trained model; saved as ``config.json``."""

    version: int = Field(CONFIG_VERSION, ge=1, description="Config format version.")
    name: str = Field(
        "model", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ +-]*$",
        description="Library name: letters, digits, '.', '_', '-', '+', spaces; no path separators.",
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
        if self.task == "restore" and self.z_factor != 1:
            raise ValueError("task 'restore' needs z_factor 1; use 'upsample' for z_factor > 1")
        if self.task == "isotropic" and self.spatial_dims != 2:
            raise ValueError("task 'isotropic' trains a 2D network (spatial_dims 2)")
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        return self

    @property
    def family(self) -> str:
        """The model family name."""
        return self.network.family


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field: ``network.channels: ...``."""
    families = {"rcan", "srunet", "gan", "diffusion"}
    lines = []
    for err in exc.errors():
        # Drop the union tag pydantic inserts: network.rcan.channels -> network.channels.
        loc = [p for i, p in enumerate(err["loc"]) if not (i and p in families)]
        where = ".".join(str(p) for p in loc) or "config"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)
