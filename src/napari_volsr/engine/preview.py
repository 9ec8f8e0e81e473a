"""Preview: restore one region of a volume as the whole volume's restore would."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator, Sequence
from numbers import Integral

from .data import Normalization, percentile_normalization
from .geometry import region_geometry
from .chain import iter_load_chain, iter_restore_chain
from .predict import RestoreProgress, RestoreResult, model_percentiles
from .restorers import release


def visible_region(shape: Sequence[int], lower: Sequence[float], upper: Sequence[float],
                   sliced: Sequence[bool], context: int = 2) -> tuple[slice, ...] | None:
    """Voxels of a volume seen in a 2D view, plus a few slices around the current one.

    Parameters
    ----------
    shape
        Data shape.
    lower, upper
        Per axis, the smallest and largest visible data coordinate (voxel centres at
        integers). On sliced axes both are the current slice's coordinate.
    sliced
        True for axes that are not displayed (the slider axes).
    context
        Slices kept either side of the current one on sliced axes.

    Returns
    -------
    tuple of slice or None
        Clipped to the volume; None when the volume is not in view.
    """
    region = []
    for n, lo, hi, is_sliced in zip(shape, lower, upper, sliced, strict=True):
        if is_sliced:
            index = math.floor(float(lo) + 0.5)
            if not 0 <= index < n:
                return None
            region.append(slice(max(0, index - context), min(n, index + context + 1)))
        else:
            # Voxel i covers [i - 0.5, i + 0.5): visible when that overlaps [lo, hi].
            start = max(0, math.floor(float(lo) + 0.5))
            stop = min(int(n), math.ceil(float(hi) + 0.5))
            if start >= stop:
                return None
            region.append(slice(start, stop))
    return tuple(region)


def expand_region(region: Sequence[slice], halo: Sequence[int],
                  shape: Sequence[int]) -> tuple[slice, ...]:
    """``region`` grown by ``halo`` voxels per side (real context), clipped to ``shape``."""
    return tuple(slice(max(0, r.start - h), min(n, r.stop + h))
                 for r, h, n in zip(region, halo, shape, strict=True))


def trim_slices(read: Sequence[slice], keep: Sequence[slice], z_factor) -> tuple[slice, ...]:
    """Where ``keep`` lies in the restored ``read`` region.

    ``z_factor``: an int scales z only; ``(fz, fy, fx)`` scale every axis.
    """
    factors = (z_factor, 1, 1) if isinstance(z_factor, Integral) else tuple(z_factor)
    return tuple(slice((k.start - r.start) * s, (k.stop - r.start) * s)
                 for r, k, s in zip(read, keep, factors, strict=True))


class RenormalizedRestorer:
    """A restorer that sees a crop as if the whole volume had been normalised.

    ``iter_restore`` normalises what it is given: a crop's percentiles differ from the
    volume's, so a network would see other numbers than in a full restore. This wrapper
    maps the crop's network units to the volume's before the network and back after,
    so a preview equals the full result over the same voxels.
    """

    def __init__(self, inner, crop_norm: Normalization, volume_norm: Normalization):
        self.inner = inner
        self.crop_norm = crop_norm
        self.volume_norm = volume_norm

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def prepare(self, device, dtype) -> None:
        """Prepare the wrapped restorer."""
        self.inner.prepare(device, dtype)

    def __call__(self, x):
        import torch

        c, v = self.crop_norm, self.volume_norm
        ratio = c.span / v.span
        shift = (c.low - v.low) / v.span
        out = self.inner(x * ratio + shift)
        parts = []
        for k, name in enumerate(self.inner.outputs):
            part = out[:, k : k + 1]
            parts.append(part / ratio if name == "uncertainty" else (part - shift) / ratio)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def iter_preview(data, model, z_factor: int | None, *, keep: Sequence[slice],
                 read: Sequence[slice], factors=None, restorer_options=None, spacing=None,
                 origin=None, percentiles=None, **restore_kwargs
                 ) -> Generator[RestoreProgress, None, RestoreResult]:
    """Restore the ``read`` region of the ZYX volume ``data`` and return its ``keep`` part.

    Intensities are normalised with the whole volume's percentiles, so the preview
    matches a full restore; the result's origin and metadata describe ``keep``. In a
    chain of models (a list) that holds for the first; the later ones normalise what
    the region became, as the whole volume's is not known before it is restored.

    Parameters
    ----------
    data
        The whole volume (numpy or dask; only ``read`` and a strided sample are read).
    model, z_factor, factors, restorer_options
        As for :func:`~.pipeline.iter_restore_job` (models are cached between runs).
    keep, read
        The region to show and the region to restore (``keep`` plus context, e.g.
        :func:`expand_region` by :func:`~.chain.chain_geometry`'s halo), in input voxels.
    spacing, origin, percentiles, **restore_kwargs
        As for :func:`~.predict.iter_restore`.
    """
    spacing = tuple(float(s) for s in (spacing or (1.0, 1.0, 1.0)))
    origin = tuple(float(o) for o in (origin or (0.0, 0.0, 0.0)))
    restorers = yield from iter_load_chain(model, z_factor, factors=factors, spacing=spacing,
                                           **(restorer_options or {}))
    try:
        yield RestoreProgress("normalise", 0, 1, "percentiles of the whole volume")
        # The first model's own (the wrapper below reports them to iter_restore too).
        first_percentiles = model_percentiles(restorers[0], percentiles)
        volume_norm = percentile_normalization(data, first_percentiles)
        read = tuple(read)
        crop = data[read]
        crop_norm = percentile_normalization(crop, first_percentiles)
        first = RenormalizedRestorer(restorers[0], crop_norm, volume_norm)
        _, read_origin = region_geometry(spacing, origin, [r.start for r in read], 1)
        result = yield from iter_restore_chain(crop, [first, *restorers[1:]], spacing=spacing,
                                               origin=read_origin, percentiles=percentiles,
                                               **restore_kwargs)
    finally:
        for restorer in restorers:
            release(restorer)
    f = result.factors
    trim = trim_slices(read, keep, f)
    outputs = {name: out[trim] for name, out in result.outputs.items()}
    out_spacing, out_origin = region_geometry(spacing, origin, [k.start for k in keep], f)
    settings = {**result.settings, "preview": True,
                "preview_region": [[k.start, k.stop] for k in keep],
                "normalization": [volume_norm.low, volume_norm.high]}
    return dataclasses.replace(result, outputs=outputs, spacing=out_spacing,
                               origin=out_origin, settings=settings)
