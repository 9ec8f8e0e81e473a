"""Numbers written for people: byte sizes."""

from __future__ import annotations


def format_bytes(n: float) -> str:
    """Return a byte count in binary units with three significant digits.

    Parameters
    ----------
    n : float
        Number of bytes.

    Returns
    -------
    str
        E.g. ``"512 B"``, ``"12.5 MiB"``, ``"1.5 GiB"``, ``"1000 KiB"``.
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1023.5:  # so rounding never prints 1024 of a unit
            if unit == "B":
                return f"{n:.0f} B"
            # Between 1000 and 1023 three significant digits would need an exponent.
            return f"{n:.3g} {unit}" if abs(n) < 1000 else f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.3g} TiB" if abs(n) < 1000 else f"{n:.0f} TiB"
