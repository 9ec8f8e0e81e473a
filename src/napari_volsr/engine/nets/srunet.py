"""SRUNet: U-Net for anisotropic z-upsampling (after Heinrich et al., MICCAI 2017)."""

from __future__ import annotations

import math

import torch
from torch import nn

from napari_volsr.engine.nets._common import check_input, check_int, check_net_args, z_halo
from napari_volsr.engine.nets.blocks import conv, conv_transpose, max_pool

PRESETS: dict[str, dict] = {
    "tiny": {"widths": (4, 4, 8)},
    # Half the widths: a quarter of the convolution cost of the default.
    "small": {"widths": (16, 32, 64)},
    "default": {"widths": (32, 64, 128)},
}

_CONVS_PER_LEVEL = 3


def _conv_stack(spatial_dims: int, in_ch: int, out_ch: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(_CONVS_PER_LEVEL):
        layers += [conv(spatial_dims, in_ch if i == 0 else out_ch, out_ch), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _lateral_halo() -> int:
    """Return the receptive-field radius along a pooled axis, in input voxels.

    A feature at position q of a grid with stride s reads input voxels
    ``s*q + a .. s*q + b``; track (s, a, b) through the layers, taking the worst phase.
    """

    def convs(s, a, b):
        return s, a - _CONVS_PER_LEVEL * s, b + _CONVS_PER_LEVEL * s

    def pool(s, a, b):  # q' covers q = 2q', 2q'+1
        return 2 * s, a, b + s

    def up(s, a, b):  # q reads q // 2 of the coarser grid (stride 2 -> stride s // 2)
        return s // 2, a - s // 2, b

    def union(left, right):
        return left[0], min(left[1], right[1]), max(left[2], right[2])

    skip0 = convs(1, 0, 0)
    skip1 = convs(*pool(*skip0))
    bottom = convs(*pool(*skip1))
    dec1 = convs(*union(up(*bottom), skip1))
    dec0 = convs(*union(up(*dec1), skip0))
    return max(-dec0[1], dec0[2])


class SRUNet(nn.Module):
    """Three-level U-Net that pools only laterally and upsamples z by transposed convs.

    Each level has three 3x3(x3) conv + ReLU. The first spatial axis (z) is never pooled.
    The z-upsampling is split between the skip paths and the deep path: each skip is
    upsampled along z by a transposed conv with kernel = stride = (f, 1, 1), and the
    bottleneck's lateral up-convolution, kernel = stride = (f, 2, 2), upsamples z too,
    so the whole decoder runs on the output grid. This works for every integer f,
    odd or prime included; for f = 1 the skips pass through unchanged. The decoder
    concatenates and convolves back to ``out_channels``; no output activation, no
    normalisation layers.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels, out_channels
        Channel counts.
    z_factor
        Upsampling factor of the first spatial axis, 1..16.
    widths
        Feature widths of the three levels, finest first.

    Attributes
    ----------
    halo : tuple of int
        Receptive-field radius per spatial axis, in input voxels (worst pooling phase).
    divisor : tuple of int
        Lateral sizes must be multiples of 4 (two 2x poolings); z is free.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        z_factor: int = 1,
        widths: tuple[int, int, int] = (32, 64, 128),
    ):
        super().__init__()
        check_net_args(spatial_dims, in_channels, out_channels, z_factor)
        widths = tuple(widths) if isinstance(widths, list | tuple) else (widths,)
        if len(widths) != 3:
            raise ValueError(f"widths must have 3 entries (one per level), got {widths}")
        for w in widths:
            check_int("widths", w)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.z_factor = f = int(z_factor)

        sd = spatial_dims
        w0, w1, w2 = widths
        lateral = (2,) * (sd - 1)
        self.pool = max_pool(sd, (1, *lateral))
        self.enc0 = _conv_stack(sd, in_channels, w0)
        self.enc1 = _conv_stack(sd, w0, w1)
        self.bottom = _conv_stack(sd, w1, w2)
        # Up-convolutions keep the width (3D U-Net style); the deep one also upsamples z.
        self.up1 = conv_transpose(sd, w2, w2, (f, *lateral), (f, *lateral))
        self.up0 = conv_transpose(sd, w1, w1, (1, *lateral), (1, *lateral))
        self.skip1_z = self._z_up(w1)
        self.skip0_z = self._z_up(w0)
        self.dec1 = _conv_stack(sd, w2 + w1, w1)
        self.dec0 = _conv_stack(sd, w1 + w0, w0)
        self.out = conv(sd, w0, out_channels, kernel_size=1)
        self._init_weights()

        # z: 3 levels of convs on the input grid, then 2 levels on the output grid.
        z_radius = z_halo(3 * _CONVS_PER_LEVEL, 2 * _CONVS_PER_LEVEL, f)
        self.halo = (z_radius,) + (_lateral_halo(),) * (sd - 1)
        self.divisor = (1,) + (4,) * (sd - 1)

    def _init_weights(self) -> None:
        # He init: torch's default shrinks the signal through 15+ plain ReLU convs, which
        # leaves narrow nets nearly constant at the start. A transposed conv with
        # kernel = stride feeds each output voxel from in_channels values only.
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d | nn.ConvTranspose3d):
                nn.init.normal_(m.weight, std=math.sqrt(2 / m.in_channels))
                nn.init.zeros_(m.bias)

    def _z_up(self, channels: int) -> nn.Module:
        if self.z_factor == 1:
            return nn.Identity()
        kernel = (self.z_factor,) + (1,) * (self.spatial_dims - 1)
        return conv_transpose(self.spatial_dims, channels, channels, kernel, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, in, D, ...) to (B, out, D * z_factor, ...); lateral sizes % 4 == 0."""
        check_input(x, self.spatial_dims, self.in_channels)
        lateral = x.shape[3:]
        if any(n % 4 for n in lateral):
            raise ValueError(f"lateral input sizes must be multiples of 4, got {tuple(lateral)}")
        s0 = self.enc0(x)
        s1 = self.enc1(self.pool(s0))
        deep = self.bottom(self.pool(s1))
        d1 = self.dec1(torch.cat([self.up1(deep), self.skip1_z(s1)], dim=1))
        d0 = self.dec0(torch.cat([self.up0(d1), self.skip0_z(s0)], dim=1))
        return self.out(d0)
