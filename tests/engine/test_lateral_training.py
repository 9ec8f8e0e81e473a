"""Training with per-axis factors (fz, fy, fx): degradation, pairs, patches, requests, a run."""

import numpy as np
import pytest
from scipy import ndimage

from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.data import paired_data, synthetic_data
from napari_volsr.engine.data.patches import (
    PatchFitError,
    check_patch_shape,
    default_patch_shape,
    fit_patch_shape,
)
from napari_volsr.engine.degrade import DegradationConfig, degrade, downsample, slab_downsample
from napari_volsr.engine.registry import network_config
from napari_volsr.engine.training_config import TrainingRequestError
from napari_volsr.engine.training_request import (
    VolumeInput,
    check_pair,
    pair_factors,
    resolve_training,
)

NO_DEGRADATION = DegradationConfig()
# Min and max: the same for a raw and its repeated copy, so both normalise alike.
FULL_RANGE = (0.0, 100.0)


def smooth(shape, seed=0):
    rng = np.random.default_rng(seed)
    volume = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return ((volume - volume.min()) / np.ptp(volume) * 200 + 20).astype(np.float32)


def block_mean(array, factors):
    """The mean of each block, by loops: the definition the vectorised code must meet."""
    shape = tuple(n // f for n, f in zip(array.shape, factors))
    out = np.empty(shape)
    for index in np.ndindex(*shape):
        block = tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors))
        out[index] = array[block].mean()
    return out


# --- degradation -------------------------------------------------------------------------

@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 3, 1), (4, 2, 3), (1, 1, 1)])
def test_downsample_gives_block_means_and_crops_partial_blocks(rng, factors):
    volume = rng.random((9, 10, 11)).astype(np.float32)
    out = downsample(volume, factors)
    assert out.dtype == np.float32
    assert out.shape == tuple(n // f for n, f in zip(volume.shape, factors))
    np.testing.assert_allclose(out, block_mean(volume, factors), rtol=1e-6, atol=1e-7)
    assert out is not volume and not np.shares_memory(out, volume)


def test_downsample_along_z_alone_is_the_slab_rule(rng):
    volume = rng.random((10, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(downsample(volume, (3, 1, 1)), slab_downsample(volume, 3))
    plane = rng.random((7, 9)).astype(np.float32)
    np.testing.assert_array_equal(downsample(plane, (1, 4)), slab_downsample(plane, 4, axis=1))


def test_downsample_refuses_bad_factors(rng):
    volume = rng.random((4, 4, 4))
    with pytest.raises(ValueError, match="one value per axis"):
        downsample(volume, (2, 2))
    with pytest.raises(ValueError, match="integers >= 1"):
        downsample(volume, (1, 0, 2))
    with pytest.raises(ValueError, match="fewer than one block of 8"):
        downsample(volume, (1, 8, 1))


def test_degrade_with_factors_area_averages_then_adds_noise(rng):
    target = rng.random((4, 16, 12)).astype(np.float32)
    clean = degrade(target, (1, 2, 4), NO_DEGRADATION, np.random.default_rng(0))
    np.testing.assert_allclose(clean, block_mean(target, (1, 2, 4)), rtol=1e-6)
    noisy = degrade(target, (1, 2, 4), DegradationConfig(gaussian_sigma=(0.1, 0.1)),
                    np.random.default_rng(0))
    assert noisy.shape == (4, 8, 3)
    assert 0.05 < float(np.std(noisy - clean)) < 0.15  # noise on the low-resolution grid


# --- paired and synthetic sources ---------------------------------------------------------

def upsampled(raw, factors):
    """A target that is a known upsampling of the raw: every raw voxel repeated f times."""
    out = raw
    for axis, f in enumerate(factors):
        out = np.repeat(out, f, axis=axis)
    return out


@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 2, 1), (1, 3, 3)])
def test_paired_patches_are_scaled_and_cover_the_same_region(factors):
    raw = smooth((8, 24, 24), seed=1)
    target = upsampled(raw, factors)
    data = paired_data(raw, target, None, (4, 8, 8), factors=factors, n_val=3, seed=2,
                       percentiles=FULL_RANGE)
    assert data.factors == factors and data.z_factor == factors[0]
    assert data.target_patch_shape == (4 * factors[0], 8 * factors[1], 8 * factors[2])
    inputs, targets = data.batch(5, 6)
    assert inputs.shape == (6, 1, 4, 8, 8)
    assert targets.shape == (6, 1, *data.target_patch_shape)
    pairs = list(zip(inputs, targets)) + data.validation
    for inp, tgt in pairs:  # flips and turns included: the target stays over its input
        np.testing.assert_allclose(downsample(tgt[0], factors), inp[0], atol=1e-5)
    assert data.summary["factors"] == list(factors)
    assert data.summary["target_patch_shape"] == list(data.target_patch_shape)


