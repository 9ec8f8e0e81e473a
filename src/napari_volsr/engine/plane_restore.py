"""2D networks on volumes: YX planes slice by slice, or XZ and YZ planes fused (isotropic)."""

from __future__ import annotations

import math

import torch

from .nets.plane_stack import context_stacks


class PlaneRestorer:
    """The plane paths of :class:`~.restorers.NetworkRestorer` for 2D networks.

    Needs ``_apply`` (network-shaped input -> output), ``factors`` (z, y, x),
    ``context``, ``plane_pixels``, ``n_samples`` and ``method`` from the class using it.
    """

    def _apply_planes(self, planes):
        # Output pixels per plane: input pixels times every upsampled axis's factor.
        per_plane = planes.shape[2] * planes.shape[3] * math.prod(self.factors) * self.n_samples
        n = max(1, self.plane_pixels // per_plane)
        return torch.cat([self._apply(planes[i : i + n]) for i in range(0, planes.shape[0], n)])

    def _slices(self, x):
        """YX planes one by one (with their context planes, 2.5D): same shape, or lateral SR.

        (B, 1, D, H, W) -> (B, K, D, H * fy, W * fx).
        """
        b, _, d, h, w = x.shape
        if self.context:
            planes = context_stacks(x, self.context)
        else:
            planes = x.permute(0, 2, 1, 3, 4).reshape(b * d, 1, h, w)
        out = self._apply_planes(planes)
        k, ho, wo = out.shape[1:]
        return out.reshape(b, d, k, ho, wo).permute(0, 2, 1, 3, 4)

    def _isotropic(self, x, keep=None):
        """XZ planes of the kept rows and YZ planes of the kept columns, fused where both are.

        A plane is computed whole (its z and lateral context), so its values do not
        depend on which other planes are computed.
        """
        b, _, d, h, w = x.shape
        f = self.factors[0]
        rows = kept_range(keep, 1, h)
        cols = kept_range(keep, 2, w)
        ny, nx = rows.stop - rows.start, cols.stop - cols.start
        xz = x[:, :, :, rows].permute(0, 3, 1, 2, 4).reshape(b * ny, 1, d, w)
        out_xz = self._apply_planes(xz)
        k = out_xz.shape[1]
        out_xz = out_xz.reshape(b, ny, k, d * f, w).permute(0, 2, 3, 1, 4)
        yz = x[..., cols].permute(0, 4, 1, 2, 3).reshape(b * nx, 1, d, h)
        out_yz = self._apply_planes(yz).reshape(b, nx, k, d * f, h).permute(0, 2, 3, 4, 1)
        fused = self._fuse(out_xz[..., cols], out_yz[..., rows, :])
        if (ny, nx) == (h, w):
            return fused
        # Outside the kept box only one pass (or none) was computed. Its values there
        # are cropped away by the caller; filling them with that pass, not zeros, keeps
        # the output a plausible picture should anything inspect the padded block.
        out = out_xz.new_zeros((b, k, d * f, h, w))
        out[..., rows, :] = out_xz
        out[..., cols] = out_yz
        out[..., rows, cols] = fused
        return out

    def _fuse(self, out_xz, out_yz):
        """The mean of the two plane passes (CARE isotropic); diffusion pools its stds."""
        fused = (out_xz + out_yz) / 2
        if self.method is not None:
            # Pool the two standard deviations as variances.
            fused[:, 1] = torch.sqrt((out_xz[:, 1] ** 2 + out_yz[:, 1] ** 2) / 2)
        return fused


def kept_range(keep, axis: int, n: int) -> slice:
    """The kept range of ``axis`` (length ``n``, same in and out), or all of it."""
    if keep is None:
        return slice(0, n)
    start, stop, _ = keep[axis].indices(n)
    return slice(start, max(start, stop))
