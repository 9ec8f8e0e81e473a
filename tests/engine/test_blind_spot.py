"""Blind-spot masking (Noise2Void / N2V2 / structN2V), the Noise2Noise pairs, and the losses
and validation scores that read NaN targets."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_volsr.engine.config import BlindSpotConfig, TrainingConfig
from napari_volsr.engine.data import (
    Normalization,
    make_training_data,
    noise2noise_data,
    noise2void_data,
)
from napari_volsr.engine.data.blind_spot import (
    BLIND_SPOT_LABEL,
    NOISE2NOISE_LABEL,
    blind_spot_mask,
    neighbour_offsets,
    stratified_coordinates,
)
from napari_volsr.engine.evaluate import validation_scores
from napari_volsr.engine.methods.supervised import SupervisedMethod
from napari_volsr.engine.metrics import psnr, ssim

FULL_RANGE = (0.0, 100.0)


def box_values(patch, centre, radius=2, skip=()):
    """The values of the box around ``centre`` inside the patch, without ``centre`` and ``skip``."""
    values = []
    for offset in np.ndindex(*[2 * radius + 1] * patch.ndim):
        pos = tuple(c + o - radius for c, o in zip(centre, offset, strict=True))
        if pos == tuple(centre) or pos in skip:
            continue
        if all(0 <= p < n for p, n in zip(pos, patch.shape, strict=True)):
            values.append(patch[pos])
    return np.array(values)


# --- masking -----------------------------------------------------------------------------

@pytest.mark.parametrize(("shape", "fraction"), [((64, 64), 1 / 64), ((16, 32, 32), 1 / 64),
                                                 ((48, 40), 0.002), ((8, 20, 24), 0.05)])
def test_about_the_masked_fraction_is_masked_one_per_cell(shape, fraction):
    rng = np.random.default_rng(0)
    counts = [len(stratified_coordinates(shape, fraction, rng)) for _ in range(200)]
    assert np.mean(counts) / np.prod(shape) == pytest.approx(fraction, rel=0.1)
    coords = stratified_coordinates(shape, fraction, rng)
    assert len({tuple(c) for c in coords}) == len(coords)  # distinct
    assert (coords >= 0).all() and (coords < np.array(shape)).all()


def test_every_voxel_is_as_likely_to_be_masked_borders_included():
    rng = np.random.default_rng(1)
    hits = np.zeros((16, 12))
    for _ in range(4000):
        hits[tuple(stratified_coordinates(hits.shape, 1 / 16, rng).T)] += 1
    assert 0.045 < (hits / 4000).min() and (hits / 4000).max() < 0.08  # 1/16 = 0.0625


def test_a_tiny_patch_still_masks_a_voxel():
    rng = np.random.default_rng(0)
    assert all(len(stratified_coordinates((4, 4), 0.001, rng)) >= 1 for _ in range(50))


@pytest.mark.parametrize("shape", [(24, 20), (6, 12, 10)])
def test_median_replacement_excludes_the_centre(shape):
    rng = np.random.default_rng(2)
    patch = rng.random(shape).astype(np.float32)
    inputs, target = blind_spot_mask(patch, rng, masked_fraction=0.05)
    masked = np.argwhere(np.isfinite(target))
    assert len(masked) > 0
    for centre in map(tuple, masked):
        assert inputs[centre] == pytest.approx(np.median(box_values(patch, centre)), abs=1e-6)
        assert target[centre] == patch[centre]
    np.testing.assert_array_equal(inputs[~np.isfinite(target)], patch[~np.isfinite(target)])


def test_a_voxel_far_off_its_neighbours_never_shows_through_the_median():
    patch = np.zeros((16, 16), np.float32)
    patch[::2, ::2] = 1000.0  # a quarter of the voxels: never a median of their boxes
    inputs, target = blind_spot_mask(patch, np.random.default_rng(3), masked_fraction=0.1)
    hot = np.isfinite(target) & (patch == 1000)
    assert hot.any() and (inputs[hot] < 1000).all()


def test_neighbour_replacement_is_a_neighbour_other_than_the_centre():
    rng = np.random.default_rng(4)
    patch = rng.permutation(32 * 32).reshape(32, 32).astype(np.float32)  # unique values
    inputs, target = blind_spot_mask(patch, rng, masked_fraction=0.05, replacement="neighbour")
    for centre in map(tuple, np.argwhere(np.isfinite(target))):
        assert inputs[centre] != patch[centre]
        assert inputs[centre] in box_values(patch, centre)


def test_structured_mask_covers_a_line_along_the_axis():
    rng = np.random.default_rng(5)
    patch = rng.permutation(40 * 40).reshape(40, 40).astype(np.float32) + 1
    inputs, target = blind_spot_mask(patch, rng, masked_fraction=1 / 64, mask_axis=1,
                                     mask_span=5)
    centres = [tuple(c) for c in np.argwhere(np.isfinite(target))]
    line = {(y, x + k) for y, x in centres for k in (-2, -1, 1, 2) if 0 <= x + k < 40}
    changed = {tuple(c) for c in np.argwhere(inputs != patch)}
    assert changed <= line | set(centres)  # nothing off the lines changes
    assert len(changed & line) > 0.9 * len(line - set(centres))  # random values: rare ties
    assert set(np.unique(inputs[tuple(np.array(sorted(line - set(centres))).T)])) <= set(
        np.unique(patch))  # the line holds values of the patch
    for y, x in centres:  # the centre's median ignores its own line
        skip = {(y, x + k) for k in (-2, -1, 1, 2)}
        assert inputs[y, x] == pytest.approx(np.median(box_values(patch, (y, x), skip=skip)))
    assert np.isfinite(target).sum() == len(centres)  # the loss stays on the centres


def test_neighbour_offsets_leave_out_the_centre_and_the_line():
    offsets = neighbour_offsets(3, 2, line_axis=2, line_half=2)
    assert len(offsets) == 125 - 1 - 4
    assert not any((o == 0).all() for o in offsets)
    assert not any(o[0] == o[1] == 0 for o in offsets)


def test_masking_is_deterministic_and_leaves_the_patch_alone():
    patch = np.random.default_rng(6).random((8, 16, 16)).astype(np.float32)
    kept = patch.copy()
    first = blind_spot_mask(patch, np.random.default_rng([1, 2]), masked_fraction=1 / 64)
    again = blind_spot_mask(patch, np.random.default_rng([1, 2]), masked_fraction=1 / 64)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(patch, kept)


# --- noise2void data ---------------------------------------------------------------------

@pytest.fixture
def noisy():
    rng = np.random.default_rng(7)
    return (rng.random((12, 48, 40)) * 100).astype(np.float32)


@pytest.mark.parametrize(("spatial_dims", "patch"), [(3, (8, 16, 16)), (2, (16, 16))])
def test_noise2void_batches_are_masked_crops_with_nan_elsewhere(noisy, spatial_dims, patch):
    data = noise2void_data(noisy, patch, spatial_dims=spatial_dims, n_val=3,
                           percentiles=FULL_RANGE)
    inputs, targets = data.batch(0, 6)
    assert inputs.shape == targets.shape == (6, 1, *patch)
    assert data.spatial_dims == spatial_dims and data.validation_label == BLIND_SPOT_LABEL
    known = np.isfinite(targets)
    assert known.mean() == pytest.approx(1 / 64, rel=0.3)
    assert all(known[i].any() for i in range(6))  # every patch carries a loss
    # Masked voxels hold their noisy value in the target and something else in the input.
    assert np.mean(inputs[known] != targets[known]) > 0.9
    norm = Normalization(*data.summary["normalization"][0])
    assert norm.inverse(targets[known]).min() >= noisy.min() - 1e-3
    assert data.summary["source"] == "noise2void"
    assert data.summary["blind_spot"]["masked_fraction"] == 1 / 64


def test_noise2void_batches_are_deterministic_per_step(noisy):
    data = noise2void_data(noisy, (8, 16, 16), n_val=2, seed=3)
    a, b = data.batch(5, 3), data.batch(5, 3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])  # NaN where NaN
    assert not np.array_equal(np.isfinite(a[1]), np.isfinite(data.batch(6, 3)[1]))


def decode(values, norm):
    """(z, y, x) of values of a normalised ``coded`` volume."""
    v = np.rint(norm.inverse(np.asarray(values))).astype(np.int64)
    return v % 8, (v // 8) % 32, v // 256


def test_noise2void_validation_is_masked_fixed_and_held_out():
    volume = coded((8, 32, 24), 0)
    first = noise2void_data(volume, (4, 8, 8), n_val=4, seed=1, percentiles=FULL_RANGE)
    again = noise2void_data(volume, (4, 8, 8), n_val=4, seed=1, percentiles=FULL_RANGE)
    norm = Normalization(*first.summary["normalization"][0])
    start = first.summary["validation_rows"][0][0]
    assert len(first.validation) == 4 and 0 < start < 32
    for (inp, tgt), (inp2, tgt2) in zip(first.validation, again.validation, strict=True):
        np.testing.assert_array_equal(inp, inp2)
        np.testing.assert_array_equal(tgt, tgt2)
        assert 0 < np.isfinite(tgt).sum() < tgt.size
        assert (decode(tgt[np.isfinite(tgt)], norm)[1] >= start).all()
    _, targets = first.batch(0, 16)
    assert (decode(targets[np.isfinite(targets)], norm)[1] < start).all()


def test_structured_masking_follows_the_volume_axis_through_turns():
    volume = coded((6, 32, 32), 0)
    config = BlindSpotConfig(mask_axis="x", mask_span=3, masked_fraction=1 / 64)
    data = noise2void_data(volume, (16, 16), spatial_dims=2, blind_spot=config, n_val=0,
                           percentiles=FULL_RANGE)
    norm = Normalization(*data.summary["normalization"][0])
    inputs, targets = data.batch(0, 16)
    along, across = [], []  # do neighbours of centres still hold their own value?
    for inp, tgt in zip(inputs[:, 0], targets[:, 0], strict=True):
        _, ys, xs = decode(inp, norm)
        x_axis = 1 if np.median(np.abs(np.diff(xs, axis=1))) == 1 else 0  # after any turn
        for r, c in np.argwhere(np.isfinite(tgt)):
            _, y0, x0 = decode(tgt[r, c], norm)
            for axis, out in ((x_axis, along), (1 - x_axis, across)):
                for step in (-1, 1):
                    pos = (r + step * (axis == 0), c + step * (axis == 1))
                    if 0 <= pos[0] < 16 and 0 <= pos[1] < 16:
                        moved = (abs(ys[pos] - y0), abs(xs[pos] - x0))
                        out.append(moved == ((0, 1) if axis == x_axis else (1, 0)))
    assert np.mean(across) > 0.9  # untouched across the line
    assert np.mean(along) < 0.1  # masked (random values) along volume x, whatever the turn
    with pytest.raises(ValueError, match="needs 3D patches"):
        noise2void_data(volume, (16, 16), spatial_dims=2, n_val=0,
                        blind_spot=BlindSpotConfig(mask_axis="z"))


N2V2 = {"family": "unet", "widths": (8, 16), "blur_pool": True, "top_skip": False,
        "residual": False}


def test_make_training_data_builds_the_denoising_sources(noisy):
    config = TrainingConfig(source="noise2void", patch_shape=(8, 16, 16), n_val=2,
                            model={"network": N2V2}, blind_spot={"masked_fraction": 0.05})
    data = make_training_data(config, volumes=[noisy])
    assert np.isfinite(data.batch(0, 2)[1]).mean() == pytest.approx(0.05, rel=0.3)
    config = TrainingConfig(source="noise2noise", patch_shape=(8, 16, 16), n_val=2)
    data = make_training_data(config, volumes=[noisy, noisy[::-1].copy()])
    assert data.validation_label == NOISE2NOISE_LABEL
    with pytest.raises(ValueError, match="noise2noise source needs the noisy volume"):
        make_training_data(config, targets=[noisy])


def test_the_config_refuses_what_the_denoising_sources_cannot_train():
    with pytest.raises(ValueError, match="task 'restore' and z_factor 1"):
        TrainingConfig(source="noise2void", model={"task": "upsample", "z_factor": 2})
    with pytest.raises(ValueError, match="cannot learn from: choose one of rcan, srunet"):
        TrainingConfig(source="noise2noise", model={"network": {"family": "gan"}},
                       method={"kind": "gan"})
    with pytest.raises(ValueError, match="mask_axis 'z' needs a 3D model"):
        TrainingConfig(source="noise2void", model={"spatial_dims": 2, "network": N2V2},
                       blind_spot={"mask_axis": "z"})
    with pytest.raises(ValueError, match="mask_span must be odd"):
        BlindSpotConfig(mask_span=4)
    with pytest.raises(ValueError):
        BlindSpotConfig(masked_fraction=0.5)


# --- noise2noise data --------------------------------------------------------------------

def coded(shape, shift):
    """z + 8 (y + 32 x) + shift (one voxel left at 0, so the minimum stays 0)."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    volume = (z + 8 * (y + 32 * x) + shift).astype(np.float32)
    volume[0, 0, 0] = 0
    return volume


