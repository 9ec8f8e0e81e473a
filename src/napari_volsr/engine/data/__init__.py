"""Intensity normalisation and training-pair sources (supervised and self-supervised).

The sources are imported on first use: ``engine.config`` reads the blind-spot config
from this package, and napari imports the config at start-up, long before any
training (the sources pull in the network helpers).
"""

from importlib import import_module

from .normalization import (
    DEFAULT_PERCENTILES,
    Normalization,
    percentile_normalization,
    strided_sample,
)

_LAZY = {
    "FOREGROUND_LEVEL": "sampling",
    "TrainingData": "sampling",
    "noise2noise_data": "self_supervised",
    "noise2void_data": "self_supervised",
    "isotropic_data": "sources",
    "make_training_data": "sources",
    "paired_data": "sources",
    "synthetic_data": "sources",
}

__all__ = [
    "DEFAULT_PERCENTILES",
    "FOREGROUND_LEVEL",
    "Normalization",
    "TrainingData",
    "isotropic_data",
    "make_training_data",
    "noise2noise_data",
    "noise2void_data",
    "paired_data",
    "percentile_normalization",
    "strided_sample",
    "synthetic_data",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
