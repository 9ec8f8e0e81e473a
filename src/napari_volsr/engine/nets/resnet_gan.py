"""GAN networks: ResNet generator with learned upsampling and a PatchGAN discriminator."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from napari_volsr.engine.nets._common import (
    check_input, check_int, check_net_args, kernel_stride_halo, net_factors,
)
from napari_volsr.engine.nets.blocks import conv, conv_transpose, instance_norm

PRESETS: dict[str, dict] = {
    "tiny": {"channels": 4, "n_blocks": 1},
    # Half the width: a quarter of the convolution cost of the default.
    "small": {"channels": 16, "n_blocks": 4},
    "default": {"channels": 32, "n_blocks": 4},
}

NORMS = ("batch", "instance", "none")


def _norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "instance":
        return instance_norm(spatial_dims, channels)
    if kind == "batch":
        return (nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d)(channels)
    return nn.Identity()


def _strided_conv(spatial_dims: int, in_ch: int, out_ch: int) -> nn.Module:
    # Kernel 4, stride 2, padding 1 maps n to n // 2 exactly (pix2pix); blocks.conv pads
    # for odd kernels only.
    cls = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    return cls(in_ch, out_ch, kernel_size=4, stride=2, padding=1)


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class _ResBlock(nn.Module):
    """conv-norm-LeakyReLU-conv-norm with an identity skip (SRGAN)."""

    def __init__(self, spatial_dims: int, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            conv(spatial_dims, channels, channels),
            _norm(norm, spatial_dims, channels),
            _lrelu(),
            conv(spatial_dims, channels, channels),
            _norm(norm, spatial_dims, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """ResNet generator (SRGAN style) with learned upsampling.

    Conv + LeakyReLU(0.2); ``n_blocks`` residual blocks; a conv + norm closed by a
    global skip from the first features; when a factor is > 1 a transposed conv with
    kernel = stride = factors (fz, fy, fx) + LeakyReLU; an output conv.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels, out_channels
        Channel counts.
    z_factor
        Upsampling factor of the first spatial axis, 1..16 (shorthand for ``factors``).
    channels
        Feature width.
    n_blocks
        Number of residual blocks.
    norm
        ``"batch"`` (default), ``"instance"`` or ``"none"``. Batch norm in eval mode is a
        fixed per-channel affine map, so tiled inference is exact and ``halo`` honest;
        instance norm normalises over each block, making outputs depend on the tiling.
    factors
        Upsampling factor per spatial axis, 1..16 each; takes precedence over ``z_factor``.

    Attributes
    ----------
    factors : tuple of int
        Upsampling factor per spatial axis (``z_factor`` is the first).
    halo : tuple of int
        Receptive-field radius per spatial axis, in input voxels.
    divisor : tuple of int
        Input size multiple per axis (all 1).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        z_factor: int = 1,
        channels: int = 32,
        n_blocks: int = 4,
        norm: str = "batch",
        factors: Sequence[int] | None = None,
    ):
        super().__init__()
        check_net_args(spatial_dims, in_channels, out_channels, z_factor)
        self.factors = net_factors(spatial_dims, z_factor, factors)
        check_int("channels", channels)
        check_int("n_blocks", n_blocks, 0)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.spatial_dims = sd = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.z_factor = self.factors[0]

        self.head = nn.Sequential(conv(sd, in_channels, channels), _lrelu())
        self.trunk = nn.Sequential(
            *[_ResBlock(sd, channels, norm) for _ in range(n_blocks)],
            conv(sd, channels, channels),
            _norm(norm, sd, channels),
        )
        if any(f > 1 for f in self.factors):
            kernel = self.factors
            self.upsample: nn.Module = nn.Sequential(
                conv_transpose(sd, channels, channels, kernel, kernel), _lrelu()
            )
        else:
            self.upsample = nn.Identity()
        self.out = conv(sd, channels, out_channels)

        # Head, 2 per block and the trunk conv on the input grid; the output conv after.
        before = 2 + 2 * n_blocks
        self.halo = kernel_stride_halo(before, 1, self.factors)
        self.divisor = (1,) * sd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, in, *S) to (B, out, *(s * f for each axis's factor f))."""
        check_input(x, self.spatial_dims, self.in_channels)
        features = self.head(x)
        features = features + self.trunk(features)
        return self.out(self.upsample(features))


class PatchDiscriminator(nn.Module):
    """Fully convolutional PatchGAN discriminator (pix2pix style): one logit per patch.

    ``n_layers`` blocks of conv (kernel 4, stride 2, padding 1) + instance norm (not on
    the first block, whose input statistics carry the signal) + LeakyReLU(0.2), starting
    at ``channels`` and doubling; then a 3-wide conv to one channel. Each block halves
    every spatial size (n -> n // 2), so the logit map has size ``n // 2**n_layers``.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels
        Channels of the images judged (output channels, plus input channels when the
        discriminator is conditioned on the degraded input).
    channels
        Width of the first block.
    n_layers
        Number of strided blocks.

    Attributes
    ----------
    min_size : int
        Smallest accepted size per spatial axis, ``2 ** (n_layers + 1)``: the last
        normalised map then has at least 2 voxels per axis, so instance-norm statistics
        are not degenerate. Any larger size works; no layer depends on the input size.
    """

    def __init__(
        self, spatial_dims: int = 3, in_channels: int = 1, channels: int = 16, n_layers: int = 3
    ):
        super().__init__()
        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        check_int("in_channels", in_channels)
        check_int("channels", channels)
        check_int("n_layers", n_layers, 1, 8)
        self.spatial_dims = sd = spatial_dims
        self.in_channels = in_channels
        self.min_size = 2 ** (n_layers + 1)

        layers: list[nn.Module] = []
        width_in = in_channels
        for i in range(n_layers):
            width = channels * 2**i
            layers.append(_strided_conv(sd, width_in, width))
            if i > 0:
                layers.append(instance_norm(sd, width))
            layers.append(_lrelu())
            width_in = width
        layers.append(conv(sd, width_in, 1, kernel_size=3))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (B, 1, *[n // 2**n_layers for n in spatial sizes])."""
        check_input(x, self.spatial_dims, self.in_channels)
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(
                f"discriminator input needs every spatial size >= {self.min_size}, "
                f"got {tuple(x.shape[2:])}"
            )
        return self.model(x)
