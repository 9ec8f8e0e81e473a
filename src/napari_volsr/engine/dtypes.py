"""The data type of restored volumes: the choices, the default, and the conversion."""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_OUTPUT_DTYPE", "OUTPUT_DTYPES", "check_output_dtype", "output_dtype_for",
           "output_dtype_of", "to_output_dtype"]

OUTPUT_DTYPES = ("auto", "input", "float32", "uint8", "uint16")
# Every door's default (:func:`output_dtype_for`): the input's type where the restored
# values fit it, rounded and clipped to its range (never wrapped); float32 on request.
DEFAULT_OUTPUT_DTYPE = "auto"


def output_dtype_for(output_dtype: str, input_dtype) -> np.dtype:
    """The dtype restored intensities are given in, for an ``output_dtype`` choice.

    ``"input"`` is ``input_dtype``. ``"auto"`` (the default) too, where the restored
    values fit it: integers up to 32 bits (rounded and clipped to their range) and
    floats. Restored masks are fractions: bool gives float32; 64-bit integers give
    float64 (exact up to 2**53; TIFF cannot store 64-bit integers).
    """
    input_dtype = np.dtype(input_dtype)
    if output_dtype == "auto":
        if input_dtype.kind == "b":
            return np.dtype("float32")
        if input_dtype.kind in "iu" and input_dtype.itemsize == 8:
            return np.dtype("float64")
        return input_dtype
    return input_dtype if output_dtype == "input" else np.dtype(output_dtype)


def to_output_dtype(values: np.ndarray, output_dtype: str, input_dtype) -> np.ndarray:
    """Convert restored values (input units) to ``output_dtype``, rounding and clipping integers.

    ``output_dtype`` is one of :data:`OUTPUT_DTYPES` (:func:`output_dtype_for`).
    """
    target = output_dtype_for(output_dtype, input_dtype)
    if target.kind in "iu":
        info = np.iinfo(target)
        values = np.rint(values)
        # Floats round the top of 32/64-bit ranges up past the maximum, which would wrap
        # the brightest voxels to the darkest: clip just below it instead.
        high = np.asarray(info.max, dtype=values.dtype)
        if int(high) > info.max:
            high = np.nextafter(high, 0)
        return np.clip(values, info.min, high).astype(target)
    if target.kind == "b":
        return values > 0.5
    if target.itemsize < np.dtype(values.dtype).itemsize:  # float16: clip, never overflow
        info = np.finfo(target)
        values = np.clip(values, info.min, info.max)
    return values.astype(target, copy=False)


def output_dtype_of(output: str, output_dtype: str, input_dtype) -> np.dtype:
    """The dtype :func:`to_output_units` gives ``output`` (uncertainty stays float32)."""
    if output == "uncertainty":
        return np.dtype("float32")
    return output_dtype_for(output_dtype, input_dtype)


def check_output_dtype(output_dtype: str) -> None:
    """Refuse an output dtype not in :data:`OUTPUT_DTYPES`, naming the choices."""
    if output_dtype not in OUTPUT_DTYPES:
        raise ValueError(f"output_dtype must be one of {', '.join(OUTPUT_DTYPES)}, "
                         f"got {output_dtype!r}")
