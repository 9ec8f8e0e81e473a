import numpy as np
import pytest
from pydantic import ValidationError

from napari_volsr.engine.degrade import (
    DegradationConfig,
    add_noise,
    blur,
    degrade,
    slab_downsample,
)


def test_slab_downsample_matches_hand_computation_and_crops_remainder():
    volume = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3)
    out = slab_downsample(volume, 3)
    expected = np.stack([
        (volume[0] + volume[1] + volume[2]) / 3,
        (volume[3] + volume[4] + volume[5]) / 3,
    ])  # slice 6 does not fill a slab and is dropped
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("axis", [1, -1])
def test_slab_downsample_other_axes(axis):
    volume = np.arange(2 * 5 * 4, dtype=np.int32).reshape(2, 5, 4)
    out = slab_downsample(volume, 2, axis=axis)
    moved = np.moveaxis(volume.astype(np.float64), axis, 0)  # the axis, first
    expected = np.moveaxis((moved[0:4:2] + moved[1:4:2]) / 2, 0, axis)
    np.testing.assert_allclose(out, expected)


def test_slab_downsample_factor_one_is_identity_and_errors():
    volume = np.random.default_rng(0).random((3, 4, 5))
    np.testing.assert_allclose(slab_downsample(volume, 1), volume, rtol=1e-6)
    with pytest.raises(ValueError, match="fewer than one slab"):
        slab_downsample(volume, 4)
    with pytest.raises(ValueError, match="z_factor"):
        slab_downsample(volume, 1.5)


def test_blur_per_axis_leaves_constant_axis_alone():
    rng = np.random.default_rng(1)
    plane = rng.random((1, 16, 16)).astype(np.float32)
    volume = np.repeat(plane, 8, axis=0)  # constant along z
    np.testing.assert_allclose(blur(volume, (2.0, 0.0, 0.0)), volume, atol=1e-6)
    blurred = blur(volume, 1.5)
    assert blurred.std() < volume.std()
    assert blurred.mean() == pytest.approx(volume.mean(), abs=1e-3)
    with pytest.raises(ValueError, match="non-negative"):
        blur(volume, -1.0)


def test_poisson_noise_variance_is_mean_over_peak():
    rng = np.random.default_rng(2)
    data = np.full((200_000,), 0.5, dtype=np.float32)
    noisy = add_noise(data, rng, poisson_peak=20.0)
    assert noisy.mean() == pytest.approx(0.5, rel=0.01)
    assert noisy.var() == pytest.approx(0.5 / 20.0, rel=0.05)
    # Photon counts scaled back: every value is a multiple of 1 / peak.
    np.testing.assert_allclose(noisy * 20.0, np.round(noisy * 20.0), atol=1e-4)
    assert (data == 0.5).all()  # input untouched


def test_gaussian_noise_and_combination():
    rng = np.random.default_rng(3)
    data = np.full((200_000,), 0.5, dtype=np.float32)
    gaussian = add_noise(data, rng, gaussian_sigma=0.1)
    assert gaussian.std() == pytest.approx(0.1, rel=0.03)
    both = add_noise(data, rng, poisson_peak=50.0, gaussian_sigma=0.1)
    assert both.var() == pytest.approx(0.5 / 50.0 + 0.01, rel=0.05)
    assert add_noise(data, rng).tolist() == data.tolist()


def test_poisson_noise_passes_negative_values_and_is_seeded():
    data = np.array([-0.3, -0.1, 0.0], dtype=np.float32)
    np.testing.assert_allclose(add_noise(data, np.random.default_rng(0), poisson_peak=10.0),
                               data)
    ramp = np.linspace(0, 1, 1000, dtype=np.float32)
    a = add_noise(ramp, np.random.default_rng(7), poisson_peak=5.0, gaussian_sigma=0.05)
    b = add_noise(ramp, np.random.default_rng(7), poisson_peak=5.0, gaussian_sigma=0.05)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"blur_sigma": (2.0, 1.0)}, "blur_sigma"),
        ({"gaussian_sigma": (0.3, 0.1)}, "gaussian_sigma"),
        ({"poisson_peak": (100.0, 10.0)}, "poisson_peak"),
        ({"blur_sigma": (-1.0, 1.0)}, "blur_sigma"),
        ({"poisson_peak": (0.0, 10.0)}, "poisson_peak"),
        ({"lateral_blur_sigma": (0.0, 1000.0)}, "lateral_blur_sigma"),
        ({"noise": 1.0}, "noise"),
    ],
)
def test_config_rejects_bad_ranges_naming_the_field(kwargs, field):
    with pytest.raises(ValidationError, match=field):
        DegradationConfig(**kwargs)


def test_degrade_without_blur_or_noise_is_slab_average():
    rng = np.random.default_rng(4)
    target = rng.random((12, 6, 5)).astype(np.float32)
    out = degrade(target, 4, DegradationConfig(), rng)
    np.testing.assert_array_equal(out, slab_downsample(target, 4))
    out_x = degrade(target, 5, DegradationConfig(), rng, axis=2)
    np.testing.assert_array_equal(out_x, slab_downsample(target, 5, axis=2))


def test_degrade_blurs_only_the_degraded_axis_by_default():
    rng = np.random.default_rng(5)
    # Constant along x: a blur along z changes the volume, a lateral blur would not.
    target = np.repeat(rng.random((8, 6, 1)), 10, axis=2).astype(np.float32)
    config = DegradationConfig(blur_sigma=(1.0, 1.0))
    out = degrade(target, 2, config, rng)
    np.testing.assert_allclose(out, slab_downsample(blur(target, (1.0, 0.0, 0.0)), 2),
                               atol=1e-6)
    assert not np.allclose(out, slab_downsample(target, 2), atol=1e-3)


def test_degrade_draws_parameters_per_call():
    rng = np.random.default_rng(6)
    target = np.full((4, 64, 64), 0.5, dtype=np.float32)
    config = DegradationConfig(gaussian_sigma=(0.0, 0.5))
    stds = [float(degrade(target, 2, config, rng).std()) for _ in range(12)]
    assert max(stds) - min(stds) > 0.15  # different noise levels across patches
    assert all(s <= 0.5 * 1.1 for s in stds)
