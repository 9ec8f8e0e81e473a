"""What restoration takes: a ZYX or CZYX numeric array, channel axis first."""

from __future__ import annotations

import numpy as np


def as_volume_array(data):
    """Check that ``data`` is a ZYX or CZYX array; return it with a channel axis first.

    Raises
    ------
    ValueError
        For 2-D images, 5-D data, non-numeric or complex arrays.
    """
    if type(data).__module__.split(".")[0] == "torch":  # a tensor: its values, on the CPU
        data = data.detach().cpu().numpy()
    if not hasattr(data, "ndim") or not hasattr(data, "shape"):
        data = np.asarray(data)  # nested lists and other array-likes
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "buif":
        raise ValueError(f"cannot restore data of type {dtype}; expected a numeric image")
    if data.ndim == 2:
        raise ValueError(
            f"restoration needs a 3D volume (Z, Y, X); got a 2D image of shape {tuple(data.shape)}"
        )
    if 0 in data.shape:
        raise ValueError(f"the volume is empty (shape {tuple(data.shape)}); nothing to restore")
    if data.ndim == 3:
        return data[None]
    if data.ndim == 4 and data.shape[-1] in (3, 4):
        raise ValueError(
            f"the last axis of {tuple(data.shape)} has {data.shape[-1]} values: an RGB(A) "
            "volume? Restoration takes channels first (C, Z, Y, X): move the colour axis "
            "first (numpy.moveaxis(data, -1, 0)) or convert to grayscale"
        )
    if data.ndim == 4:
        return data
    raise ValueError(
        f"restoration needs a 3D volume (Z, Y, X) or channels first (C, Z, Y, X); "
        f"got {data.ndim} dimensions {tuple(data.shape)}: restore one time point or "
        "position at a time (e.g. data[t])"
    )
