"""The Volume record (data plus voxel geometry), its error type and helpers every format shares."""

from __future__ import annotations

import re
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


# Length units: short form (also the OME-XML symbol) -> power of ten of a metre
# (exponents, so that a conversion is one exact power of ten: 1 µm is 1000.0 nm).
_METRES = {"km": 3, "m": 0, "cm": -2, "mm": -3, "µm": -6, "nm": -9, "Å": -10, "pm": -12}
# Long names (UDUNITS-2, as OME-Zarr wants them; pint parses them, as napari needs).
_LONG_NAMES = {"km": "kilometer", "m": "meter", "cm": "centimeter", "mm": "millimeter",
               "µm": "micrometer", "nm": "nanometer", "Å": "angstrom", "pm": "picometer"}
# Other spellings found in files: ImageJ's "micron", ASCII "um", the Greek mu, "metre"...
# Keys are lower case: the Angstrom sign lowers to a small a with a ring.
_SPELLINGS = {
    key.lower(): short for key, short in {
        **{short: short for short in _METRES},
        **{name: short for short, name in _LONG_NAMES.items()},
        **{name.replace("meter", "metre"): short for short, name in _LONG_NAMES.items()},
        "micron": "µm", "um": "µm", "\N{GREEK SMALL LETTER MU}m": "µm",
        "\N{ANGSTROM SIGN}": "Å", "ångström": "Å", "angstroem": "Å",
        "pixel": None, "px": None, "": None, "none": None, "unknown": None,
    }.items()
}
# ImageJ writes non-ASCII characters as Java escapes: "\\u00B5m".
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def normalise_unit(unit: Any) -> str | None:
    """A file's length unit in the short form (``"µm"``), or None for pixels or none.

    Plurals and the spellings of ImageJ (``"micron"``, ``"\\u00B5m"``), OME, OME-Zarr and
    pint (``"micrometer"``) are understood; any other text is kept as it is, so that a
    unit this module does not know is carried through rather than guessed.
    """
    if unit is None:
        return None
    text = str(unit).strip()
    text = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    key = text.lower()
    # "microns", "nanometers", "pixels"; never "ms" or "ns", which are times.
    if key not in _SPELLINGS and len(key) > 4 and key.endswith("s") and key[:-1] in _SPELLINGS:
        key = key[:-1]
    return _SPELLINGS.get(key, text) if key in _SPELLINGS else text


def long_unit_name(unit: str | None) -> str | None:
    """The UDUNITS-2/pint name of a length unit (``"µm"`` -> ``"micrometer"``), or None.

    None for no unit and for a unit this module does not know, so callers leave it
    out instead of writing a wrong one.
    """
    return _LONG_NAMES.get(normalise_unit(unit) or "")


def length_factor(unit: str | None, to: str) -> float | None:
    """How many ``to`` make one ``unit`` (``"nm"`` to ``"µm"``: 1e-3); None for unknown units."""
    source, target = _METRES.get(normalise_unit(unit) or ""), _METRES.get(to)
    return None if source is None or target is None else 10.0 ** (source - target)


def common_unit(units, spacing, origin=None):
    """One unit for per-axis units, with the spacing (and origin) converted to it.

    Parameters
    ----------
    units
        One unit per axis (any spelling :func:`normalise_unit` reads; None for none).
    spacing, origin
        Values per axis in those units.

    Returns
    -------
    tuple
        ``(unit, spacing, origin)``: the shared unit; for different length units the
        smallest of them, the values converted; ``(None, spacing, origin)`` unchanged
        where the axes' units are missing, unknown or not all lengths.
    """
    names = [normalise_unit(u) for u in units]
    spacing = tuple(float(s) for s in spacing)
    origin = None if origin is None else tuple(float(t) for t in origin)
    if not names or len(set(names)) == 1:
        return (names[0] if names else None), spacing, origin
    if not all(n in _METRES for n in names):
        return None, spacing, origin
    target = min(names, key=_METRES.__getitem__)
    factors = [length_factor(n, target) for n in names]
    spacing = tuple(s * f for s, f in zip(spacing, factors))
    if origin is not None:
        origin = tuple(t * f for t, f in zip(origin, factors))
    return target, spacing, origin


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
