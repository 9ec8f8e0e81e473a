import dask.array as da
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_volsr.engine.interp import upsample_z
from napari_volsr.engine.predict import RestoreCancelled, iter_restore, restore
from napari_volsr.engine.restorers import InterpolationRestorer, get_restorer


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("z_factor", [1, 2, 3, 4])
@pytest.mark.parametrize("block_shape,overlap", [
    ((4, 7, 9), None), ((5, 20, 24), (2, 0, 0)), ((3, 6, 5), (1, 2, 2)), ((12, 3, 24), None),
])
def test_tiling_invariance(smooth_volume, mode, z_factor, block_shape, overlap):
    restorer = InterpolationRestorer(mode, z_factor)
    whole = restore(smooth_volume, restorer, block_shape=smooth_volume.shape).data
    tiled = restore(smooth_volume, restorer, block_shape=block_shape, overlap=overlap).data
    assert whole.shape == (12 * z_factor, 20, 24)
    assert np.abs(whole - tiled).max() < 1e-5


def test_linear_matches_torch_trilinear_on_the_slab_grid(smooth_volume):
    out = restore(smooth_volume, InterpolationRestorer("linear", 3), percentiles=(0, 100)).data
    ref = F.interpolate(torch.from_numpy(smooth_volume)[None, None], scale_factor=(3, 1, 1),
                        mode="trilinear", align_corners=False)[0, 0].numpy()
    # The tiler mirrors the edge slice, which equals torch's clamping for linear.
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_slab_mean_is_recovered_by_nearest():
    vol = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
    out = restore(vol, InterpolationRestorer("nearest", 2)).data
    np.testing.assert_allclose(out.reshape(3, 2, 2, 2).mean(axis=1), vol, atol=1e-5)


def test_result_geometry_and_settings(smooth_volume):
    result = restore(smooth_volume, get_restorer("cubic", 2), spacing=(1.0, 0.5, 0.5),
                     origin=(4.0, 0.0, 0.0))
    assert result.spacing == (0.5, 0.5, 0.5)
    assert result.origin == (3.75, 0.0, 0.0)
    assert result.settings["method"] == "cubic" and result.settings["z_factor"] == 2


def test_output_dtype_and_intensities_kept(rng):
    vol = (rng.random((6, 8, 8)) * 3000 + 100).astype(np.uint16)
    out = restore(vol, InterpolationRestorer("linear", 1), output_dtype="input").data
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, vol)  # f = 1 interpolation is the identity
    out8 = restore(vol, InterpolationRestorer("linear", 1), output_dtype="uint8").data
    assert out8.dtype == np.uint8 and out8.max() == 255  # clipped, not wrapped


def test_input_is_never_modified(smooth_volume):
    before = smooth_volume.copy()
    restore(smooth_volume, get_restorer("cubic", 3), block_shape=(4, 8, 8))
    np.testing.assert_array_equal(smooth_volume, before)


def test_constant_volume_does_not_divide_by_zero():
    vol = np.full((4, 5, 6), 7, np.uint8)
    out = restore(vol, get_restorer("cubic", 2)).data
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, 7.0)


def test_channels_first_volume(smooth_volume):
    two = np.stack([smooth_volume, 10 * smooth_volume])
    out = restore(two, get_restorer("linear", 2)).data
    assert out.shape == (2, 24, 20, 24)
    np.testing.assert_allclose(out[1], 10 * out[0], rtol=1e-4, atol=1e-4)


def test_dask_input_is_read_block_by_block(smooth_volume, tmp_path):
    reads = []
    lazy = da.from_array(smooth_volume, chunks=(4, 10, 12))

    def spy(block, block_info=None):
        reads.append(block.size)
        return block

    lazy = lazy.map_blocks(spy, dtype=lazy.dtype)
    out = restore(lazy, get_restorer("cubic", 2), block_shape=(4, 10, 12),
                  out_store=str(tmp_path / "out.zarr"))
    assert isinstance(out.data, da.Array)
    ref = restore(smooth_volume, get_restorer("cubic", 2)).data
    np.testing.assert_allclose(out.data.compute(), ref, atol=1e-5)
    assert max(reads) <= smooth_volume.size // 4  # never the whole volume at once