def test_paired_crops_start_on_the_raw_block_grid():
    raw = np.arange(6 * 16 * 16, dtype=np.float32).reshape(6, 16, 16)  # every voxel unique
    target = upsampled(raw, (1, 2, 2))
    data = paired_data(raw, target, 1, (2, 4, 4), factors=(1, 2, 2), n_val=2, seed=0)
    for step in range(4):
        inputs, targets = data.batch(step, 3)
        for inp, tgt in zip(inputs, targets):
            # Each 2 x 2 block of the target holds one raw value: no crop cut a block.
            blocks = tgt[0].reshape(2, 4, 2, 4, 2)
            assert np.all(blocks == blocks[:, :, :1, :, :1])


def test_rotations_keep_pairs_consistent_when_lateral_factors_differ():
    raw = smooth((4, 16, 16), seed=3)
    data = paired_data(raw, upsampled(raw, (1, 2, 1)), None, (2, 8, 8), factors=(1, 2, 1),
                       n_val=0, percentiles=FULL_RANGE)
    for step in range(6):
        inputs, targets = data.batch(step, 4)
        assert targets.shape[-2:] == (16, 8)  # never turned: y stays the doubled axis
        for inp, tgt in zip(inputs, targets):
            np.testing.assert_allclose(downsample(tgt[0], (1, 2, 1)), inp[0], atol=1e-5)


def test_a_shifted_lateral_pair_is_reported_in_raw_pixels():
    raw = smooth((8, 48, 48), seed=4)
    target = upsampled(np.roll(raw, (0, 3, 0), axis=(0, 1, 2)), (1, 2, 2))
    data = paired_data(raw, target, None, (4, 8, 8), factors=(1, 2, 2), n_val=2)
    assert len(data.warnings) == 1 and "(dy, dx) = (3.0, 0.0)" in data.warnings[0]
    aligned = paired_data(raw, upsampled(raw, (1, 2, 2)), None, (4, 8, 8), factors=(1, 2, 2),
                          n_val=2)
    assert aligned.warnings == []


def test_a_pair_of_the_wrong_shape_names_the_expected_one():
    raw = smooth((6, 16, 16))
    with pytest.raises(ValueError, match=r"expected \(6, 32, 32\)"):
        paired_data(raw, np.zeros((6, 32, 30), np.float32), None, (4, 8, 8),
                    factors=(1, 2, 2))
    with pytest.raises(TrainingRequestError, match=r"should be \(6, 32, 32\)"):
        check_pair((6, 16, 16), (6, 32, 30), (1, 2, 2))
    with pytest.raises(TrainingRequestError, match="set the factors to 1,2,2"):
        check_pair((6, 16, 16), (6, 32, 32), 1)
    check_pair((6, 16, 16), (12, 32, 48), (2, 2, 3))  # fits: no error


