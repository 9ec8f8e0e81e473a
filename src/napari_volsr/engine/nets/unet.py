"""UNet: the CARE / Noise2Void restoration U-Net (Weigert et al., Nat. Methods 2018).

With ``blur_pool=True, top_skip=False, residual=False`` it is the N2V2 variant (Hoeck et
al., ECCV workshops 2022), whose blur pooling and missing finest skip remove the
checkerboard artefacts of blind-spot training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from napari_volsr.engine.nets._common import (
    check_input, check_int, check_net_args, net_factors, to_output_grid,
)
from napari_volsr.engine.nets.blocks import conv, max_pool
from napari_volsr.engine.nets.rcan import _cubic_support

PRESETS: dict[str, dict] = {
    "tiny": {"widths": (8, 16)},
    # Half the widths: a quarter of the convolution cost of the default.
    "small": {"widths": (16, 32, 64)},
    # CARE's default: two poolings, 32 filters at the top.
    "default": {"widths": (32, 64, 128)},
}

MIN_LEVELS, MAX_LEVELS = 2, 4
_CONVS_PER_LEVEL = 2
# Binomial blur of the N2V2 / anti-aliased-CNN blur pool (Zhang, ICML 2019), per axis.
_BLUR_TAPS = (0.25, 0.5, 0.25)


def _conv_pair(spatial_dims: int, in_ch: int, mid_ch: int, out_ch: int) -> nn.Sequential:
    """Two 3x3(x3) convs with ReLU: in -> mid -> out."""
    return nn.Sequential(
        conv(spatial_dims, in_ch, mid_ch), nn.ReLU(inplace=True),
        conv(spatial_dims, mid_ch, out_ch), nn.ReLU(inplace=True),
    )


class _BlurPool(nn.Module):
    """Max over 2 voxels at stride 1, then a binomial blur at stride 2 (N2V2).

    Plain max pooling picks one voxel of each 2x2(x2) cell, so the output depends on the
    phase of a pattern against the pooling grid; blurring before subsampling makes it
    nearly shift-invariant. Borders replicate the edge voxel, so even sizes halve exactly.
    """

    def __init__(self, spatial_dims: int, channels: int):
        super().__init__()
        taps = torch.tensor(_BLUR_TAPS)
        kernel = taps
        for _ in range(spatial_dims - 1):
            kernel = kernel[..., None] * taps
        # Not in the state dict: a fixed filter, rebuilt with the network.
        self.register_buffer("kernel", kernel.expand(channels, 1, *kernel.shape).clone(),
                             persistent=False)
        self.spatial_dims = spatial_dims
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sd = self.spatial_dims
        pool = F.max_pool3d if sd == 3 else F.max_pool2d
        blur = F.conv3d if sd == 3 else F.conv2d
        x = pool(F.pad(x, (0, 1) * sd, mode="replicate"), kernel_size=2, stride=1)
        x = F.pad(x, (1, 1) * sd, mode="replicate")
        return blur(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


def receptive_span(q: int, levels: int, blur_pool: bool, top_skip: bool) -> tuple[int, int]:
    """Return the first and last input voxel that output voxel ``q`` reads, along one axis.

    Exact, not a bound: each layer maps a run of its output positions to a run of its
    input positions (monotone in both ends), so runs are followed back through the
    convolutions, poolings, upsamplings and skips. The pooling grid starts at voxel 0;
    the span depends on ``q`` modulo ``2 ** (levels - 1)``. Input borders are ignored
    (this is what a voxel far from them reads).

    Parameters
    ----------
    q
        Output position (on the grid the U-Net runs on).
    levels, blur_pool, top_skip
        As for :class:`UNet`.

    Returns
    -------
    tuple of int
        ``(first, last)`` input positions.
    """
    reach = _CONVS_PER_LEVEL  # 3-wide convs

    def encoder(level, lo, hi):  # features lo..hi after the convs of ``level``
        lo, hi = lo - reach, hi + reach
        if level == 0:
            return lo, hi
        # Pooled p reads 2p, 2p+1; the blur pool's max of k, k+1 then taps 2p-1..2p+1.
        lo, hi = (2 * lo - 1, 2 * hi + 2) if blur_pool else (2 * lo, 2 * hi + 1)
        return encoder(level - 1, lo, hi)

    def decoder(level, lo, hi):
        lo, hi = lo - reach, hi + reach
        deeper = encoder if level + 1 == levels - 1 else decoder
        first, last = deeper(level + 1, lo // 2, hi // 2)  # nearest upsampling
        if level > 0 or top_skip:
            skip = encoder(level, lo, hi)
            first, last = min(first, skip[0]), max(last, skip[1])
        return first, last

    return decoder(0, q, q)


class UNet(nn.Module):
    """CARE's restoration U-Net: same-shape denoising, optionally after interpolation.

    Every level has two 3x3(x3) conv + ReLU; each coarser level follows a 2x pooling of
    every spatial axis. The decoder upsamples by nearest neighbour, concatenates the
    skip connection and convolves; as in CARE, the last conv of each level below the top
    gives the width of the level above. A 1x1 conv makes the output; no normalisation.
    With factors > 1 the input is first upsampled, every axis by its factor, by
    Catmull-Rom interpolation (slab convention, as RCAN's ``upsampling="input"``) and the
    U-Net runs on the output grid. Inputs of any size work: they are padded at the end (edge
    replicated) to a multiple of the pooling and cropped back.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels, out_channels
        Channel counts.
    z_factor
        Upsampling factor of the first spatial axis, 1..16 (shorthand for ``factors``).
    widths
        Feature widths of the 2..4 levels, finest first; the last is the bottleneck.
    residual
        Add the (interpolated) input to the output (CARE); only when ``in_channels ==
        out_channels``. The output conv then starts at zero: training starts at the
        identity. Without the top skip the net cannot see single voxels, so a residual
        net would pass the input's per-voxel noise through (the config refuses it).
    blur_pool
        Blur pooling instead of max pooling (N2V2).
    top_skip
        Keep the finest skip connection (N2V2 drops it).
    residual_channel
        With one output channel, the input channel the residual adds (the centre plane
        of a 2.5D input, whose other channels are its neighbours); None: the residual
        needs ``in_channels == out_channels``. Adds no weights.
    factors
        Upsampling factor per spatial axis, 1..16 each; takes precedence over ``z_factor``.

    Attributes
    ----------
    factors : tuple of int
        Upsampling factor per spatial axis (``z_factor`` is the first).
    halo : tuple of int
        Receptive-field radius per spatial axis, in input voxels (worst pooling phase):
        tiles with this much context and origins on the ``divisor`` grid give exactly
        the whole-volume result.
    divisor : tuple of int
        Input size multiple per axis that avoids internal padding (the pooling grid;
        along each axis divided by what its upsampling already supplies).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        z_factor: int = 1,
        widths: tuple[int, ...] = (32, 64, 128),
        residual: bool = True,
        blur_pool: bool = False,
        top_skip: bool = True,
        residual_channel: int | None = None,
        factors: Sequence[int] | None = None,
    ):
        super().__init__()
        check_net_args(spatial_dims, in_channels, out_channels, z_factor)
        self.factors = net_factors(spatial_dims, z_factor, factors)
        widths = tuple(widths) if isinstance(widths, list | tuple) else (widths,)
        if not MIN_LEVELS <= len(widths) <= MAX_LEVELS:
            raise ValueError(f"widths must have {MIN_LEVELS}..{MAX_LEVELS} entries (one per "
                             f"level), got {widths}")
        widths = tuple(check_int("widths", w) for w in widths)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.z_factor = self.factors[0]
        self.widths = widths
        if residual_channel is not None and not (
                out_channels == 1 and 0 <= residual_channel < in_channels):
            raise ValueError(f"residual_channel {residual_channel} needs one output channel and "
                             f"an input channel 0..{in_channels - 1}")
        self.residual_channel = residual_channel
        self.residual = bool(residual) and (in_channels == out_channels
                                            or residual_channel is not None)
        self.blur_pool = bool(blur_pool)
        self.top_skip = bool(top_skip)
        self._build(widths)
        self._init_weights()

        self.multiple = m = 2 ** (len(widths) - 1)
        lateral = max(max(q - lo, hi - q) for q, (lo, hi) in enumerate(map(self._span, range(m))))
        self.halo = tuple(self._axis_halo(f) if f > 1 else lateral for f in self.factors)
        # Block origins must land on the pooling grid after the upsampling too.
        self.divisor = tuple(m // math.gcd(m, f) for f in self.factors)

    def _build(self, widths: tuple[int, ...]) -> None:
        sd = self.spatial_dims
        self.encoders = nn.ModuleList()
        self.pools = nn.ModuleList()
        previous = self.in_channels
        for w in widths[:-1]:
            self.encoders.append(_conv_pair(sd, previous, w, w))
            self.pools.append(_BlurPool(sd, w) if self.blur_pool else max_pool(sd, 2))
            previous = w
        self.bottom = _conv_pair(sd, widths[-2], widths[-1], widths[-2])
        # decoders[i] serves level i; it ends at the width of level i - 1 (CARE).
        self.decoders = nn.ModuleList()
        for level in range(len(widths) - 1):
            skip = widths[level] if (level > 0 or self.top_skip) else 0
            out = widths[max(0, level - 1)]
            self.decoders.append(_conv_pair(sd, widths[level] + skip, widths[level], out))
        self.out = conv(sd, widths[0], self.out_channels, kernel_size=1)

    def _init_weights(self) -> None:
        # He init keeps the signal's scale through the plain ReLU convs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        if self.residual:
            # The correction starts at zero: the untrained net is the (interpolated) input.
            # Small random weights trained slower (tests of 100 steps, lr 4e-4 and 1e-3).
            nn.init.zeros_(self.out.weight)
        else:
            nn.init.kaiming_normal_(self.out.weight, nonlinearity="linear")

    def _span(self, q: int) -> tuple[int, int]:
        return receptive_span(q, len(self.widths), self.blur_pool, self.top_skip)

    def _axis_halo(self, f: int) -> int:
        """Input voxels read around an output voxel's owner, along an axis upsampled by f."""
        m = self.multiple
        # Output slice u = c * f + p belongs to input slice c and reads interpolated
        # slices lo..hi, which read input slices by the cubic's support. Spans repeat with
        # period m in u, so c = 0..m-1 meets every case.
        halo = 0
        for c in range(m):
            for p in range(f):
                lo, hi = self._span(c * f + p)
                halo = max(halo, c - _cubic_support(lo, f)[0], _cubic_support(hi, f)[1] - c)
        return halo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, in, *S) to (B, out, *(s * f for each axis's factor f)); any size."""
        check_input(x, self.spatial_dims, self.in_channels)
        base = to_output_grid(x, self.factors, "catmull-rom")
        sizes = base.shape[2:]
        pads = [(-n) % self.multiple for n in sizes]
        h = base
        if any(pads):
            # F.pad lists the last axis first; pad after only, so the grid origin stays.
            h = F.pad(base, [v for p in reversed(pads) for v in (0, p)], mode="replicate")
        skips = []
        for encoder, pool in zip(self.encoders, self.pools, strict=True):
            h = encoder(h)
            skips.append(h)
            h = pool(h)
        h = self.bottom(h)
        for level in reversed(range(len(self.decoders))):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            if level > 0 or self.top_skip:
                h = torch.cat([h, skips[level]], dim=1)
            h = self.decoders[level](h)
        out = self.out(h)
        if any(pads):
            out = out[(..., *(slice(0, n) for n in sizes))]
        if not self.residual:
            return out
        if self.residual_channel is not None:
            k = self.residual_channel
            return base[:, k : k + 1] + out
        return base + out
