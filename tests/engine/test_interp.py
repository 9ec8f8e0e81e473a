"""upsample_z: the slab grid, what linear and cubic reproduce, shapes, tiles against the whole."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_volsr.engine.interp import INTERPOLATION_REACH, INTERPOLATION_MODES, upsample_z

Z_FACTORS = [1, 2, 3, 4, 5]


def positions(depth, z_factor):
    """Input coordinate of each output slice on the slab grid (align_corners=False)."""
    return (np.arange(depth * z_factor) + 0.5) / z_factor - 0.5


def ramp(depth, lateral=(3, 4)):
    """(1, 1, depth, *lateral) float64 with value 2 z + 1 at slice z."""
    z = torch.arange(depth, dtype=torch.float64)
    return (2 * z + 1).reshape(1, 1, depth, *(1,) * len(lateral)).expand(1, 1, depth, *lateral)


def tiled(x, z_factor, mode, tile=3, halo=2):
    """Upsample z tiles of ``tile`` slices, each read with ``halo`` neighbours, then stitch."""
    depth, parts = x.shape[2], []
    for start in range(0, depth, tile):
        stop = min(start + tile, depth)
        lo, hi = max(start - halo, 0), min(stop + halo, depth)
        out = upsample_z(x[:, :, lo:hi], z_factor, mode)
        parts.append(out[:, :, (start - lo) * z_factor : (stop - lo) * z_factor])
    return torch.cat(parts, dim=2)


@pytest.mark.parametrize("mode", INTERPOLATION_MODES)
@pytest.mark.parametrize("z_factor", Z_FACTORS)
def test_a_constant_stays_constant(mode, z_factor):
    x = torch.full((1, 1, 6, 5, 4), 3.5)
    out = upsample_z(x, z_factor, mode)
    torch.testing.assert_close(out, torch.full((1, 1, 6 * z_factor, 5, 4), 3.5))


@pytest.mark.parametrize("z_factor", Z_FACTORS)
def test_linear_reproduces_a_ramp_and_replicates_the_edge_slices(z_factor):
    depth = 7
    out = upsample_z(ramp(depth), z_factor, "linear")[0, 0, :, 0, 0].numpy()
    pos = positions(depth, z_factor)
    expected = 2 * np.clip(pos, 0, depth - 1) + 1  # outside the first/last centre: the edge
    np.testing.assert_allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize("z_factor", Z_FACTORS)
def test_catmull_rom_reproduces_a_ramp_in_the_interior(z_factor):
    depth = 8
    out = upsample_z(ramp(depth), z_factor, "catmull-rom")[0, 0, :, 0, 0].numpy()
    pos = positions(depth, z_factor)
    inner = (pos >= 1) & (pos <= depth - 2)  # all four taps inside the volume
    assert inner.sum() >= (depth - 3) * z_factor
    np.testing.assert_allclose(out[inner], 2 * pos[inner] + 1, atol=1e-12)


@pytest.mark.parametrize("z_factor", Z_FACTORS)
def test_spline_reproduces_a_ramp_away_from_the_mirrored_edges(z_factor):
    depth = 24
    out = upsample_z(ramp(depth), z_factor, "cubic")[0, 0, :, 0, 0].numpy()
    pos = positions(depth, z_factor)
    inner = (pos >= 8) & (pos <= depth - 9)  # the mirrored edges fade as 0.268^distance
    np.testing.assert_allclose(out[inner], 2 * pos[inner] + 1, atol=1e-3)


@pytest.mark.parametrize("z_factor", Z_FACTORS)
def test_linear_is_torch_trilinear_on_the_slab_grid(z_factor):
    x = torch.rand(1, 1, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(x, scale_factor=(z_factor, 1, 1), mode="trilinear", align_corners=False)
    torch.testing.assert_close(upsample_z(x, z_factor, "linear"), ref)


@pytest.mark.parametrize("z_factor", Z_FACTORS)
def test_nearest_repeats_each_slab(z_factor):
    x = torch.rand(1, 1, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    out = upsample_z(x, z_factor, "nearest")
    for j in range(out.shape[2]):
        torch.testing.assert_close(out[:, :, j], x[:, :, j // z_factor])


@pytest.mark.parametrize("mode", INTERPOLATION_MODES)
@pytest.mark.parametrize("z_factor", Z_FACTORS)
@pytest.mark.parametrize("shape", [(2, 1, 4, 9), (1, 3, 5, 6, 7)], ids=["2d", "3d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype(mode, z_factor, shape, dtype):
    x = torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    out = upsample_z(x, z_factor, mode)
    b, c, d, *lateral = shape
    assert out.shape == (b, c, d * z_factor, *lateral)
    assert out.dtype == dtype
    if z_factor == 1:
        assert out is x  # nothing to interpolate


@pytest.mark.parametrize("mode", INTERPOLATION_MODES)
@pytest.mark.parametrize("z_factor", Z_FACTORS)
def test_tiles_with_the_modes_halo_match_the_whole(mode, z_factor):
    x = torch.rand(1, 1, 11, 6, 5, generator=torch.Generator().manual_seed(3))
    whole = upsample_z(x, z_factor, mode)
    torch.testing.assert_close(tiled(x, z_factor, mode, halo=INTERPOLATION_REACH[mode]), whole)
    # Lateral tiles need no halo: only z is interpolated.
    halves = [upsample_z(x[..., :3, :], z_factor, mode), upsample_z(x[..., 3:, :], z_factor, mode)]
    torch.testing.assert_close(torch.cat(halves, dim=3), whole)


def test_integer_input_keeps_its_dtype():
    x = torch.full((1, 1, 3, 2, 2), 1000, dtype=torch.int16)
    out = upsample_z(x, 3, "cubic")
    assert out.dtype == torch.int16 and out.shape == (1, 1, 9, 2, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"z_factor": 2, "mode": "bicubic"}, "mode must be one of"),
    ({"z_factor": 0, "mode": "linear"}, "integer >= 1"),
    ({"z_factor": 2.5, "mode": "linear"}, "integer >= 1"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        upsample_z(torch.zeros(1, 1, 3, 2, 2), **kwargs)


# ---------------------------------------------------------------- the spline baseline
@pytest.mark.parametrize("z_factor", [2, 3, 4, 6])
def test_cubic_is_scipys_prefiltered_spline_on_the_slab_grid(z_factor):
    from scipy import ndimage

    rng = np.random.default_rng(z_factor)
    volume = rng.random((9, 5, 4))
    out = upsample_z(torch.from_numpy(volume)[None, None], z_factor, "cubic")[0, 0].numpy()
    expected = ndimage.zoom(volume, (z_factor, 1, 1), order=3, mode="reflect", grid_mode=True)
    # scipy also prefilters the lateral axes (zoom 1) and truncates its recursive
    # filter's start-up sum: agreement to 1e-5 of the (unit) range, not to the last bit.
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_catmull_rom_is_the_former_cubic_and_differs_from_the_spline():
    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, 12, 3, 3)))
    spline, catmull = upsample_z(x, 4, "cubic"), upsample_z(x, 4, "catmull-rom")
    assert spline.shape == catmull.shape == (1, 1, 48, 3, 3)
    assert (spline - catmull).abs().max() > 1e-3
    # Catmull-Rom interpolates: output slices bracketing an input slice average to it.
    inner = catmull[0, 0, 4:-4].reshape(-1, 4, 3, 3)
    np.testing.assert_allclose(inner[:, 1:3].mean(1).numpy(), x[0, 0, 1:-1].numpy(), atol=0.2)


@pytest.mark.parametrize("z_factor", [2, 4, 6])
def test_spline_restores_tiled_equal_whole(z_factor):
    from napari_volsr.engine.predict import restore
    from napari_volsr.engine.restorers import InterpolationRestorer

    rng = np.random.default_rng(1)
    volume = (rng.random((40, 16, 12)) * 1000).astype(np.float32)
    restorer = InterpolationRestorer("cubic", z_factor)
    whole = restore(volume, restorer).data
    tiled = restore(volume, restorer, block_shape=(5, 16, 12)).data
    span = float(whole.max() - whole.min())
    assert np.abs(tiled - whole).max() <= 1e-4 * span


def test_catmull_rom_reproduces_a_quadratic_in_the_interior():
    z = np.arange(10, dtype=np.float32)
    x = torch.from_numpy((0.5 * z**2 - z)[None, None, :, None])
    out = upsample_z(x, 4, "catmull-rom")[0, 0, :, 0].numpy()
    pos = (np.arange(40) + 0.5) / 4 - 0.5
    inner = (pos > 1) & (pos < 8)
    np.testing.assert_allclose(out[inner], (0.5 * pos**2 - pos)[inner], atol=1e-4)
