"""Between napari layers and engine arrays: layer inputs and result layers (no napari import)."""

from __future__ import annotations

import numpy as np

from .engine.data import strided_sample
# default_z_factor: re-exported for the doors.
from .engine.geometry import default_z_factor, describe_factors, validate_factors  # noqa: F401
from .engine.io import long_unit_name
from .engine.predict import RestoreResult, as_volume_array


class LayerInputError(ValueError):
    """A layer cannot be restored; the message says what to change."""


def layer_input(layer) -> dict:
    """Arrays and geometry of an image layer, checked; read on the main thread.

    Returns
    -------
    dict
        ``data``, ``spacing``, ``origin``, ``name``, ``metadata`` (a copy), and the
        layer's napari ``units`` (as names) and ``axis_labels``, None where it has none.
    """
    if getattr(layer, "_type_string", "image") != "image" or not hasattr(layer, "data"):
        raise LayerInputError(f"'{getattr(layer, 'name', layer)}' is not an image layer")
    if getattr(layer, "rgb", False):
        raise LayerInputError(
            f"'{layer.name}' is an RGB image; convert it to grayscale or split its channels"
        )
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    if data.ndim < 3:  # the engine's refusal, word for word, as every door says it
        try:
            as_volume_array(data)
        except ValueError as exc:
            raise LayerInputError(str(exc)) from None
    if data.ndim != 3:  # the engine takes CZYX arrays; a layer's extra axis may be time
        raise LayerInputError(
            f"'{layer.name}' has {data.ndim} dimensions {tuple(data.shape)}; restoration "
            "needs a 3D volume (Z, Y, X): split its channels or time points into separate "
            "3D layers first"
        )
    return {
        "data": data,
        "spacing": tuple(float(s) for s in layer.scale),
        "origin": tuple(float(t) for t in layer.translate),
        "name": layer.name,
        "metadata": dict(layer.metadata),
        "units": _unit_names(getattr(layer, "units", None)),
        "axis_labels": _axis_labels(getattr(layer, "axis_labels", None)),
    }


def _unit_names(units) -> tuple[str, ...] | None:
    """A layer's pint units as their names; None without units or when all are pixels."""
    if not units:
        return None
    names = tuple(str(u) for u in units)
    return None if all(long_unit_name(n) is None for n in names) else names


def _axis_labels(labels) -> tuple[str, ...] | None:
    return tuple(str(a) for a in labels) if labels else None


def result_factors(result) -> tuple[int, int, int]:
    """A restore result's ``(fz, fy, fx)``; results without ``factors`` upsampled z only."""
    factors = getattr(result, "factors", None)
    return validate_factors(factors if factors is not None else result.z_factor)


def result_name(source: str, label: str, factors) -> str:
    """``stack [cubic x4]``, ``stack [cubic x(1,2,2)]``, ``stack [my-rcan]``: the name says
    what happened (``factors``: ``(fz, fy, fx)``, or an int for z only)."""
    factors = validate_factors(factors)
    if factors == (1, 1, 1):
        return f"{source} [{label}]"
    return f"{source} [{label} {describe_factors(factors)}]"


def result_label(settings: dict) -> str:
    """What restored a result: the trained model's name (two RCAN models differ), else
    the baseline's (``cubic``)."""
    return str(settings.get("model") or settings.get("method") or "restored")


def _contrast_limits(data) -> list[float]:
    sample = strided_sample(data, 2_000_000).astype(np.float64, copy=False)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return [0.0, 1.0]
    low, high = np.percentile(sample, [0.1, 99.9])
    return [float(low), float(high) if high > low else float(low) + 1.0]


def result_layers(result: RestoreResult, source_name: str, source_metadata: dict | None = None,
                  *, units=None, axis_labels=None):
    """napari layer data tuples for a restore result (restored + optional uncertainty).

    Parameters
    ----------
    result, source_name, source_metadata
        The restore result, and the input layer's name and metadata.
    units, axis_labels
        The input layer's (:func:`layer_input`), inherited by the outputs, which lie
        on the same axes. Without ``units``, the ``unit`` this plugin's reader put
        into the metadata gives them; with neither, napari's default (pixels) stays.
    """
    base_meta = dict(source_metadata or {})
    base_meta.pop("source_path", None)
    name = result_name(source_name, result_label(result.settings), result_factors(result))
    axes = {}
    unit = long_unit_name(base_meta.get("unit"))
    if units is None and unit is not None:
        units = (unit,) * len(result.spacing)
    if units is not None:
        axes["units"] = tuple(units)
    if axis_labels is not None:
        axes["axis_labels"] = tuple(axis_labels)
    layers = []
    for output, data in result.outputs.items():
        meta = dict(base_meta)
        meta["volsr"] = {**result.settings, "source": source_name, "output": output,
                         "plan": result.plan}
        kwargs = {
            "name": name if output == "restored" else f"{name} {output}",
            "scale": result.spacing,
            "translate": result.origin,
            "metadata": meta,
            "contrast_limits": _contrast_limits(data),
            **axes,
        }
        if output == "uncertainty":
            kwargs["colormap"] = "magma"
            kwargs["blending"] = "additive"
            kwargs["visible"] = False
        layers.append((data, kwargs, "image"))
    return layers
