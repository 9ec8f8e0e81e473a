"""PSNR, SSIM and NRMSE against values worked out by hand."""

import math

import numpy as np
import pytest
from scipy import ndimage

from napari_volsr.engine.metrics import data_range_of, nrmse, psnr, ssim


@pytest.fixture
def reference():
    """A smooth (6, 16, 16) volume spanning exactly 1..3: its range (2) is not its maximum."""
    vol = ndimage.gaussian_filter(np.random.default_rng(0).random((6, 16, 16)), 1.5)
    return (vol - vol.min()) / np.ptp(vol) * 2.0 + 1.0


def test_identical_arrays():
    ref = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    assert psnr(ref, ref) == math.inf
    assert ssim(ref, ref) == pytest.approx(1.0)
    assert nrmse(ref, ref) == 0.0


def test_a_known_error_gives_the_known_scores(reference):
    prediction = reference + 0.1  # MSE 0.01, RMSE 0.1; the reference's range is 2
    assert data_range_of(reference) == pytest.approx(2.0)
    assert psnr(prediction, reference) == pytest.approx(10 * math.log10(2.0**2 / 0.01))
    assert psnr(prediction, reference, data_range=1.0) == pytest.approx(20.0)
    assert nrmse(prediction, reference) == pytest.approx(0.1 / 2.0)


def test_a_constant_reference_counts_as_range_one():
    ref = np.full((4, 5, 6), 7.0)
    assert data_range_of(ref) == 1.0
    assert psnr(ref + 0.5, ref) == pytest.approx(10 * math.log10(1 / 0.25))
    assert nrmse(ref + 0.5, ref) == pytest.approx(0.5)


def test_ssim_is_one_for_identical_and_falls_with_noise(reference):
    rng = np.random.default_rng(1)
    assert ssim(reference, reference) == pytest.approx(1.0)
    scores = [ssim(reference + rng.normal(0, sigma, reference.shape), reference)
              for sigma in (0.02, 0.2)]
    assert 1.0 > scores[0] > scores[1]


def test_ssim_works_in_2d_and_on_thin_volumes(reference):
    assert ssim(reference[0], reference[0]) == pytest.approx(1.0)
    thin = reference[:4]  # an even depth of 4: the window shrinks to 3
    assert ssim(thin, thin) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 3 voxels"):
        ssim(reference[:2], reference[:2])


def test_shapes_must_match(reference):
    for metric in (psnr, ssim, nrmse):
        with pytest.raises(ValueError, match="differ in shape"):
            metric(reference[:5], reference)