@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 4, 1)])
def test_synthetic_inputs_are_area_downsampled_targets(factors):
    clean = smooth((16, 72, 40), seed=5)
    data = synthetic_data(clean, None, (4, 8, 8), NO_DEGRADATION, factors=factors, n_val=2)
    inputs, targets = data.batch(0, 4)
    assert targets.shape[2:] == tuple(p * f for p, f in zip((4, 8, 8), factors))
    for inp, tgt in list(zip(inputs, targets)) + data.validation:
        np.testing.assert_allclose(downsample(tgt[0], factors), inp[0], atol=1e-5)


def test_slice_wise_pairs_upsample_y_and_x_but_never_z():
    clean = smooth((6, 40, 40), seed=6)
    data = synthetic_data(clean, None, (8, 8), NO_DEGRADATION, factors=(1, 2, 2),
                          spatial_dims=2, n_val=2)
    assert (data.spatial_dims, data.factors, data.target_patch_shape) == (2, (2, 2), (16, 16))
    inputs, targets = data.batch(0, 3)
    assert inputs.shape == (3, 1, 8, 8) and targets.shape == (3, 1, 16, 16)
    np.testing.assert_allclose(downsample(targets[0, 0], (2, 2)), inputs[0, 0], atol=1e-5)
    with pytest.raises(ValueError, match="need z_factor 1"):
        synthetic_data(clean, None, (8, 8), NO_DEGRADATION, factors=(2, 2, 2), spatial_dims=2)


def test_isotropic_and_denoising_sources_refuse_lateral_factors():
    volume = VolumeInput(smooth((8, 32, 32)), spacing=(4.0, 1.0, 1.0))
    with pytest.raises(TrainingRequestError, match="isotropic source upsamples z only"):
        resolve_training(volume=volume, factors=(4, 2, 2), output_dir="/nonexistent")
    with pytest.raises(TrainingRequestError, match="its factors are 1, 1, 1"):
        resolve_training(volume=volume, source="noise2void", factors=(1, 2, 2),
                         output_dir="/nonexistent")


# --- patch shapes -------------------------------------------------------------------------

def test_default_patches_keep_the_target_size_per_axis():
    assert default_patch_shape("synthetic", 3, 1, factors=(1, 2, 2)) == (32, 32, 32)
    assert default_patch_shape("paired", 3, (2, 4, 4)) == (16, 16, 16)
    assert default_patch_shape("synthetic", 2, 1, factors=(1, 2, 4)) == (32, 16)
    assert default_patch_shape("synthetic", 3, 2) == (16, 64, 64)  # z alone: as before


@pytest.mark.parametrize("source", ["synthetic", "paired"])
@pytest.mark.parametrize(("dims", "factors"), [(3, (1, 2, 2)), (3, (2, 4, 4)), (3, (1, 3, 2)),
                                               (2, (1, 2, 2)), (2, (1, 4, 2))])
def test_fitted_patches_fit_lateral_factors_or_name_the_smallest_volume(source, dims, factors):
    for rows in (12, 20, 33, 64, 200):
        for cols in (16, 40, 257):
            shape = (12, rows, cols)
            try:
                fit = fit_patch_shape(source, dims, factors[0], [shape], factors=factors)
            except PatchFitError as exc:
                # Not even the smallest patch fits: the same check refuses it too.
                assert "too small to train on" in str(exc) and "at least" in str(exc)
                with pytest.raises(PatchFitError):
                    check_patch_shape(source, dims, factors, [shape], (4,) * dims)
                continue
            assert check_patch_shape(source, dims, factors, [shape], fit.patch_shape
                                     ).n_val == fit.n_val
            volume = smooth(shape)
            common = dict(factors=factors, spatial_dims=dims,
                          n_val=fit.n_val if fit.n_val is not None else 8)
            if source == "paired":
                data = paired_data(volume, upsampled(volume, factors), None, fit.patch_shape,
                                   **common)
            else:
                data = synthetic_data(volume, None, fit.patch_shape, NO_DEGRADATION, **common)
            assert data.patch_shape == fit.patch_shape  # the sources take what was fitted


