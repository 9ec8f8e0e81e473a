"""Synthetic pairs sit on the intensity scale a restore of a degraded volume normalises to."""

import numpy as np
import pytest

from napari_volsr.engine.data import percentile_normalization, synthetic_data
from napari_volsr.engine.data.input_scale import degraded_scale
from napari_volsr.engine.data.sampling import NormalizedVolume
from napari_volsr.engine.degrade import DegradationConfig, add_noise

from tests.helpers import smooth

PERCENTILES = (1.0, 99.8)


def _normalized(volume):
    return NormalizedVolume(volume, percentile_normalization(volume, PERCENTILES))


def test_noise_widens_the_scale_and_no_degradation_keeps_it(rng):
    volume = _normalized(smooth(rng, (16, 64, 64)))
    noisy = degraded_scale(volume, 1, DegradationConfig(poisson_peak=(10, 10),
                                                         gaussian_sigma=(0.03, 0.03)),
                           PERCENTILES)
    assert noisy[0] < -0.02 and noisy[1] > 1.1
    clean = degraded_scale(volume, 1, DegradationConfig(), PERCENTILES)
    assert clean == pytest.approx((0.0, 1.0), abs=0.02)


def test_synthetic_inputs_match_what_a_restore_of_the_noisy_volume_sees(rng):
    clean = smooth(rng, (24, 96, 96))
    degradation = DegradationConfig(poisson_peak=(10, 10), gaussian_sigma=(0.03, 0.03))
    data = synthetic_data(clean, 1, (8, 32, 32), degradation, percentiles=PERCENTILES,
                          n_val=0, seed=3)
    low, high = data.summary["input_scale"][0]
    assert low < 0 and high > 1.1
    inputs, targets = data.batch(0, 32)
    # A restore normalises the noisy volume by its own percentiles: the training inputs
    # must come out on that scale, near (0, 1) at the same percentiles.
    norm = percentile_normalization(clean, PERCENTILES)
    noisy_unit = add_noise(norm.forward(clean), np.random.default_rng(0), poisson_peak=10,
                           gaussian_sigma=0.03)
    restore_scale = np.percentile(noisy_unit, PERCENTILES)
    assert (low, high) == pytest.approx(tuple(restore_scale), abs=0.05)
    assert np.percentile(inputs, PERCENTILES) == pytest.approx((0.0, 1.0), abs=0.1)
    # The target follows the same map (the clean range, squeezed by the noisy one).
    unit = norm.forward(clean)
    span = high - low
    assert targets.min() >= (unit.min() - low) / span - 1e-4
    assert targets.max() <= (unit.max() - low) / span + 1e-4
    assert targets.max() - targets.min() < (unit.max() - unit.min()) / span + 1e-4
