"""Intensity normalisation and training-pair sources (paired, synthetic, isotropic)."""

from .normalization import (
    DEFAULT_PERCENTILES,
    Normalization,
    percentile_normalization,
    strided_sample,
)
from .sampling import FOREGROUND_LEVEL, TrainingData
from .sources import isotropic_data, make_training_data, paired_data, synthetic_data

__all__ = [
    "DEFAULT_PERCENTILES",
    "FOREGROUND_LEVEL",
    "Normalization",
    "TrainingData",
    "isotropic_data",
    "make_training_data",
    "paired_data",
    "percentile_normalization",
    "strided_sample",
    "synthetic_data",
]