def test_too_small_for_lateral_factors_names_the_target_grid_volume():
    with pytest.raises(PatchFitError, match=r"at least \(4, 16, 16\) voxels"):
        fit_patch_shape("synthetic", 3, 1, [(8, 12, 40)], factors=(1, 4, 4), names=["small"])
    with pytest.raises(PatchFitError, match=r"at least \(4, 8, 8\) voxels \(z, y, x\) but "
                                            r"'raw' is \(8, 6, 40\)"):
        check_patch_shape("paired", 3, (1, 4, 4), [(8, 6, 40)], (4, 8, 8), names=["raw"])


# --- training requests --------------------------------------------------------------------

def test_pair_factors_are_per_axis_whole_ratios():
    assert pair_factors((8, 16, 16), (8, 32, 32)) == (1, 2, 2)
    assert pair_factors((8, 16, 16), (16, 16, 48)) == (2, 1, 3)
    assert pair_factors((8, 16, 16), (8, 32, 30)) is None
    assert pair_factors((8, 16, 16), (8, 8, 16)) is None  # smaller target
    assert pair_factors((8, 2, 2), (8, 40, 40)) is None  # above 16


def test_a_request_infers_lateral_factors_from_its_pair():
    raw = smooth((8, 24, 24))
    request = resolve_training(raw=VolumeInput(raw, name="lo"),
                               target=VolumeInput(upsampled(raw, (1, 2, 2)), name="hi"),
                               preset="tiny", output_dir="/nonexistent")
    model = request.config.model
    assert model.factors == (1, 2, 2) and model.lateral_factors == (2, 2)
    # y and x alone: 2D networks on YX planes by default (training_config.default_spatial_dims)
    assert (model.task, model.z_factor, model.spatial_dims) == ("upsample", 1, 2)
    data = request.data  # YX planes: the 2D network's own factors
    assert data.factors == (2, 2)
    assert data.target_patch_shape == tuple(2 * p for p in data.patch_shape)


def test_a_request_with_factors_builds_a_lateral_model_config():
    target = VolumeInput(smooth((16, 48, 48)), name="clean")
    request = resolve_training(target=target, factors=(1, 2, 2), preset="tiny",
                               output_dir="/nonexistent")
    model = request.config.model
    assert isinstance(model, ModelConfig)
    assert model.lateral_factors == (2, 2) and model.z_factor == 1 and model.task == "upsample"
    assert model.net_factors == (2, 2)  # y and x alone: a 2D network on YX planes
    volumetric = resolve_training(target=target, factors=(1, 2, 2), spatial_dims=3,
                                  preset="tiny", output_dir="/nonexistent")
    assert volumetric.config.model.net_factors == (1, 2, 2)
    same = resolve_training(target=target, z_factor=1, factors=(1, 2, 2), preset="tiny",
                            output_dir="/nonexistent")
    assert same.config.model.factors == (1, 2, 2)
    with pytest.raises(TrainingRequestError, match="disagrees"):
        resolve_training(target=target, z_factor=2, factors=(1, 2, 2), output_dir="/nonexistent")
    flat = resolve_training(target=target, factors=(1, 2, 2), spatial_dims=2, preset="tiny",
                            output_dir="/nonexistent")
    assert flat.config.model.net_factors == (2, 2) and flat.config.model.context_planes == 0
    assert flat.data.target_patch_shape == tuple(2 * p for p in flat.data.patch_shape)


def test_a_request_refuses_a_pair_that_does_not_fit_its_factors():
    raw = VolumeInput(smooth((6, 16, 16)), name="lo")
    target = VolumeInput(smooth((6, 32, 32)), name="hi")
    with pytest.raises(TrainingRequestError, match=r"target should be \(12, 32, 32\).*set "
                                                   r"the factors to 1,2,2"):
        resolve_training(raw=raw, target=target, factors=(2, 2, 2), output_dir="/nonexistent")


