"""The console API: the same calls the panels make, for layers or arrays."""

from __future__ import annotations

from ._layers import default_z_factor, layer_input, result_layers
from ._training import (
    check_model_name,
    check_pair,
    pair_z_factor,
    refresh_restore_panels,
    suggest_model_name,
    training_config,
    training_data,
)
from .engine.predict import restore as _restore
from .engine.restorers import get_restorer, list_restorers


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
    result = _restore(image, get_restorer(model, z_factor), **kwargs)
    return result.data


# ---------------------------------------------------------------- training
def load_model(name_or_path):
    """Load a trained model from the library (by name) or from a model folder.

    Parameters
    ----------
    name_or_path
        A name from :func:`list_models` or the path of a model folder.

    Returns
    -------
    LoadedModel
        ``config`` (family, task, z-factor, training summary), ``net`` and ``folder``;
        pass it as ``model`` to :func:`restore`.
    """
    from .engine.models import load_model as _load

    return _load(name_or_path)


def _training_input(value, role: str):
    """``(list of arrays, spacing, name)`` from a layer, an array, or a list of them."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    arrays, spacing, name = [], None, None
    for item in items:
        if hasattr(item, "data") and hasattr(item, "scale"):
            source = layer_input(item)
            arrays.append(source["data"])
            spacing = spacing or source["spacing"]
            name = name or source["name"]
        else:
            if getattr(item, "ndim", 3) != 3:
                raise ValueError(f"{role} must be a ZYX volume (3 dimensions), got shape "
                                 f"{tuple(item.shape)}")
            arrays.append(item)
    return arrays, spacing, name


def train(raw=None, target=None, volume=None, *, family: str = "rcan", preset: str = "small",
          z_factor: int | None = None, name: str | None = None, steps: int | None = 1000,
          minutes: float | None = None, spatial_dims: int | None = None,
          network: dict | None = None, resume: bool = False, overwrite: bool = False,
          output_dir=None, viewer=None, **config_overrides):
    """Train a model and save it in the model library; blocks until done.

    The data source follows the inputs: ``raw`` + ``target`` -> paired; ``target``
    alone -> synthetic degradation of clean volumes; ``volume`` -> self-supervised
    isotropic reconstruction of one anisotropic volume.

    Parameters
    ----------
    raw, target, volume
        napari Image layers or ZYX numpy/dask arrays (or lists of them). Never modified.
    family, preset
        ``rcan``, ``srunet``, ``gan`` or ``diffusion``; ``tiny``, ``small`` or ``default``.
    z_factor
        z upsampling; default: target depth / raw depth (paired), 1 (synthetic) or the
        layer's z/x spacing ratio (isotropic).
    name
        Library name; default: ``<layer>-<family>``, made unique.
    steps, minutes
        Budget; training stops at whichever comes first.
    spatial_dims
        3 (default) or 2 for slice-wise restoration; the isotropic source is always 2D.
    network
        Overrides of the preset (e.g. ``{"channels": 24}``).
    resume, overwrite
        Continue this name's last checkpoint, or replace an existing model.
    output_dir
        Save the model folder here instead of the library.
    viewer
        Restore panels docked in it list the new model at once (default: the current
        viewer when layers were passed).
    **config_overrides
        Fields of :class:`~napari_volsr.engine.config.TrainingConfig` (``patch_shape``,
        ``batch_size``, ``learning_rate``, ``degradation``, ``validate_every`` ...).

    Returns
    -------
    LoadedModel
        The trained model; ``restore(..., model=result.config.name)`` uses it.
    """
    from .engine.train import train as _train

    if volume is not None and (raw is not None or target is not None):
        raise ValueError("pass either volume= (self-supervised isotropic) or raw=/target=, "
                         "not both")
    if raw is not None and target is None:
        raise ValueError("raw= needs its target=; for one anisotropic volume pass volume=")
    if volume is None and target is None:
        raise ValueError("nothing to train on: pass raw= and target=, target= alone, or volume=")
    arrays, spacing, layer_name = {}, None, None
    if volume is not None:
        source = "isotropic"
        arrays["volumes"], spacing, layer_name = _training_input(volume, "volume")
        if z_factor is None:
            if spacing is None:
                raise ValueError("pass z_factor (z spacing / x spacing) for an array volume")
            z_factor = default_z_factor(spacing)
        if z_factor < 2:
            raise ValueError("the volume looks isotropic (z-factor 1): pass z_factor, the ratio "
                             "of z spacing to x spacing")
    else:
        arrays["targets"], spacing, layer_name = _training_input(target, "target")
        if raw is None:
            source = "synthetic"
            z_factor = 1 if z_factor is None else z_factor
        else:
            source = "paired"
            arrays["raws"], raw_spacing, raw_name = _training_input(raw, "raw")
            spacing, layer_name = raw_spacing or spacing, raw_name or layer_name
            if len(arrays["raws"]) != len(arrays["targets"]):
                raise ValueError("pass one target per raw volume")
            if z_factor is None:
                z_factor = pair_z_factor(arrays["raws"][0].shape, arrays["targets"][0].shape)
                if z_factor is None:
                    check_pair(arrays["raws"][0].shape, arrays["targets"][0].shape, 1)
            for r, t in zip(arrays["raws"], arrays["targets"], strict=True):
                check_pair(r.shape, t.shape, z_factor)
    name = check_model_name(name) if name is not None else suggest_model_name(layer_name, family)
    config = training_config(source, family=family, preset=preset, z_factor=z_factor,
                             spatial_dims=spatial_dims, name=name, network=network,
                             steps=steps, minutes=minutes, **config_overrides)
    data = training_data(config, **arrays)
    model = _train(config, data, output_dir=output_dir, resume=resume, overwrite=overwrite,
                   voxel_spacing=spacing)
    used_layers = any(hasattr(v, "scale") for v in (raw, target, volume) if v is not None)
    if viewer is None and used_layers:
        import napari

        viewer = napari.current_viewer()
    if viewer is not None:
        refresh_restore_panels(viewer)
    return model
