"""Sample volumes shipped with the plugin (see sample_data/README.md for credits)."""

from __future__ import annotations

from pathlib import Path

from ._reader import volume_layer_kwargs
from .engine.io import read_volume

SAMPLE_DIR = Path(__file__).parent / "sample_data"


def _sample(filename: str, name: str):
    volume = read_volume(SAMPLE_DIR / filename)
    return [(volume.data, volume_layer_kwargs(volume, name), "image")]


def chromosomes():
    """Anisotropic, noisy chromosome stack (NEUBIAS, CC BY 4.0)."""
    return _sample("chromosomes_anisotropic.tif", "chromosomes")


def em_fibsem():
    """Isotropic 10 nm FIB-SEM of the fly medulla (Janelia FlyEM, CC BY)."""
    return _sample("em_fibsem_medulla.tif", "em_fibsem")
