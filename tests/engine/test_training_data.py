import re
import re

import numpy as np
import pytest
from scipy import ndimage

from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.data import (
    Normalization,
    TrainingData,
    isotropic_data,
    make_training_data,
    paired_data,
    synthetic_data,
)
from napari_volsr.engine.degrade import DegradationConfig, degrade, slab_downsample

# Percentiles 0/100 map min/max to 0/1, so tests can undo the normalisation exactly.
FULL_RANGE = (0.0, 100.0)
SHAPE = (24, 40, 36)


@pytest.fixture
def coords():
    """v[z, y, x] = z + 100 y + 10000 x: every voxel value names its coordinates."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    return (z + 100 * y + 10000 * x).astype(np.float32)


def decode(patch, norm: Normalization):
    """(z, y, x) integer coordinate arrays of a normalised coordinate-encoded patch."""
    value = np.rint(norm.inverse(patch)).astype(np.int64)
    return value % 100, (value // 100) % 100, value // 10000


def norm_of(data: TrainingData, i=0, key="normalization"):
    """The map from volume values to the pairs' values (with synthetic pairs' input scale)."""
    low, high = data.summary[key][i]
    if key == "normalization" and "input_scale" in data.summary:
        lo, hi = data.summary["input_scale"][i]
        low, high = low + lo * (high - low), low + hi * (high - low)
    return Normalization(low, high)


def assert_is_crop(target, volume, norm):
    """``target`` equals the normalised crop of ``volume`` starting at its first voxel."""
    z0, y0, x0 = (int(c.flat[0]) for c in decode(target, norm))
    crop = volume[z0:z0 + target.shape[0], y0:y0 + target.shape[1], x0:x0 + target.shape[2]]
    np.testing.assert_allclose(target, norm.forward(crop), rtol=1e-5, atol=1e-5)
    return z0, y0, x0


def assert_z_structure(target):
    """z runs 0, 1, 2... along axis 0 and y, x never change along it (3D batches)."""
    z, y, x = target
    np.testing.assert_array_equal(np.diff(z, axis=0), 1)
    assert (np.diff(z, axis=1) == 0).all() and (np.diff(z, axis=2) == 0).all()
    assert (np.diff(y, axis=0) == 0).all() and (np.diff(x, axis=0) == 0).all()


# --- synthetic ---------------------------------------------------------------------------

def test_synthetic_validation_pairs_are_aligned_crops(coords):
    original = coords.copy()
    data = synthetic_data(coords, 3, (4, 8, 8), DegradationConfig(), percentiles=FULL_RANGE,
                          n_val=4)
    norm = norm_of(data)
    assert (data.spatial_dims, data.patch_shape, data.target_patch_shape) == (3, (4, 8, 8),
                                                                              (12, 8, 8))
    val_start = data.summary["validation_rows"][0][0]
    assert len(data.validation) == 4
    for inp, tgt in data.validation:
        assert inp.shape == (1, 4, 8, 8) and tgt.shape == (1, 12, 8, 8)
        assert inp.dtype == tgt.dtype == np.float32
        np.testing.assert_allclose(inp[0], slab_downsample(tgt[0], 3), rtol=1e-5, atol=1e-5)
        _, y0, _ = assert_is_crop(tgt[0], coords, norm)
        assert y0 >= val_start
    np.testing.assert_array_equal(coords, original)  # input not modified


def test_synthetic_batches_keep_z_and_stay_in_training_rows(coords):
    data = synthetic_data(coords, 2, (3, 6, 6), DegradationConfig(), percentiles=FULL_RANGE)
    norm = norm_of(data)
    inputs, targets = data.batch(0, 16)
    assert inputs.shape == (16, 1, 3, 6, 6) and targets.shape == (16, 1, 6, 6, 6)
    val_start = data.summary["validation_rows"][0][0]
    for inp, tgt in zip(inputs[:, 0], targets[:, 0], strict=True):
        np.testing.assert_allclose(inp, slab_downsample(tgt, 2), rtol=1e-6)
        z, y, x = decode(tgt, norm)
        assert_z_structure((z, y, x))
        assert y.max() < val_start
    # Augmentation does happen: some patches have y decreasing or x running along axis 1.
    orientations = set()
    for tgt in targets[:, 0]:
        _, y, x = decode(tgt, norm)
        orientations.add((int(np.sign(y[0, -1, 0] - y[0, 0, 0])),
                          int(np.sign(x[0, -1, 0] - x[0, 0, 0]))))
    assert len(orientations) > 1


def test_synthetic_with_noise_stays_close_to_slab_mean(coords):
    config = DegradationConfig(gaussian_sigma=(0.01, 0.02), poisson_peak=(200.0, 400.0))
    data = synthetic_data(coords, 2, (4, 8, 8), config, n_val=2)
    inp, tgt = data.validation[0]
    clean = slab_downsample(tgt[0], 2)
    assert not np.array_equal(inp[0], clean)
    assert np.abs(inp[0] - clean).mean() < 0.1
    assert data.summary["degradation"]["poisson_peak"] == [200.0, 400.0]


def test_anisotropic_volume_batches_never_mix_z():
    # Few slices, many rows: a rotation that mixed z with y/x could not even keep shapes,
    # and decoded z must still run along axis 0 only.
    z, y, x = np.meshgrid(np.arange(6), np.arange(30), np.arange(30), indexing="ij")
    volume = (z + 100 * y + 10000 * x).astype(np.float32)
    data = synthetic_data(volume, 1, (4, 8, 8), DegradationConfig(), percentiles=FULL_RANGE,
                          n_val=1)
    _, targets = data.batch(3, 12)
    for tgt in targets[:, 0]:
        assert_z_structure(decode(tgt, norm_of(data)))


# --- paired ------------------------------------------------------------------------------

def test_paired_pairs_are_aligned_on_the_slab_grid(coords):
    raw = slab_downsample(coords, 3)  # (8, 40, 36)
    data = paired_data(raw, coords, 3, (2, 8, 8), percentiles=FULL_RANGE, n_val=3)
    assert data.warnings == []
    target_norm, raw_norm = norm_of(data), norm_of(data, key="raw_normalization")
    pairs = list(data.validation) + list(zip(*data.batch(1, 4), strict=True))
    for k, (inp, tgt) in enumerate(pairs):
        assert inp.shape == (1, 2, 8, 8) and tgt.shape == (1, 6, 8, 8)
        if k < 3:  # validation pairs are not augmented: exact crops
            z0, y0, x0 = assert_is_crop(tgt[0], coords, target_norm)
            assert z0 % 3 == 0
            expected = raw[z0 // 3:z0 // 3 + 2, y0:y0 + 8, x0:x0 + 8]
            np.testing.assert_array_equal(inp[0], raw_norm.forward(expected))
        # Raw voxel = mean of the target slab above it, in input units.
        np.testing.assert_allclose(raw_norm.inverse(inp[0]),
                                   slab_downsample(target_norm.inverse(tgt[0]), 3), atol=0.1)


def test_paired_accepts_lists_and_dask(coords):
    da = pytest.importorskip("dask.array")
    raws = [coords, coords[:, :30]]
    targets = [da.from_array(coords, chunks=8), coords[:, :30] * 2]
    data = paired_data(raws, targets, 1, (4, 8, 8), n_val=2)
    assert data.summary["n_volumes"] == 2
    assert data.summary["shapes"] == [list(SHAPE), [24, 30, 36]]
    assert data.batch(0, 2)[0].shape == (2, 1, 4, 8, 8)


@pytest.fixture
def smooth():
    rng = np.random.default_rng(0)
    return ndimage.gaussian_filter(rng.random((8, 48, 56)), (1, 2, 2)).astype(np.float32)


def test_misaligned_pair_warns_and_aligned_pair_does_not(smooth):
    target = smooth[:, :, 4:52]
    aligned = paired_data(target + 0.01, target, 1, (4, 8, 8), n_val=1)
    assert aligned.warnings == []
    shifted = paired_data(smooth[:, :, 8:56], target, 1, (4, 8, 8), n_val=1)
    assert len(shifted.warnings) == 1
    assert "pair 0" in shifted.warnings[0] and "shifted" in shifted.warnings[0]
    # With z upsampling, the raw is the slab mean of a shifted target.
    shifted_up = paired_data(slab_downsample(smooth[:, :, 0:48], 2), target, 2, (2, 8, 8),
                             n_val=1)
    assert len(shifted_up.warnings) == 1


def test_paired_shape_mismatch_explains_expected_shape(coords):
    with pytest.raises(ValueError, match=r"expected \(48, 40, 36\)"):
        paired_data(coords, coords, 2, (4, 8, 8))
    with pytest.raises(ValueError, match="one target per raw"):
        paired_data([coords, coords], [coords], 1, (4, 8, 8))
    with pytest.raises(ValueError, match="ZYX"):
        paired_data(coords[0], coords[0], 1, (4, 8, 8))


# --- isotropic ---------------------------------------------------------------------------

def test_isotropic_pairs_are_degraded_lateral_planes(coords):
    data = isotropic_data(coords, 4, (3, 5), DegradationConfig(), percentiles=FULL_RANGE,
                          n_val=3)
    norm = norm_of(data)
    assert data.spatial_dims == 2 and data.target_patch_shape == (12, 5)
    for inp, tgt in data.validation:
        assert inp.shape == (1, 3, 5) and tgt.shape == (1, 12, 5)
        np.testing.assert_array_equal(inp[0], slab_downsample(tgt[0], 4, axis=0))
        z, y, x = decode(tgt[0], norm)
        assert (z == z.flat[0]).all()  # one YX plane
        assert_is_crop(tgt[0][None], coords, norm)

    inputs, targets = data.batch(2, 24)
    assert inputs.shape == (24, 1, 3, 5) and targets.shape == (24, 1, 12, 5)
    first_axis = set()
    for inp, tgt in zip(inputs[:, 0], targets[:, 0], strict=True):
        np.testing.assert_allclose(inp, slab_downsample(tgt, 4, axis=0), rtol=1e-6)
        z, y, x = decode(tgt, norm)
        assert (z == z.flat[0]).all()  # z never enters a training plane
        # Axis 0 runs along exactly one lateral axis, in unit steps.
        along = "y" if (np.diff(x, axis=0) == 0).all() else "x"
        runs = y if along == "y" else x
        assert (np.abs(np.diff(runs, axis=0)) == 1).all()
        first_axis.add(along)
    assert first_axis == {"y", "x"}  # transposed planes are used too


def test_isotropic_patch_too_large(coords):
    with pytest.raises(ValueError, match=r"\(24, 40, 36\)"):
        isotropic_data(coords, 8, (6, 8), DegradationConfig())


# --- shared behaviour --------------------------------------------------------------------

SOURCES = {
    "paired": lambda v, **kw: paired_data(slab_downsample(v, 2), v, 2, (2, 8, 8), **kw),
    "synthetic": lambda v, **kw: synthetic_data(v, 2, (2, 8, 8), DegradationConfig(
        gaussian_sigma=(0.0, 0.1)), **kw),
    "isotropic": lambda v, **kw: isotropic_data(v, 2, (4, 8), DegradationConfig(
        poisson_peak=(50.0, 100.0)), **kw),
}


@pytest.mark.parametrize("source", SOURCES)
def test_batches_are_deterministic_per_step(coords, source):
    data = SOURCES[source](coords, seed=3, n_val=2)
    again = SOURCES[source](coords, seed=3, n_val=2)  # as after a restart
    first = data.batch(5, 4)
    for a, b in zip(first, again.batch(5, 4), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first, data.batch(5, 4), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], data.batch(6, 4)[1])
    for (ia, ta), (ib, tb) in zip(data.validation, again.validation, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ta, tb)


@pytest.mark.parametrize("source", SOURCES)
def test_validation_region_is_disjoint_from_training(coords, source):
    data = SOURCES[source](coords, percentiles=FULL_RANGE, n_val=6, val_fraction=0.25)
    norm = norm_of(data)
    val_start = data.summary["validation_rows"][0][0]
    assert val_start == 30  # 25% of 40 rows
    for _, tgt in data.validation:
        assert decode(tgt, norm)[1].min() >= val_start
    _, targets = data.batch(0, 32)
    assert decode(targets, norm)[1].max() < val_start


def test_summary_is_json_serialisable(coords):
    import json

    data = SOURCES["synthetic"](coords, n_val=2)
    text = json.dumps(data.summary)
    assert '"source": "synthetic"' in text
    assert data.summary["foreground"]["crops_tried"] > 0
    assert data.summary["train_voxels"] == 24 * 36 * data.summary["validation_rows"][0][0]


def test_no_foreground_raises_after_a_bounded_number_of_tries():
    volume = np.zeros((16, 64, 64), dtype=np.float32)
    volume[2:4, 2:4, 2:4] = 1.0  # a speck nowhere near half a patch
    crops = []
    for tries in (7, 14):
        with pytest.raises(ValueError, match="lower foreground or crop to the sample") as refusal:
            synthetic_data(volume, 2, (4, 16, 16), DegradationConfig(), foreground=0.5,
                           percentiles=FULL_RANGE, max_tries=tries)
        crops.append(int(re.search(r"none of (\d+) random crops", str(refusal.value))[1]))
    # The search gives up after max_tries crops per patch: twice the tries, twice the crops.
    assert crops[1] == 2 * crops[0] > 0


def test_scarce_foreground_warns_and_uses_best_crop():
    volume = np.zeros((8, 60, 60), dtype=np.float32)
    volume[:, :, :12] = 1.0  # a bright strip: few random crops contain enough of it
    data = synthetic_data(volume, 1, (4, 8, 8), DegradationConfig(), foreground=0.5,
                          percentiles=FULL_RANGE, max_tries=1, n_val=4)
    assert any(w.startswith("only ") and "foreground" in w for w in data.warnings)
    assert data.summary["foreground"]["patches_without_foreground"] > 0.5
    plenty = synthetic_data(volume, 1, (4, 8, 8), DegradationConfig(), foreground=0.5,
                            percentiles=FULL_RANGE, max_tries=100, n_val=4)
    assert plenty.warnings == []
    _, targets = plenty.batch(0, 8)
    assert ((targets > 0.2).mean(axis=(1, 2, 3, 4)) >= 0.5).all()


def test_patch_larger_than_volume_names_both_shapes(coords):
    with pytest.raises(ValueError, match=r"\(26, 8, 8\).*\(24, 40, 36\)"):
        synthetic_data(coords, 2, (13, 8, 8), DegradationConfig())


def test_volume_too_small_for_validation_band(coords):
    small = coords[:, :12]
    with pytest.raises(ValueError, match="at least 16 rows") as refusal:
        synthetic_data(small, 2, (4, 8, 8), DegradationConfig())
    assert "n_val" not in str(refusal.value)  # no door offers it
    data = synthetic_data(small, 2, (4, 8, 8), DegradationConfig(), n_val=0)
    assert data.validation == [] and data.batch(0, 1)[1].shape == (1, 1, 8, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch_shape": (4, 8)}, "patch_shape"),
        ({"z_factor": 0}, "z_factor"),
        ({"foreground": 1.5}, "foreground"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"max_tries": 0}, "max_tries"),
    ],
)
def test_bad_arguments_name_the_argument(coords, kwargs, match):
    args = {"z_factor": 2, "patch_shape": (4, 8, 8)} | kwargs
    with pytest.raises(ValueError, match=match):
        synthetic_data(coords, degradation=DegradationConfig(), **args)


# --- make_training_data: every source of a TrainingConfig --------------------------------

NOISY = DegradationConfig(gaussian_sigma=(0.05, 0.1), poisson_peak=(50.0, 100.0))


def training_config(source, spatial_dims=2, z_factor=1, patch=(8, 8), **kwargs):
    task = "isotropic" if source == "isotropic" else ("upsample" if z_factor > 1 else "restore")
    model = ModelConfig(task=task, spatial_dims=spatial_dims, z_factor=z_factor,
                        percentiles=FULL_RANGE)
    return TrainingConfig(model=model, source=source, patch_shape=patch, steps=1, n_val=3,
                          **kwargs)


def assert_same_batches(data, reference, drop_z=False):
    """Batches of ``data`` equal those of ``reference`` (z axis dropped), rank 1 too."""
    for step, rank in [(0, 0), (5, 0), (5, 1)]:
        got, want = data.batch(step, 4, rank), reference.batch(step, 4, rank)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b[:, :, 0] if drop_z else b)
    for (ia, ta), (ib, tb) in zip(data.validation, reference.validation, strict=True):
        np.testing.assert_array_equal(ia, ib[:, 0] if drop_z else ib)
        np.testing.assert_array_equal(ta, tb[:, 0] if drop_z else tb)


def test_slice_wise_paired_pairs_are_aligned_single_slices(coords):
    raw = coords * 2 + 1
    data = make_training_data(training_config("paired"), raws=[raw], targets=[coords])
    assert (data.spatial_dims, data.z_factor, data.patch_shape) == (2, 1, (8, 8))
    assert data.summary["slice_wise"] is True and data.summary["patch_shape"] == [1, 8, 8]
    target_norm, raw_norm = norm_of(data), norm_of(data, key="raw_normalization")
    val_start = data.summary["validation_rows"][0][0]
    for inp, tgt in data.validation:
        assert inp.shape == tgt.shape == (1, 8, 8) and inp.dtype == tgt.dtype == np.float32
        z, y, x = decode(tgt[0], target_norm)
        assert (z == z.flat[0]).all() and y.min() >= val_start  # one z slice, validation rows
        np.testing.assert_allclose(raw_norm.inverse(inp), 2 * target_norm.inverse(tgt) + 1,
                                   rtol=1e-6)
    inputs, targets = data.batch(0, 8)
    assert inputs.shape == targets.shape == (8, 1, 8, 8)
    for inp, tgt in zip(inputs[:, 0], targets[:, 0], strict=True):
        z, y, x = decode(tgt, target_norm)
        assert (z == z.flat[0]).all() and y.max() < val_start
        np.testing.assert_allclose(raw_norm.inverse(inp), 2 * target_norm.inverse(tgt) + 1,
                                   rtol=1e-6)


def test_slice_wise_pairs_are_the_one_slice_volumetric_pairs(coords):
    # Slice-wise training draws exactly the crops, augmentations and noise of one-slice
    # 3D patches, so models trained before the 2D option existed stay reproducible.
    config = training_config("paired", patch=(8, 12), seed=5, foreground=0.3)
    data = make_training_data(config, raws=[coords + 3], targets=[coords])
    volumetric = paired_data(coords + 3, coords, 1, (1, 8, 12), percentiles=FULL_RANGE,
                             n_val=3, seed=5, foreground=0.3)
    assert_same_batches(data, volumetric, drop_z=True)
    config = training_config("synthetic", degradation=NOISY, seed=3)
    data = make_training_data(config, targets=[coords, coords[2:]])
    volumetric = synthetic_data([coords, coords[2:]], 1, (1, 8, 8), NOISY,
                                percentiles=FULL_RANGE, n_val=3, seed=3)
    assert_same_batches(data, volumetric, drop_z=True)
    assert data.summary == {**volumetric.summary, "slice_wise": True}


def test_slice_wise_synthetic_inputs_degrade_their_target(coords):
    clean = synthetic_data(coords, 1, (8, 8), DegradationConfig(), spatial_dims=2, n_val=2)
    inputs, targets = clean.batch(0, 6)
    assert inputs.shape == targets.shape == (6, 1, 8, 8) and clean.spatial_dims == 2
    np.testing.assert_array_equal(inputs, targets)  # no blur or noise: the target itself
    # Fixed ranges without noise make the degradation deterministic, so it can be redone.
    blur = DegradationConfig(blur_sigma=(0.5, 0.5), lateral_blur_sigma=(1.0, 1.0))
    data = make_training_data(training_config("synthetic", degradation=blur), targets=[coords])
    rng = np.random.default_rng(0)
    for inp, tgt in data.validation:
        assert inp.shape == tgt.shape == (1, 8, 8) and not np.array_equal(inp, tgt)
        np.testing.assert_allclose(inp, degrade(tgt, 1, blur, rng), atol=1e-5)
    inputs, targets = data.batch(0, 6)
    for inp, tgt in zip(inputs, targets, strict=True):
        np.testing.assert_allclose(inp, degrade(tgt, 1, blur, rng), atol=1e-5)


SOURCES_2D = {
    "paired": lambda v, **kw: paired_data(v, v, patch_shape=(8, 8), spatial_dims=2, **kw),
    "synthetic": lambda v, **kw: synthetic_data(v, patch_shape=(8, 8), spatial_dims=2,
                                                degradation=DegradationConfig(), **kw),
}


@pytest.mark.parametrize("source", SOURCES_2D)
def test_slice_wise_needs_z_factor_one(coords, source):
    with pytest.raises(ValueError, match="z_factor 1"):
        SOURCES_2D[source](coords, z_factor=2)


COMMON = {"percentiles": FULL_RANGE, "n_val": 3}


@pytest.mark.parametrize(
    ("source", "spatial_dims", "z_factor", "patch", "reference"),
    [
        ("paired", 3, 2, (4, 8, 8),
         lambda v: paired_data(slab_downsample(v, 2), v, 2, (4, 8, 8), **COMMON)),
        ("synthetic", 3, 2, (4, 8, 8),
         lambda v: synthetic_data(v, 2, (4, 8, 8), NOISY, **COMMON)),
        ("isotropic", 2, 4, (4, 6),
         lambda v: isotropic_data(v, 4, (4, 6), NOISY, **COMMON)),
    ],
)
def test_make_training_data_follows_the_source(coords, source, spatial_dims, z_factor, patch,
                                               reference):
    config = training_config(source, spatial_dims, z_factor, patch, degradation=NOISY)
    arrays = {"paired": {"raws": slab_downsample(coords, 2), "targets": coords},
              "synthetic": {"targets": coords}, "isotropic": {"volumes": coords}}[source]
    data = make_training_data(config, **arrays)
    assert (data.spatial_dims, data.z_factor, data.patch_shape) == (spatial_dims, z_factor, patch)
    assert "slice_wise" not in data.summary
    assert_same_batches(data, reference(coords))



@pytest.mark.parametrize(
    ("source", "given", "match"),
    [
        ("paired", ["targets"], "raw and target"),
        ("synthetic", ["raws"], "clean target"),
        ("isotropic", ["targets"], "anisotropic volume"),
    ],
)
def test_make_training_data_names_the_missing_volumes(coords, source, given, match):
    config = (training_config(source, 2, 2, degradation=NOISY) if source == "isotropic"
              else training_config(source, 3, 1, (4, 8, 8), degradation=NOISY))
    with pytest.raises(ValueError, match=match):
        make_training_data(config, **dict.fromkeys(given, [coords]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused_before_training(coords, bad):
    import dask.array as da

    volume = coords.copy()
    volume[3, 4, 5] = bad
    for source in (volume, da.from_array(volume, chunks=(8, 8, 8))):
        with pytest.raises(ValueError, match=r"'target 0' holds 1 NaN or infinite voxel \(of"):
            synthetic_data(source, 2, (4, 8, 8), DegradationConfig())
    np.testing.assert_array_equal(volume[3, 4, 5], bad)  # the input is never modified