def which(patch, norms, shifts):
    """(acquisition, decoded integer coordinates) of a normalised crop."""
    for k, (norm, shift) in enumerate(zip(norms, shifts, strict=True)):
        raw = norm.inverse(patch) - shift
        if np.allclose(raw, np.rint(raw), atol=0.05):
            return k, np.rint(raw)
    raise AssertionError("the crop matches no acquisition")


def test_noise2noise_pairs_are_the_same_crop_of_two_acquisitions():
    shape, shifts = (8, 32, 24), (0.0, 0.25, 0.5)
    volumes = [coded(shape, s) for s in shifts]
    data = noise2noise_data(volumes, (4, 8, 8), n_val=3, percentiles=FULL_RANGE)
    norms = [Normalization(*n) for n in data.summary["normalization"]]
    assert data.summary["n_volumes"] == 3 and data.validation_label == NOISE2NOISE_LABEL
    inputs, targets = data.batch(0, 24)
    seen = set()
    for inp, tgt in [*zip(inputs, targets, strict=True), *data.validation]:
        i, where_in = which(inp[0], norms, shifts)
        j, where_tgt = which(tgt[0], norms, shifts)
        assert i != j
        np.testing.assert_array_equal(where_in, where_tgt)  # same crop, same flips
        seen.add((i, j))
    assert len(seen) >= 4  # both directions of several pairs


