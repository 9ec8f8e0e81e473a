"""Noise-predicting UNet for conditional diffusion (after SR3, Palette and EMDiffuse)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from napari_volsr.engine.nets._common import net_factors
from napari_volsr.engine.nets.blocks import conv

#: Size keyword sets. "default" is DESIGN 4 (widths 32*[1, 2, 4, 8], two residual
#: blocks per level); "tiny" (a few thousand parameters in 2D) is for tests and CPU demos.
PRESETS: dict[str, dict] = {
    "tiny": {
        "base_channels": 8,
        "channel_mults": (1, 2),
        "num_res_blocks": 1,
        "groups": 4,
    },
    "small": {
        "base_channels": 16,
        "channel_mults": (1, 2, 4),
        "num_res_blocks": 1,
        "groups": 8,
    },
    "default": {
        "base_channels": 32,
        "channel_mults": (1, 2, 4, 8),
        "num_res_blocks": 2,
        "groups": 8,
    },
}

# Continuous noise levels sqrt(alpha_bar) live in (0, 1]; the sinusoidal embedding is
# applied to NOISE_LEVEL_SCALE * level so that neighbouring levels of a 2000-step schedule
# differ by a usable phase (WaveGrad, Chen et al. 2021, scale their level the same way).
NOISE_LEVEL_SCALE = 1000.0


def group_norm(groups: int, channels: int) -> nn.GroupNorm:
    """GroupNorm, which is dimension-agnostic, so one factory serves 2D and 3D."""
    return nn.GroupNorm(groups, channels)


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0):
    """Transformer-style sin/cos features of a continuous scalar per batch item.

    Parameters
    ----------
    values
        (B,) float tensor.
    dim
        Number of features; an odd ``dim`` gets one zero feature appended.
    max_period
        Longest wavelength (Vaswani et al. 2017).

    Returns
    -------
    torch.Tensor
        (B, dim) embedding in ``values``' dtype.
    """
    half = dim // 2
    exponent = torch.arange(half, device=values.device, dtype=torch.float32) / max(half, 1)
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = values.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb.to(values.dtype if values.is_floating_point() else torch.float32)


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with FiLM scale-shift from the noise embedding.

    The scale-shift form ``norm(h) * (1 + scale) + shift`` is the one of Dhariwal and
    Nichol (2021) and SR3; it lets the noise level modulate every channel.
    """

    def __init__(self, spatial_dims, in_ch, out_ch, emb_dim, groups, dropout):
        super().__init__()
        self.norm1 = group_norm(groups, in_ch)
        self.conv1 = conv(spatial_dims, in_ch, out_ch, 3)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.norm2 = group_norm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(spatial_dims, out_ch, out_ch, 3)
        self.skip = conv(spatial_dims, in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` (B, C, *S) given the noise embedding (B, E)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb).chunk(2, dim=1)
        expand = (...,) + (None,) * (h.ndim - 2)
        h = self.norm2(h) * (1 + scale[expand]) + shift[expand]
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over all voxels of a feature map, with a residual."""

    def __init__(self, spatial_dims, channels, groups, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(groups, channels)
        self.qkv = conv(spatial_dims, channels, 3 * channels, 1)
        self.proj = conv(spatial_dims, channels, channels, 1)
        # Zero-init: the block starts as the identity, as in the DDPM reference models.
        zero_init(self.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over all voxels of ``x`` (B, C, *S)."""
        b, c = x.shape[:2]
        spatial = x.shape[2:]
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, -1)
        # (B, heads, voxels, head_channels) for scaled_dot_product_attention. Contiguous,
        # so that the fused (flash) kernel runs: on strided views PyTorch falls back to
        # the math path, which stores the voxels x voxels matrix (10 GiB for a 3D block
        # of 96x128x192 voxels) and is 4x slower on the CPU.
        q, k, v = (qkv[:, i].transpose(-1, -2).contiguous() for i in range(3))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, *spatial)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Strided 3x3 convolution halving every spatial axis."""

    def __init__(self, spatial_dims, channels):
        super().__init__()
        self.conv = conv(spatial_dims, channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halve every spatial axis of ``x``."""
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling of every spatial axis, then a 3x3 convolution.

    Resize-then-convolve avoids the checkerboard artefacts of transposed convolutions
    (Odena et al., Distill 2016).
    """

    def __init__(self, spatial_dims, channels):
        super().__init__()
        self.conv = conv(spatial_dims, channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Double every spatial axis of ``x``."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def zero_init(module: nn.Module) -> None:
    """Set every parameter of ``module`` to zero."""
    for p in module.parameters():
        nn.init.zeros_(p)


def _num_heads(channels: int, head_channels: int = 32) -> int:
    heads = max(1, channels // head_channels)
    while channels % heads:
        heads -= 1
    return heads


def conv_receptive_radius(channel_mults: Sequence[int], num_res_blocks: int) -> int:
    """Receptive-field radius of the convolutional path, in output voxels.

    Follows the deepest path (init conv, encoder, bottleneck, decoder, final conv), adding
    the kernel radius times the voxel spacing of the level each 3x3 convolution runs at.
    Attention is ignored here (it sees the whole block).
    """
    levels = len(channel_mults)
    radius, spacing = 1, 1  # init conv
    for level in range(levels):
        radius += 2 * num_res_blocks * spacing
        if level < levels - 1:
            radius += spacing  # strided conv reads +-1 voxel at the finer spacing
            spacing *= 2
    radius += 4 * spacing  # two bottleneck residual blocks
    for level in reversed(range(levels)):
        radius += 2 * (num_res_blocks + 1) * spacing
        if level > 0:
            spacing //= 2
            radius += 2 * spacing  # nearest upsampling (half a coarse voxel) + its conv
    return radius + 1  # final conv


class DiffusionUNet(nn.Module):
    """UNet that predicts the noise in a noisy target, given the degraded input.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels
        Channels of the condition (the degraded input, already on the output grid).
    out_channels
        Channels of the target, hence of the noisy input and the predicted noise.
    z_factor
        Upsampling factor of the first spatial axis (1..16; shorthand for ``factors``).
        The UNet itself is same-shape; the factors are stored for the method and for
        :attr:`halo` and :attr:`divisor`, which are expressed in input voxels.
    base_channels
        Width of the first level.
    channel_mults
        Width multipliers per level; the grid is halved between levels.
    num_res_blocks
        Residual blocks per level in the encoder (the decoder has one more).
    groups
        GroupNorm groups; every level width must be divisible by it.
    dropout
        Dropout probability inside residual blocks.
    attention
        Self-attention in the bottleneck.
    factors
        Upsampling factor per spatial axis, 1..16 each; takes precedence over ``z_factor``.

    Attributes
    ----------
    factors : tuple of int
        Upsampling factor per spatial axis (``z_factor`` is the first).
    output_divisor : tuple of int
        Every spatial axis of the output grid must be a multiple of this.
    divisor : tuple of int
        The same constraint for the degraded input: along each axis ``d // gcd(d, f)``
        for its factor ``f``, so that ``size * f`` is a multiple of ``d``.
    receptive_radius : int
        Receptive-field radius of the convolutional path, in output voxels.
    output_halo : tuple of int
        Practical halo in output voxels: ``min(receptive_radius, 4 * 2**levels)``.
        With bottleneck attention the true receptive field is the whole block, and
        the convolutional radius of the default preset (about 200 voxels) is far larger
        than the region that carries weight (the effective receptive field is much
        smaller, Luo et al. 2016). Eight bottleneck voxels of context per side is what
        the tiler keeps; its blending hides what remains.
    halo : tuple of int
        :attr:`output_halo` in input voxels (each axis divided by its factor, rounded
        up).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        z_factor: int = 1,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        groups: int = 8,
        dropout: float = 0.1,
        attention: bool = True,
        factors: Sequence[int] | None = None,
    ):
        super().__init__()
        _validate(spatial_dims, in_channels, out_channels, z_factor, base_channels,
                  channel_mults, num_res_blocks, groups, dropout)
        self.factors = net_factors(spatial_dims, int(z_factor), factors)
        channel_mults = tuple(int(m) for m in channel_mults)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.z_factor = self.factors[0]
        self.base_channels = base_channels
        self.channel_mults = channel_mults
        self.num_res_blocks = num_res_blocks
        self.groups = groups
        self.dropout = dropout
        self.attention = attention
        self._set_geometry()

        sd = spatial_dims
        emb_dim = 4 * base_channels
        self.noise_mlp = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.init_conv = conv(sd, out_channels + in_channels, base_channels, 3)
        # Modules are created in this order so that a seed gives the same weights.
        widths = [base_channels * m for m in channel_mults]
        self.down, skip_widths = self._encoder(widths, emb_dim)
        ch = widths[-1]
        self.mid_block1 = ResidualBlock(sd, ch, ch, emb_dim, groups, dropout)
        self.mid_attention = (
            SelfAttention(sd, ch, groups, _num_heads(ch)) if attention else nn.Identity()
        )
        self.mid_block2 = ResidualBlock(sd, ch, ch, emb_dim, groups, dropout)
        self.up = self._decoder(widths, skip_widths, emb_dim)
        ch = widths[0]
        self.out_norm = group_norm(groups, ch)
        self.out_conv = conv(sd, ch, out_channels, 3)
        # Zero-init: the untrained network predicts zero noise, a stable start.
        zero_init(self.out_conv)

    def _set_geometry(self) -> None:
        """Divisors and halos (see the class's attributes)."""
        levels = len(self.channel_mults)
        d = 2 ** (levels - 1)
        self.output_divisor = (d,) * self.spatial_dims
        self.divisor = tuple(d // math.gcd(d, f) for f in self.factors)
        self.receptive_radius = conv_receptive_radius(self.channel_mults, self.num_res_blocks)
        halo_out = min(self.receptive_radius, 4 * 2**levels)
        self.output_halo = (halo_out,) * self.spatial_dims
        self.halo = tuple(-(-halo_out // f) for f in self.factors)

    def _encoder(self, widths: list[int], emb_dim: int) -> tuple[nn.ModuleList, list[int]]:
        """The down path, and the widths of the skips it leaves for the decoder."""
        sd, groups, dropout = self.spatial_dims, self.groups, self.dropout
        skip_widths = [self.base_channels]
        ch = self.base_channels
        down = nn.ModuleList()
        for level, width in enumerate(widths):
            blocks: list[ResidualBlock] = []
            for _ in range(self.num_res_blocks):
                blocks.append(ResidualBlock(sd, ch, width, emb_dim, groups, dropout))
                ch = width
                skip_widths.append(ch)
            last = level == len(widths) - 1
            down.append(_Level(blocks, None if last else Downsample(sd, ch)))
            if not last:
                skip_widths.append(ch)
        return down, skip_widths

    def _decoder(self, widths: list[int], skip_widths: list[int], emb_dim: int
                 ) -> nn.ModuleList:
        """The up path, taking the encoder's skips (``skip_widths`` is used up)."""
        sd, groups, dropout = self.spatial_dims, self.groups, self.dropout
        ch = widths[-1]
        up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            blocks = []
            for _ in range(self.num_res_blocks + 1):
                skip = skip_widths.pop()
                blocks.append(ResidualBlock(sd, ch + skip, width, emb_dim, groups, dropout))
                ch = width
            up.append(_Level(blocks, Upsample(sd, ch) if level > 0 else None))
        return up

    def forward(
        self, x_noisy: torch.Tensor, cond: torch.Tensor, noise_level: torch.Tensor
    ) -> torch.Tensor:
        """Predict the noise in ``x_noisy``.

        Parameters
        ----------
        x_noisy
            (B, out_channels, *S) noisy target.
        cond
            (B, in_channels, *S) degraded input on the same grid.
        noise_level
            (B,) continuous ``sqrt(alpha_bar)`` per item (a scalar is broadcast).

        Returns
        -------
        torch.Tensor
            (B, out_channels, *S) predicted noise.
        """
        if x_noisy.ndim != self.spatial_dims + 2 or cond.shape[2:] != x_noisy.shape[2:]:
            raise ValueError(
                f"x_noisy {tuple(x_noisy.shape)} and cond {tuple(cond.shape)} must be "
                f"(B, C, *S) with {self.spatial_dims} equal spatial axes"
            )
        bad = [s for s, d in zip(x_noisy.shape[2:], self.output_divisor, strict=True) if s % d]
        if bad:
            raise ValueError(
                f"spatial shape {tuple(x_noisy.shape[2:])} must be a multiple of "
                f"{self.output_divisor} (output_divisor)"
            )
        noise_level = torch.as_tensor(noise_level, dtype=x_noisy.dtype, device=x_noisy.device)
        if noise_level.ndim == 0:
            noise_level = noise_level.expand(x_noisy.shape[0])
        emb = self.noise_mlp(
            sinusoidal_embedding(noise_level.reshape(-1) * NOISE_LEVEL_SCALE, self.base_channels)
        )

        h = self.init_conv(torch.cat([x_noisy, cond], dim=1))
        skips = [h]
        for stage in self._levels(self.down):
            for block in stage.blocks:
                h = block(h, emb)
                skips.append(h)
            if stage.resample is not None:
                h = stage.resample(h)
                skips.append(h)

        h = self.mid_block1(h, emb)
        h = self.mid_attention(h)
        h = self.mid_block2(h, emb)

        for stage in self._levels(self.up):
            for block in stage.blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if stage.resample is not None:
                h = stage.resample(h)

        return self.out_conv(F.silu(self.out_norm(h)))

    @staticmethod
    def _levels(stages: nn.ModuleList) -> list[_Level]:
        return [cast(_Level, stage) for stage in stages]


class _Level(nn.Module):
    """Residual blocks of one resolution level, then an optional down/upsampling."""

    def __init__(self, blocks: list[ResidualBlock], resample: nn.Module | None):
        super().__init__()
        self.blocks: list[ResidualBlock] = cast(list[ResidualBlock], nn.ModuleList(blocks))
        self.resample = resample


def _validate(
    spatial_dims,
    in_channels,
    out_channels,
    z_factor,
    base_channels,
    channel_mults,
    num_res_blocks,
    groups,
    dropout,
) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if isinstance(z_factor, bool) or int(z_factor) != z_factor or not 1 <= z_factor <= 16:
        raise ValueError(f"z_factor must be an integer in 1..16, got {z_factor!r}")
    for name, value in (
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("base_channels", base_channels),
        ("num_res_blocks", num_res_blocks),
        ("groups", groups),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not channel_mults or any(int(m) != m or m < 1 for m in channel_mults):
        raise ValueError(
            f"channel_mults must be a non-empty sequence of positive integers, "
            f"got {channel_mults!r}"
        )
    for m in channel_mults:
        if (base_channels * m) % groups:
            raise ValueError(
                f"every level width base_channels * channel_mults[i] must be divisible by "
                f"groups={groups}; base_channels={base_channels} * {m} is not"
            )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
