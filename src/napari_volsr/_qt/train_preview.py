"""The Train panel's live preview: a small crop restored with the current weights."""

from __future__ import annotations

import numpy as np

# The preview restores a central crop of at most this many input voxels (z, y, x).
PREVIEW_INPUT = (8, 64, 64)
PREVIEW_KEY = "volsr_preview"
# The preview's own colormap (another one when the source already uses it), so the
# crop never blends into the image it was cut from; its outline marks it in 2D and 3D.
PREVIEW_COLORMAPS = ("magma", "viridis")


def preview_colormap(source_colormap) -> str:
    """A colormap for the preview that differs from the source layer's."""
    name = getattr(source_colormap, "name", source_colormap)
    return next(c for c in PREVIEW_COLORMAPS if c != name)


def preview_crop(config, item, colormap) -> tuple[np.ndarray | None, dict]:
    """Cut a small central crop of a training input; say where its restoration goes.

    Parameters
    ----------
    config
        The run's TrainingConfig.
    item
        The first input of the source (a VolumeInput: data, spacing, origin, name).
    colormap
        The source layer's colormap: the preview takes another one.

    Returns
    -------
    tuple
        The crop (None when the volume is too small) and the preview layer's keyword
        arguments (name, scale, translate, colormap, metadata).
    """
    from ..engine.data import percentile_normalization
    from ..engine.degrade import degrade
    from ..engine.geometry import output_geometry

    factors = tuple(config.model.factors)
    shape = tuple(item.data.shape)
    # Synthetic: crop the clean target and degrade it like a training input, so the
    # preview lands on the target's voxels and can be compared with it directly.
    synthetic = config.source == "synthetic"
    size = tuple(min(n // f, most) * f if synthetic else min(n, most)
                 for n, f, most in zip(shape, factors, PREVIEW_INPUT, strict=True))
    if min(size) < 1:
        return None, {}
    start = tuple((n - s) // 2 for n, s in zip(shape, size, strict=True))
    crop = item.data[tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))]
    crop = np.asarray(crop.compute() if hasattr(crop, "compute") else crop, dtype=np.float32)
    spacing = np.asarray(item.spacing or (1.0,) * 3, dtype=float)
    origin = np.asarray(item.origin or (0.0,) * 3, dtype=float) + np.asarray(start) * spacing
    if synthetic:
        norm = percentile_normalization(crop, config.model.percentiles)
        # z only: the slab along z, as training degrades; else every axis by its factor.
        low_res = degrade(norm.forward(crop), factors if factors[1:] != (1, 1) else factors[0],
                          config.degradation, np.random.default_rng(config.seed))
        crop = norm.inverse(low_res).astype(np.float32)
        f = np.asarray(factors, dtype=float)
        spacing = spacing * f
        origin += (f - 1) / 2 * spacing / f
    scale, translate = output_geometry(tuple(spacing), tuple(origin), factors)
    name = config.model.name
    return crop, dict(
        name=f"{name} preview", scale=scale, translate=translate,
        colormap=preview_colormap(colormap), blending="translucent_no_depth",
        metadata={PREVIEW_KEY: {"model": name, "source": item.name,
                                "crop_start": list(start), "crop_shape": list(size)}},
    )


class PreviewLayer:
    """The one preview layer of a panel: added once, then updated in place."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.layer = None
        self.limits = None

    def show(self, array, kwargs: dict) -> None:
        """Show ``array`` with the layer keywords from :func:`preview_crop`."""
        if not kwargs:
            return
        model = kwargs["metadata"][PREVIEW_KEY]["model"]
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            # A preview of this model left by an earlier run (e.g. before Resume) is ours.
            layer = next((lay for lay in self.viewer.layers if lay.name == kwargs["name"]
                          and lay.metadata.get(PREVIEW_KEY, {}).get("model") == model), None)
        limits = _contrast(array)
        if layer is None:
            self.layer = self.viewer.add_image(array, **kwargs, contrast_limits=limits)
            self.layer.bounding_box.visible = True
            self.limits = list(self.layer.contrast_limits)
            return
        # Follow the network's output range until the user sets contrast by hand.
        follow = np.allclose(layer.contrast_limits, self.limits or layer.contrast_limits)
        layer.data = array
        layer.scale, layer.translate = kwargs["scale"], kwargs["translate"]
        if follow:
            layer.contrast_limits_range = _widen(layer.contrast_limits_range, limits)
            layer.contrast_limits = limits
        self.limits = list(layer.contrast_limits)
        self.layer = layer


    def remove(self) -> None:
        """Take the preview layer out of the viewer (the live-preview switch, panel closed)."""
        layer, self.layer = self.layer, None
        try:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        except Exception:  # the viewer is closing: never raise in a Qt event filter
            pass


def _contrast(array) -> list[float]:
    """0.5 / 99.5 percentiles of a (small) preview: robust to a few wild voxels."""
    finite = np.asarray(array, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return [0.0, 1.0]
    low, high = np.percentile(finite, [0.5, 99.5])
    return [float(low), float(high) if high > low else float(low) + 1.0]


def _widen(current, limits) -> list[float]:
    return [min(current[0], limits[0]), max(current[1], limits[1])]
