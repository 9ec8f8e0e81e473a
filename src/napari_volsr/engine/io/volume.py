"""The Volume record (data plus voxel geometry), its error type and helpers every format shares."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

SPATIAL_AXES = "ZYX"


class VolumeIOError(Exception):
    """A file could not be read or written; the message says why and what to do."""


class VolsrWarning(UserWarning):
    """Work goes on, but the result may not be what was expected; the message says why.

    ``volsr`` prints these as ``volsr: warning: ...``; napari shows them as notifications.
    """


@dataclass(frozen=True)
class Volume:
    """An image volume and its physical geometry.

    Attributes
    ----------
    data
        numpy or dask array, axes as in ``axes`` (spatial axes last).
    spacing
        Voxel size per spatial axis, in ``unit``, same order as the spatial axes.
    axes
        ``"ZYX"``, ``"CZYX"``, ``"YX"`` or ``"CYX"``.
    unit
        Physical unit of ``spacing`` (``"µm"``, ``"nm"``, ``"mm"``) or ``None``.
    origin
        World position of the first voxel's centre per spatial axis.
    metadata
        Format details needed to write the volume back (e.g. the NIfTI affine).
    """

    data: Any
    spacing: tuple[float, ...]
    axes: str = "ZYX"
    unit: str | None = None
    origin: tuple[float, ...] | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.axes) != self.data.ndim:
            raise ValueError(f"axes {self.axes!r} do not match data with {self.data.ndim} dims")
        n_spatial = sum(a in SPATIAL_AXES for a in self.axes)
        if len(self.spacing) != n_spatial:
            raise ValueError(f"spacing {self.spacing} needs {n_spatial} values for {self.axes}")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        if self.origin is None:
            object.__setattr__(self, "origin", (0.0,) * n_spatial)
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"voxel spacing must be positive and finite, got {self.spacing}")

    @property
    def channel_axis(self) -> int | None:
        """Index of the channel axis, or None."""
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes only."""
        return tuple(n for n, a in zip(self.data.shape, self.axes) if a in SPATIAL_AXES)

    def with_data(self, data, spacing=None, origin=None) -> Volume:
        """A copy with new data (and optionally new geometry), metadata kept."""
        return replace(
            self,
            data=data,
            spacing=self.spacing if spacing is None else spacing,
            origin=self.origin if origin is None else origin,
            metadata=dict(self.metadata),
        )


def normalise_unit(unit: Any) -> str | None:
    """A file's length unit in the short form (``"µm"``), or None for pixels or none."""
    if unit is None:
        return None
    text = str(unit).strip()
    # ImageJ stores the micro sign escaped in some files.
    text = text.replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    aliases = {"micron": "µm", "microns": "µm", "um": "µm", "μm": "µm", "pixel": None, "": None}
    return aliases.get(text.lower(), text) if text.lower() in aliases else text


def one_line_message(exc: BaseException) -> str:
    """A library's error text on one line (nibabel's span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def widen_for_storage(data: np.ndarray) -> np.ndarray:
    """Widen types TIFF and NIfTI lack, losslessly: bool -> uint8, float16 -> float32."""
    if data.dtype == bool:
        return data.astype(np.uint8)
    if data.dtype == np.float16:
        return data.astype(np.float32)
    return data