def test_gan_discriminator_counts_lateral_factors_in_its_target_patch():
    model = ModelConfig(task="upsample", lateral_factors=(2, 4),
                        network=network_config("gan", "tiny", disc_layers=3))
    TrainingConfig(model=model, source="synthetic", patch_shape=(16, 8, 4))  # 16 target px
    with pytest.raises(ValueError, match=r"got \(8, 16, 16\)"):
        TrainingConfig(model=model, source="synthetic", patch_shape=(8, 8, 4))


# --- a run --------------------------------------------------------------------------------

def test_a_tiny_run_with_lateral_factors_saves_them_and_resume_names_both(tmp_path):
    """Needs every family's network to take ``factors`` (registry.build_network)."""
    from napari_volsr.engine.models import load_model

    target = VolumeInput(smooth((8, 32, 32), seed=7), name="clean")
    args = dict(target=target, factors=(1, 2, 2), family="rcan", preset="tiny",
                output_dir=tmp_path, name="lateral", patch_shape=(4, 8, 8), batch_size=2,
                steps=3, validate_every=3, checkpoint_every=3, n_val=2, prefetch=0,
                degradation={"gaussian_sigma": (0.0, 0.01)})
    request = resolve_training(**args)
    records = list(request.iter_train())
    assert "model saved" in records[-1].message
    saved = load_model(tmp_path / "lateral")
    assert saved.config.lateral_factors == (2, 2) and saved.config.factors == (1, 2, 2)
    assert saved.config.training["factors"] == [1, 2, 2]
    assert saved.config.training["data"]["factors"] == [1, 2, 2]
    baseline = records[-1].baseline_validation
    assert baseline is not None and np.isfinite(baseline["psnr"])
    with pytest.raises(TrainingRequestError, match=r"factors 1,2,2 \(not 1,4,4\)"):
        resolve_training(**{**args, "factors": (1, 4, 4), "steps": 6}, resume=True)


def test_lateral_degradation_blurs_the_upsampled_axes_only():
    from napari_volsr.engine.degrade import DegradationConfig, degrade

    volume = np.zeros((8, 16, 16), np.float32)
    volume[4, 8, 8] = 1.0
    config = DegradationConfig(blur_sigma=(1.0, 1.0))
    out = degrade(volume, (1, 2, 2), config, np.random.default_rng(0))
    assert out.shape == (8, 8, 8)
    # z is not upsampled: the point stays in its slice; y and x are blurred.
    assert np.count_nonzero(out[[0, 1, 2, 3, 5, 6, 7]]) == 0
    assert np.count_nonzero(out[4] > 1e-4) > 4
    z_only = degrade(volume, (2, 1, 1), config, np.random.default_rng(0))
    np.testing.assert_array_equal(z_only, degrade(volume, 2, config, np.random.default_rng(0)))


def test_door_factors_win_over_a_files_lateral_factors_and_z_is_implied():
    raw = smooth((8, 24, 24))
    file_values = {"model": {"lateral_factors": [2, 2]}}
    target = VolumeInput(upsampled(raw, (2, 1, 1)), name="hi")
    # The door says y, x 1: the file's lateral factors must not come back.
    request = resolve_training(raw=VolumeInput(raw, name="lo"), target=target,
                               factors=(2, 1, 1), file_values=file_values, preset="tiny",
                               output_dir="/nonexistent")
    assert request.config.model.factors == (2, 1, 1)
    # The file's lateral factors alone: z comes from the pair's shapes, not 1.
    target = VolumeInput(upsampled(raw, (2, 2, 2)), name="hi")
    request = resolve_training(raw=VolumeInput(raw, name="lo"), target=target,
                               file_values=file_values, preset="tiny",
                               output_dir="/nonexistent")
    assert request.config.model.factors == (2, 2, 2)