def test_noise2noise_needs_two_acquisitions_of_one_shape():
    volume = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="two or more acquisitions"):
        noise2noise_data([volume], (4, 8, 8))
    with pytest.raises(ValueError, match=r"acquisition 1 has shape \(8, 32, 30\)"):
        noise2noise_data([volume, volume[..., :30]], (4, 8, 8))


# --- losses and scores -------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["mae", "mse", "cubic_weighted"])
def test_the_loss_ignores_nan_targets(loss):
    torch.manual_seed(0)
    net = nn.Conv3d(1, 1, 3, padding=1)
    method = SupervisedMethod(net, loss)
    inputs, full = torch.rand(2, 1, 4, 8, 8), torch.rand(2, 1, 4, 8, 8)
    known = torch.rand(full.shape) < 0.1
    target = torch.where(known, full, float("nan"))
    value = method({"input": inputs, "target": target})
    value.backward()
    assert torch.isfinite(value) and all(torch.isfinite(p.grad).all() for p in net.parameters())
    error = (net(inputs) - full).abs() if loss == "mae" else (net(inputs) - full) ** 2
    if loss != "cubic_weighted":
        assert value.item() == pytest.approx(error[known].mean().item(), rel=1e-5)
    # Changing the unknown voxels' (absent) values changes nothing.
    other = torch.where(known, full, float("nan"))
    assert method({"input": inputs, "target": other}).item() == pytest.approx(value.item())


def test_validation_scores_read_finite_voxels_and_skip_ssim_on_partial_targets():
    rng = np.random.default_rng(8)
    prediction = rng.random((1, 8, 8, 8)).astype(np.float32)
    full = rng.random((1, 8, 8, 8)).astype(np.float32)
    partial = np.where(rng.random(full.shape) < 0.2, full, np.nan).astype(np.float32)
    known = np.isfinite(partial[0])
    scores = validation_scores([prediction], [(None, partial)])
    assert scores == {"psnr": pytest.approx(psnr(prediction[0][known], full[0][known], 1.0))}
    both = validation_scores([prediction, prediction], [(None, partial), (None, full)])
    assert both["ssim"] == pytest.approx(ssim(prediction[0], full[0], 1.0))
    assert both["psnr"] == pytest.approx(np.mean([scores["psnr"],
                                                  psnr(prediction[0], full[0], 1.0)]))
