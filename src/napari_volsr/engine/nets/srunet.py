"""SRUNet: U-Net for anisotropic z-upsampling (after Heinrich et al., MICCAI 2017)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from napari_volsr.engine.nets._common import check_input, check_int, check_net_args, net_factors
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


def _axis_halo(f: int, pool: int) -> int:
    """Return the receptive-field radius along one axis, in input voxels (worst phase).

    Exact, not a bound: runs of positions are followed back from an output voxel through
    the decoder, the kernel = stride upsamplings (output ``u`` reads ``u // k``), the
    poolings and the convolutions, as :func:`napari_volsr.engine.nets.unet.receptive_span`
    does; spans repeat with period ``pool**2 * f`` in the output position.

    Parameters
    ----------
    f
        The axis's upsampling factor.
    pool
        Its pooling factor: 2 laterally, 1 along the first axis.
    """
    reach = _CONVS_PER_LEVEL

    def enc0(lo, hi):  # input read by the first level's features lo..hi
        return lo - reach, hi + reach

    def pooled(lo, hi):
        return pool * lo, pool * hi + pool - 1

    def enc1(lo, hi):
        return enc0(*pooled(lo - reach, hi + reach))

    def bottom(lo, hi):
        return enc1(*pooled(lo - reach, hi + reach))

    def union(left, right):
        return min(left[0], right[0]), max(left[1], right[1])

    def dec1(lo, hi):  # the deep up-convolution strides pool * f, the skip f
        lo, hi = lo - reach, hi + reach
        k = pool * f
        return union(bottom(lo // k, hi // k), enc1(lo // f, hi // f))

    halo = 0
    for q in range(pool * pool * f):
        lo, hi = q - reach, q + reach
        first, last = union(dec1(lo // pool, hi // pool), enc0(lo // f, hi // f))
        halo = max(halo, q // f - first, last - q // f)
    return halo


class SRUNet(nn.Module):
    """Three-level U-Net that pools only laterally and upsamples by transposed convs.

    Each level has three 3x3(x3) conv + ReLU. The first spatial axis (z) is never pooled;
    the encoder runs on the input grid. The upsampling is split between the skip paths
    and the deep path: each skip is upsampled by a transposed conv with kernel = stride =
    factors (fz, fy, fx), and the bottleneck's up-convolution, kernel = stride =
    (fz, 2 fy, 2 fx), upsamples on top of undoing the pooling, so the whole decoder runs
    on the output grid (its second up-convolution undoes the first pooling). This works
    for every integer factor, odd or prime included; with every factor 1 the skips pass
    through unchanged. The decoder concatenates and convolves back to ``out_channels``;
    no output activation, no normalisation layers.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels, out_channels
        Channel counts.
    z_factor
        Upsampling factor of the first spatial axis, 1..16 (shorthand for ``factors``).
    widths
        Feature widths of the three levels, finest first.
    factors
        Upsampling factor per spatial axis, 1..16 each; takes precedence over ``z_factor``.

    Attributes
    ----------
    factors : tuple of int
        Upsampling factor per spatial axis (``z_factor`` is the first).
    halo : tuple of int
        Receptive-field radius per spatial axis, in input voxels (worst pooling phase).
    divisor : tuple of int
        Lateral input sizes must be multiples of 4 (two 2x poolings on the input grid,
        whatever the factors); z is free.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        z_factor: int = 1,
        widths: tuple[int, int, int] = (32, 64, 128),
        factors: Sequence[int] | None = None,
    ):
        super().__init__()
        check_net_args(spatial_dims, in_channels, out_channels, z_factor)
        self.factors = net_factors(spatial_dims, z_factor, factors)
        widths = tuple(widths) if isinstance(widths, list | tuple) else (widths,)
        if len(widths) != 3:
            raise ValueError(f"widths must have 3 entries (one per level), got {widths}")
        for w in widths:
            check_int("widths", w)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.z_factor = self.factors[0]

        sd = spatial_dims
        w0, w1, w2 = widths
        lateral = (2,) * (sd - 1)
        self.pool = max_pool(sd, (1, *lateral))
        self.enc0 = _conv_stack(sd, in_channels, w0)
        self.enc1 = _conv_stack(sd, w0, w1)
        self.bottom = _conv_stack(sd, w1, w2)
        # Up-convolutions keep the width (3D U-Net style); the deep one also upsamples.
        deep = tuple(p * f for p, f in zip((1, *lateral), self.factors, strict=True))
        self.up1 = conv_transpose(sd, w2, w2, deep, deep)
        self.up0 = conv_transpose(sd, w1, w1, (1, *lateral), (1, *lateral))
        # Named for z, where they began; they upsample every axis by its factor.
        self.skip1_z = self._skip_up(w1)
        self.skip0_z = self._skip_up(w0)
        self.dec1 = _conv_stack(sd, w2 + w1, w1)
        self.dec0 = _conv_stack(sd, w1 + w0, w0)
        self.out = conv(sd, w0, out_channels, kernel_size=1)
        self._init_weights()

        pools = (1, *lateral)
        self.halo = tuple(_axis_halo(f, p) for f, p in zip(self.factors, pools, strict=True))
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

    def _skip_up(self, channels: int) -> nn.Module:
        if all(f == 1 for f in self.factors):
            return nn.Identity()
        return conv_transpose(self.spatial_dims, channels, channels, self.factors, self.factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, in, *S) to (B, out, *(s * f)); lateral input sizes % 4 == 0."""
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
