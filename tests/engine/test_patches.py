"""Default patches fitted to the volume: never an error when some patch fits."""

import itertools

import numpy as np
import pytest

from napari_volsr.engine.data import make_training_data
from napari_volsr.engine.data.patches import (
    PatchFitError,
    check_patch_shape,
    default_patch_shape,
    fit_patch_shape,
)
from napari_volsr.engine.training_request import VolumeInput, resolve_training

LATERAL = (32, 33, 48, 100, 176, 257, 2000)


def test_large_volumes_get_the_default_patch():
    fit = fit_patch_shape("isotropic", 2, 4, [(40, 2000, 2000)])
    assert fit.patch_shape == default_patch_shape("isotropic", 2, 4) == (16, 64)
    assert fit.note == "" and fit.n_val is None


@pytest.mark.parametrize("f", range(2, 9))
def test_isotropic_fits_every_lateral_size_from_32_pixels(f):
    for rows, cols in itertools.product(LATERAL, LATERAL):
        fit = fit_patch_shape("isotropic", 2, f, [(12, rows, cols)])
        py, px = fit.patch_shape
        assert py >= 4 and px >= 4
        target_rows = py * f
        # The sampler's own rule: the patch and, unless dropped, its validation band fit.
        assert target_rows <= (rows if fit.n_val == 0 else rows // 2) and px <= cols


def test_fitted_patches_build_training_data_for_every_source(rng):
    cases = [("isotropic", 2, 4, (10, 40, 36)), ("isotropic", 2, 8, (6, 32, 32)),
             ("synthetic", 3, 2, (20, 33, 40)), ("paired", 3, 1, (5, 40, 40)),
             ("synthetic", 2, 1, (3, 20, 20))]
    for source, dims, f, shape in cases:
        volume = rng.random(shape).astype(np.float32)
        roles = {"isotropic": {"volume": VolumeInput(volume, spacing=(f, 1, 1))},
                 "synthetic": {"target": VolumeInput(volume)},
                 "paired": {"raw": VolumeInput(volume), "target": VolumeInput(volume + 1)}}
        request = resolve_training(**roles[source], z_factor=f, spatial_dims=dims,
                                   preset="tiny", name="fit", output_dir="/nonexistent",
                                   degradation={"gaussian_sigma": (0.01, 0.02)})
        data = request.data  # the sampler accepts the fitted patch
        assert data.patch_shape == request.config.patch_shape or source != "isotropic"
        assert request.config.patch_shape is not None


def test_too_small_volume_names_the_smallest_usable_one():
    with pytest.raises(PatchFitError, match=r"at least \(16, 4, 4\) voxels"):
        fit_patch_shape("synthetic", 3, 4, [(8, 32, 32)], names=["tiny"])


def test_gan_discriminator_sets_the_smallest_patch():
    fit = fit_patch_shape("synthetic", 3, 1, [(20, 40, 40)], min_target=16)
    assert min(fit.patch_shape) >= 16


def test_network_divisor_is_respected():
    fit = fit_patch_shape("synthetic", 3, 1, [(50, 70, 70)], divisor=(8, 8, 8))
    assert all(p % 8 == 0 for p in fit.patch_shape)


def test_the_request_says_what_was_fitted_and_keeps_a_given_patch(rng):
    volume = VolumeInput(rng.random((12, 40, 40)).astype(np.float32), spacing=(4, 1, 1))
    fitted = resolve_training(volume=volume, name="a", output_dir="/nonexistent")
    assert fitted.config.patch_shape == (5, 40) and "fitted to the volume" in fitted.note
    given = resolve_training(volume=volume, name="a", output_dir="/nonexistent",
                             patch_shape=(4, 8))
    assert given.config.patch_shape == (4, 8) and given.note == ""


def test_a_given_patch_is_checked_and_drops_validation_only_when_it_must():
    assert check_patch_shape("isotropic", 2, 4, [(40, 152, 126)], (16, 64)).n_val is None
    # 128 target rows fit in 152 but not beside a validation band (the issue's --patch 32,64)
    fit = check_patch_shape("isotropic", 2, 4, [(40, 152, 126)], (32, 64))
    assert fit.patch_shape == (32, 64) and fit.n_val == 0
    assert "training without validation" in fit.note
    with pytest.raises(PatchFitError) as refusal:
        check_patch_shape("isotropic", 2, 4, [(40, 152, 126)], (64, 64), names=["chromosomes"])
    assert str(refusal.value) == ("patch shape (64, 64) needs a volume of at least (1, 256, 64) "
                                  "voxels (z, y, x) but 'chromosomes' is (40, 152, 126); use a "
                                  "smaller patch")
    with pytest.raises(PatchFitError, match=r"at least \(8, 16, 16\)"):
        check_patch_shape("synthetic", 3, 2, [(6, 40, 40)], (4, 16, 16))
