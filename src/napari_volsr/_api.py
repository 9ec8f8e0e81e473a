"""The console API: the same calls the panels make, for layers or arrays."""

from __future__ import annotations

from ._layers import default_z_factor, layer_input, result_layers
from .engine.restorers import get_restorer, list_restorers
from .engine.predict import restore as _restore


def list_models() -> list[str]:
    """Names accepted as ``model`` by :func:`restore`."""
    return list_restorers()


def restore(image, model: str = "cubic", z_factor: int | None = None, *, viewer=None, **kwargs):
    """Restore a volume (or make it isotropic) with ``model``.

    Parameters
    ----------
    image
        A napari Image layer, or a ZYX / CZYX numpy or dask array.
    model
        A name from :func:`list_models` (``"cubic"``, ``"linear"``, ``"nearest"``).
    z_factor
        z upsampling; default: from the layer's scale anisotropy (1 for arrays).
    viewer
        For a layer: the viewer to add the result to (default: the current one).
    **kwargs
        Passed to :func:`napari_volsr.engine.predict.iter_restore` (``block_shape``,
        ``percentiles``, ``output_dtype``, ``device``, ``precision``, ``spacing`` ...).

    Returns
    -------
    list of LayerDataTuple or array
        For a layer: the new layers' data tuples (also added to the viewer). For an
        array: the restored array.
    """
    if hasattr(image, "data") and hasattr(image, "scale"):
        source = layer_input(image)
        if z_factor is None:
            z_factor = default_z_factor(source["spacing"])
        result = _restore(
            source["data"], get_restorer(model, z_factor),
            spacing=source["spacing"], origin=source["origin"], **kwargs,
        )
        layers = result_layers(result, source["name"], source["metadata"])
        if viewer is None:
            import napari

            viewer = napari.current_viewer()
        if viewer is not None:
            from napari.layers import Layer

            for tup in layers:
                viewer.add_layer(Layer.create(*tup))
        return layers
    result = _restore(image, get_restorer(model, z_factor or 1), **kwargs)
    return result.data
