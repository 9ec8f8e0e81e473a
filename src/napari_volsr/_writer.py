"""npe2 writer: an image layer to TIFF, NIfTI or zarr with its voxel spacing."""

from __future__ import annotations

from .engine.io import Volume, common_unit, long_unit_name, write_volume


def layer_volume(data, meta: dict) -> Volume:
    """A Volume from layer data and the layer's ``meta`` dict (scale, translate, metadata).

    The unit is the layer's napari ``units`` (pint units or their names) where they
    are lengths, axes in different units converted to the smallest; else the
    ``unit`` this plugin's reader put into the layer's metadata.
    """
    if meta.get("multiscale"):  # a pyramid (OME-Zarr) is saved from its full resolution
        data = data[0]
    ndim = data.ndim
    if meta.get("rgb"):
        raise ValueError("RGB layers cannot be saved as volumes; convert to grayscale first")
    if ndim not in (2, 3):
        raise ValueError(f"only 2D or 3D image layers can be saved here, this one has {ndim} dims")
    scale = tuple(meta.get("scale") or (1.0,) * ndim)
    translate = tuple(meta.get("translate") or (0.0,) * ndim)
    metadata = dict(meta.get("metadata") or {})
    unit = metadata.pop("unit", None)
    units = meta.get("units")
    if units is not None and len(units) == ndim:
        layer_unit, layer_scale, layer_translate = common_unit(
            [str(u) for u in units], scale, translate)
        if long_unit_name(layer_unit) is not None:
            unit, scale, translate = layer_unit, layer_scale, layer_translate
    axes = "ZYX" if ndim == 3 else "YX"
    return Volume(data, scale, axes, unit, translate, metadata)


def write_image(path: str, data, meta: dict) -> list[str]:
    """Write one image layer; returns the written path."""
    return [str(write_volume(path, layer_volume(data, meta)))]
