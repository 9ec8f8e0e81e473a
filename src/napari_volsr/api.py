"""The console API: the same calls the panels make, for layers or arrays."""

from __future__ import annotations

import os

from ._layers import layer_input, result_layers
from .engine.restorers import list_restorers


def list_models() -> list[str]:
    """Names accepted as ``model`` by :func:`restore`."""
    return list_restorers()


def restore(image, model: str | list[str] = "cubic", z_factor: int | None = None, *,
            factors=None, viewer=None, restorer_options: dict | None = None, **kwargs):
    """Restore a volume (make it isotropic, or upsample it in y and x) with ``model``.

    The same engine call as the Restore panel's and ``volsr restore``'s
    (:func:`napari_volsr.engine.pipeline.iter_restore_job`): the same defaults, the same
    model cache and the same refusals.

    Parameters
    ----------
    image
        A napari Image layer, or a ZYX / CZYX array: numpy, dask, a torch tensor or
        nested lists.
    model
        A name from :func:`list_models` (``"cubic"``, ``"linear"``, ``"nearest"``, a
        trained model) or a model folder; or a list of them, applied one after the
        other in one job (``["n2v", "iso"]``: denoise, then upsample z).
    z_factor
        z upsampling; default: a trained model's own factor, else the layer's (or the
        ``spacing`` keyword's) z/x anisotropy, else 1. For a list: the whole job's.
        Shorthand for ``factors=(z_factor, 1, 1)``.
    factors
        Upsampling per axis ``(z, y, x)``, each an integer 1..16: ``(1, 2, 2)`` doubles y
        and x (lateral super-resolution). Default: a trained model's own, else
        ``(z_factor, 1, 1)``. With ``z_factor`` too, the two must agree.
    viewer
        For a layer: the viewer to add the result to (default: the current one).
    restorer_options
        For trained models: ``flips`` (test-time flips; default: the model's own, on
        for same-shape 2D models), ``diffusion_steps``/``diffusion_samples``, ``seed``,
        ``compile``.
    **kwargs
        Passed to :func:`napari_volsr.engine.predict.iter_restore` (``block_shape``,
        ``percentiles``, ``output_dtype``, ``device``, ``precision``, ``spacing`` ...).

    Returns
    -------
    list of LayerDataTuple or array
        For a layer: the new layers' data tuples (also added to the viewer). For an
        array: the restored array.
    """
    from .engine.pipeline import iter_restore_job
    from .engine.predict import drain

    kwargs.update(_factor_keywords(z_factor, factors))
    if not (hasattr(image, "data") and hasattr(image, "scale")):
        return drain(iter_restore_job(image, model, z_factor, restorer_options=restorer_options,
                                      **kwargs)).data
    source = layer_input(image)
    result = drain(iter_restore_job(source["data"], model, z_factor, spacing=source["spacing"],
                                    origin=source["origin"], restorer_options=restorer_options,
                                    **kwargs))
    layers = result_layers(result, source["name"], source["metadata"], units=source["units"],
                           axis_labels=source["axis_labels"])
    if viewer is None:
        import napari

        viewer = napari.current_viewer()
    if viewer is not None:
        from napari.layers import Layer

        for tup in layers:
            viewer.add_layer(Layer.create(*tup))
    return layers


def _factor_keywords(z_factor, factors) -> dict:
    """``factors`` for the engine when given, checked against ``z_factor`` first (the
    engine's sentence); z-only calls stay as they were."""
    if factors is None:
        return {}
    from .engine.geometry import resolve_factors

    return {"factors": resolve_factors(z_factor, factors)}


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


def volume_input(value, role: str = "volume"):
    """A :class:`~napari_volsr.engine.training_request.VolumeInput` from a layer or an array.

    Layers give their data (level 0 of a pyramid), scale, translate and name, and their
    unit: the ``unit`` this plugin's reader puts in the metadata, else napari's ``units``
    (per-axis lengths become one, the spacing converted). Arrays and tensors are passed
    as they are (the engine checks them).
    """
    from .engine.io import common_unit
    from .engine.training_request import VolumeInput

    if hasattr(value, "data") and hasattr(value, "scale"):
        if getattr(value, "_type_string", "image") != "image" or getattr(value, "rgb", False):
            raise ValueError(f"{role} '{getattr(value, 'name', value)}' must be a grayscale "
                             "image layer")
        data = value.data[0] if getattr(value, "multiscale", False) else value.data
        spacing = tuple(float(s) for s in value.scale)
        origin = tuple(float(t) for t in value.translate)
        unit = (getattr(value, "metadata", None) or {}).get("unit")
        if unit is None and getattr(value, "units", None):
            # Another plugin's layer carries napari's (pint) units, not our reader's metadata.
            unit, spacing, origin = common_unit([str(u) for u in value.units], spacing, origin)
        return VolumeInput(data, spacing=spacing, name=value.name, origin=origin, unit=unit)
    return VolumeInput(value)