@pytest.mark.parametrize("bad,match", [
    (np.zeros((10, 10)), "3D volume"),
    (np.zeros((2, 2, 3, 4, 5)), "5 dimensions"),
    (np.zeros((3, 4, 5), dtype=complex), "numeric"),
])
def test_bad_arrays_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        restore(bad, get_restorer("linear", 2))


@pytest.mark.parametrize("z", [0, -1, 17, 2.5])
def test_bad_z_factor(z):
    with pytest.raises(ValueError, match="z_factor"):
        get_restorer("cubic", z)


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="cubic"):
        get_restorer("magic", 2)


def test_all_nan_volume_is_refused():
    with pytest.raises(ValueError, match="no finite"):
        restore(np.full((3, 4, 4), np.nan, np.float32), InterpolationRestorer("linear", 1))


def test_should_stop_cancels_between_blocks(smooth_volume):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    gen = iter_restore(smooth_volume, get_restorer("cubic", 2), block_shape=(2, 5, 6),
                       should_stop=stop)
    with pytest.raises(RestoreCancelled):
        for _ in gen:
            pass
    assert len(calls) == 3


def test_progress_is_per_block(smooth_volume):
    records = list(iter_restore(smooth_volume, get_restorer("linear", 2), block_shape=(6, 10, 12)))
    blocks = [r for r in records if r.stage == "blocks"]
    assert [r.done for r in blocks] == list(range(1, 9))
    assert all(r.total == 8 for r in blocks)


def test_auto_block_shape_shrinks_under_a_small_budget(smooth_volume, monkeypatch):
    from napari_volsr.engine import predict

    monkeypatch.setattr(predict, "memory_budget", lambda device: 20_000.0)
    result = restore(smooth_volume, get_restorer("cubic", 2))
    assert "1 block" not in result.plan
    ref = restore(smooth_volume, get_restorer("cubic", 2), block_shape=smooth_volume.shape)
    np.testing.assert_allclose(result.data, ref.data, atol=1e-5)


def test_out_of_memory_retries_with_smaller_blocks(smooth_volume, monkeypatch):
    # Catmull-Rom: its 2-slice halo lets blocks shrink below the flaky limit.
    restorer = get_restorer("catmull-rom", 2)
    inner = restorer.__call__
    seen = []

    class Flaky(type(restorer)):
        def __call__(self, x):
            seen.append(x.shape)
            if x.numel() > 2000:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
            return inner(x)

    flaky = Flaky("catmull-rom", 2)
    records = list(iter_restore(smooth_volume, flaky))
    assert any("out of memory" in r.message for r in records)
    assert seen[-1].numel() <= 2000


@pytest.mark.parametrize(("dtype", "expected"), [
    ("uint8", "uint8"), ("uint16", "uint16"), ("int32", "int32"), ("float16", "float16"),
    ("float64", "float64"), ("bool", "float32"), ("int64", "float64"), ("uint64", "float64")])
def test_the_default_output_keeps_the_input_type_where_values_fit(dtype, expected, rng):
    vol = (rng.random((4, 6, 6)) * 200).astype(dtype)
    out = restore(vol, get_restorer("cubic", 2)).data
    assert out.dtype == np.dtype(expected)
    assert restore(vol, get_restorer("cubic", 2), output_dtype="float32").data.dtype == np.float32


def test_float16_output_is_clipped_never_infinite():
    vol = np.full((4, 6, 6), 60_000, np.float16)
    vol[2] = 0  # cubic overshoots beyond float16's 65504 next to the step
    out = restore(vol, get_restorer("cubic", 2)).data
    assert out.dtype == np.float16 and np.isfinite(out).all() and out.max() == 65_504