def _volume_inputs(value, role: str):
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [volume_input(item, role) for item in items]


def train(raw=None, target=None, volume=None, *, source: str | None = None,
          family: str | None = None, preset: str | None = None, z_factor: int | None = None,
          factors=None, name: str | None = None, steps: int | None = None,
          minutes: float | None = None, spatial_dims: int | None = None,
          network: dict | None = None, resume: bool = False, overwrite: bool = False,
          output_dir=None, config=None, viewer=None, **config_overrides):
    """Train a model and save it in the model library; blocks until done.

    The same request through the Train panel or ``volsr train`` is resolved by the same
    engine function (:func:`napari_volsr.engine.training_request.resolve_training`), so
    it is accepted or refused with the same sentence.

    Parameters
    ----------
    raw, target, volume
        napari Image layers or ZYX numpy/dask arrays (or lists of them). Never modified.
    source
        Default: from the inputs: ``raw`` + ``target`` -> ``paired``; ``target`` alone ->
        ``synthetic`` degradation of clean volumes; ``volume`` -> self-supervised
        ``isotropic`` reconstruction. Denoising on the volume's grid (z-factor 1):
        ``"noise2void"`` from the noisy ``volume`` alone (blind spots), ``"noise2noise"``
        from ``volume=[a, b, ...]``, two or more acquisitions of the same sample.
    family, preset
        ``rcan``, ``srunet``, ``gan``, ``diffusion`` or ``unet`` (default rcan); ``tiny``, ``small``
        (default) or ``default``.
    z_factor, factors
        z upsampling, or upsampling per axis ``(z, y, x)``, each 1..16 (``(1, 2, 2)``:
        lateral super-resolution). Default: target / raw shape per axis (paired), the
        layer's z/x spacing ratio (isotropic), else 1.
    name
        Library name; default: ``<layer>-<family>``, made unique.
    steps, minutes
        Budget (the first reached stops); neither: 1000 steps; ``minutes`` alone: minutes.
    spatial_dims
        2 (same-shape default) or 3; isotropic is 2D. ``context_planes=c``: 2.5D (c each side).
    network
        Overrides of the preset (e.g. ``{"channels": 24}``).
    resume, overwrite
        Continue this name's last checkpoint, or replace an existing model.
    output_dir
        Save the model folder here instead of the library.
    config
        A TrainingConfig file (``.json``/``.yaml``) or mapping; arguments win over it.
    viewer
        Its Restore panels list the new model at once (default: the current one, for layers).
    **config_overrides
        Fields of :class:`~napari_volsr.engine.config.TrainingConfig` (``patch_shape``,
        ``batch_size``, ``learning_rate``, ``degradation``, ``validate_every``,
        ``blind_spot`` (noise2void's masking, e.g. ``{"mask_axis": "x"}``), ``tensorboard``
        (True: a TensorBoard log in the model folder; ``pip install tensorboard``) ...).
        Unset fields take the engine's defaults, the same in every door: the patch fitted to
        the volumes, the source's degradation (``engine.degrade.default_degradation``).

    Returns
    -------
    LoadedModel
        The trained model; ``restore(..., model=result.config.name)`` uses it.
    """
    from .engine.config_files import load_config_file
    from .engine.predict import drain
    from .engine.training_request import resolve_training

    file_values = load_config_file(config) if isinstance(config, (str, os.PathLike)) else config
    request = resolve_training(
        source=source, raw=_volume_inputs(raw, "raw"), target=_volume_inputs(target, "target"),
        volume=_volume_inputs(volume, "volume"), family=family, preset=preset,
        z_factor=z_factor, factors=factors, spatial_dims=spatial_dims, network=network,
        name=name, resume=resume, overwrite=overwrite, output_dir=output_dir,
        file_values=file_values, steps=steps, minutes=minutes, **config_overrides)
    model = drain(request.iter_train())
    used_layers = any(hasattr(v, "scale") for v in (raw, target, volume) if v is not None)
    if viewer is None and used_layers:
        import napari

        viewer = napari.current_viewer()
    if viewer is not None:
        from ._qt.panels import refresh_restore_panels

        refresh_restore_panels(viewer)
    return model
