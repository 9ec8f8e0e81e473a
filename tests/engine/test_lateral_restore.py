"""Restores with per-axis factors (fz, fy, fx): baselines, 3D and 2D networks, tiles, chains."""

from types import SimpleNamespace

import dask
import numpy as np
import pytest
import torch
from scipy import ndimage

from helpers import save_tiny, smooth
from napari_volsr.engine import dask_restore, predict
from napari_volsr.engine.chain import (
    chain_geometry,
    chain_notes,
    get_chain,
    stage_factors,
    stage_geometries,
)
from napari_volsr.engine.evaluate import baseline_validation
from napari_volsr.engine.geometry import output_geometry
from napari_volsr.engine.interp import upsample
from napari_volsr.engine.io import Volume, read_volume, write_volume
from napari_volsr.engine.pipeline import iter_restore_file, iter_restore_job
from napari_volsr.engine.predict import check_result_fits, drain, restore
from napari_volsr.engine.restorers import (
    InterpolationRestorer,
    get_restorer,
    restorer_geometry,
)
from napari_volsr.engine.tiling import (
    RestorerGeometry,
    auto_block_shape,
    plan_blocks,
    plan_restore,
)
from napari_volsr.engine.tta import average_over_flips, default_flips

SHAPE = (6, 20, 24)
SPACING = (2.0, 0.4, 0.5)
ORIGIN = (3.0, -1.0, 2.0)


@pytest.fixture(scope="module")
def volume():
    return smooth(np.random.default_rng(7), SHAPE)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny untrained models: 3D lateral x2 (GAN, U-Net), 3D z x2, 2D lateral x2."""
    root = tmp_path_factory.mktemp("lateral")
    lateral = {"task": "upsample", "lateral_factors": (2, 2)}
    return {
        "gan": save_tiny(root / "lat-gan", "gan", z_factor=1, **lateral),
        "unet": save_tiny(root / "lat-unet", "unet", z_factor=1, **lateral),
        "z2": save_tiny(root / "z2-gan", "gan", z_factor=2),
        "2d": save_tiny(root / "lat-2d", "unet", z_factor=1, spatial_dims=2, **lateral),
    }


def _restore(restorer, data, block_shape="auto", **kwargs):
    return restore(data, restorer, block_shape=block_shape, output_dtype="float32",
                   device="cpu", **kwargs)


# --- baselines: shapes, the slab grid on every axis, scipy's spline ----------------------


@pytest.mark.parametrize("factors", [(1, 2, 2), (1, 4, 4), (4, 2, 2), (2, 1, 1)])
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_baselines_upsample_every_axis_on_the_slab_grid(volume, factors, mode):
    restorer = get_restorer(mode, factors=factors)
    assert restorer.factors == factors and restorer.z_factor == factors[0]
    result = _restore(restorer, volume, spacing=SPACING, origin=ORIGIN)
    assert result.data.shape == tuple(n * f for n, f in zip(SHAPE, factors))
    assert result.factors == factors and result.z_factor == factors[0]
    assert result.settings["factors"] == list(factors)
    for axis, f in enumerate(factors):
        scale = SPACING[axis] / f
        assert result.spacing[axis] == pytest.approx(scale)
        # the slab grid: shifted by (f - 1) / 2 output voxels towards the origin
        assert result.origin[axis] == pytest.approx(ORIGIN[axis] - (f - 1) / 2 * scale)


def test_z_factor_alone_behaves_as_before(volume):
    plain = InterpolationRestorer("cubic", 3)
    as_factors = InterpolationRestorer("cubic", factors=(3, 1, 1))
    assert plain.factors == (3, 1, 1) and plain.halo == as_factors.halo == (12, 0, 0)
    assert plain.description == "cubic interpolation along z"
    np.testing.assert_array_equal(_restore(plain, volume).data, _restore(as_factors, volume).data)
    lateral = InterpolationRestorer("linear", factors=(1, 2, 4))
    assert lateral.halo == (0, 1, 1) and lateral.description == "linear interpolation along y and x"
    with pytest.raises(ValueError, match="disagrees"):
        InterpolationRestorer("cubic", 2, factors=(4, 1, 1))


@pytest.mark.parametrize("factors", [(1, 2, 2), (1, 3, 4), (2, 2, 2)])
def test_cubic_equals_scipy_zoom(factors):
    data = smooth(np.random.default_rng(1), (5, 14, 17), scale=1.0, offset=0.0)
    result = _restore(InterpolationRestorer("cubic", factors=factors), data).data
    expected = ndimage.zoom(data.astype(np.float64), factors, order=3, mode="reflect",
                            grid_mode=True)
    assert result.shape == expected.shape
    assert np.abs(result - expected).max() < 1e-6


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic", "catmull-rom"])
@pytest.mark.parametrize("factors", [(1, 2, 2), (3, 2, 4)])
def test_interpolation_tiles_equal_the_whole(volume, mode, factors):
    restorer = InterpolationRestorer(mode, factors=factors)
    whole = _restore(restorer, volume, SHAPE).data
    tiled = _restore(restorer, volume, (3, 7, 9), overlap=(1, 2, 2)).data
    assert np.abs(whole - tiled).max() < 1e-4 * np.ptp(whole)


# --- block planning --------------------------------------------------------------------


def test_plans_scale_every_axis_and_count_every_factor():
    plan = plan_blocks((8, 20, 24), (4, 10, 12), halo=(1, 2, 2), z_factor=(2, 2, 4))
    assert plan.factors == plan.scale == (2, 2, 4) and plan.z_factor == 2
    assert plan.out_shape == (16, 40, 96)
    block = plan.block((1, 1, 1))
    assert block.write == (slice(8, 16), slice(20, 40), slice(48, 96))
    assert block.crop == (slice(2, 10), slice(4, 24), slice(8, 56))
    z_only = plan_blocks((8, 20, 24), (4, 10, 12), halo=(1, 2, 2), z_factor=2)
    assert z_only.scale == (2, 1, 1)
    assert plan.block_bytes(1.0) == 8 * z_only.block_bytes(1.0)  # 2*2*4 vs 2
    # The budget covers the output grid: 8x more output voxels, smaller blocks.
    budget = 6 * 20 * 24 * 2 * 4.0
    assert auto_block_shape((6, 20, 24), 0, 2, 4.0, budget) == (6, 20, 24)
    assert np.prod(auto_block_shape((6, 20, 24), 0, (2, 2, 4), 4.0, budget)) < 6 * 20 * 24
    with pytest.raises(ValueError, match="3 integers"):
        plan_blocks((8, 20, 24), 4, z_factor=(2, 2))


def test_geometries_carry_factors():
    assert RestorerGeometry("n", 2, (0,) * 3, (1,) * 3, (0,) * 3, 1.0).factors == (2, 1, 1)
    with pytest.raises(ValueError, match="disagrees"):
        RestorerGeometry("n", 2, (0,) * 3, (1,) * 3, (0,) * 3, 1.0, factors=(1, 2, 2))
    geometry = restorer_geometry("cubic", factors=(1, 2, 2))
    assert geometry.factors == (1, 2, 2) and geometry.halo == (0, 12, 12)
    assert plan_restore((6, 20, 24), geometry, (6, 10, 12)).out_shape == (6, 40, 48)


def test_the_result_must_fit_in_memory_on_every_axis(monkeypatch):
    monkeypatch.setattr(predict, "host_memory", lambda: 40_000.0)  # 8 bytes a voxel
    check_result_fits((1, 6, 10, 10), (1, 2, 2), ("restored",), "float32", np.float32)
    with pytest.raises(ValueError, match=r"the result, \(6, 40, 40\) voxels"):
        check_result_fits((1, 6, 20, 20), (1, 2, 2), ("restored",), "float32", np.float32)


# --- networks --------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gan", "unet"])
def test_3d_lateral_models_upsample_y_and_x_and_tile_exactly(models, volume, family):
    restorer = get_restorer(str(models[family]))
    assert restorer.factors == (1, 2, 2) and "x(1,2,2)" in restorer.description
    whole = _restore(restorer, volume, SHAPE, spacing=SPACING, origin=ORIGIN)
    assert whole.data.shape == (6, 40, 48)
    assert (whole.spacing, whole.origin) == output_geometry(SPACING, ORIGIN, (1, 2, 2))
    tiled = _restore(restorer, volume, (4, 8, 8)).data
    assert len(plan_restore(SHAPE, restorer, (4, 8, 8))) > 4
    assert np.abs(whole.data - tiled).max() < 1e-4 * np.ptp(whole.data)


def test_a_2d_lateral_model_restores_slice_by_slice(models, volume):
    restorer = get_restorer(str(models["2d"]))
    assert restorer.factors == (1, 2, 2) and restorer.flips is False  # not same-shape
    assert restorer.halo[0] == 0 and restorer.divisor[0] == 1  # planes need no z context
    result = _restore(restorer, volume, spacing=SPACING)
    assert result.data.shape == (6, 40, 48)
    # Each YX plane through the 2D network, its halo mirrored as the tiler reads it.
    norm, (_, hy, hx) = result.normalization[0], restorer.halo
    padded = np.pad(norm.forward(volume), ((0, 0), (hy, hy), (hx, hx)), mode="symmetric")
    with torch.no_grad():
        planes = [restorer.net(torch.from_numpy(p)[None, None])[0, 0].numpy() for p in padded]
    expected = np.stack(planes)[:, 2 * hy : 2 * (hy + SHAPE[1]), 2 * hx : 2 * (hx + SHAPE[2])]
    np.testing.assert_allclose(result.data, norm.inverse(expected), rtol=0, atol=1e-3)
    tiled = _restore(restorer, volume, (2, 7, 9)).data
    assert np.abs(result.data - tiled).max() < 1e-4 * np.ptp(result.data)


def test_flips_keep_axes_with_different_factors_apart():
    x = torch.rand(2, 1, 5, 7)

    def run(t):  # y x2, x x3: flipping back must land each axis on its own grid
        return upsample(t, (2, 3), "linear")

    np.testing.assert_allclose(average_over_flips(run, x), run(x), atol=1e-6)
    lateral = SimpleNamespace(family="unet", spatial_dims=2, z_factor=1, factors=(1, 2, 2))
    assert default_flips(lateral) is False
    assert default_flips(SimpleNamespace(family="unet", spatial_dims=2, z_factor=1)) is True


def test_the_dask_graph_equals_the_in_memory_restore(models, volume):
    folder = models["unet"]
    restorer = get_restorer(str(folder))
    blocks = (6, 10, 12)
    result = _restore(restorer, volume, blocks)
    plan = plan_restore(SHAPE, restorer, blocks)
    assert len(plan) == 4
    spec = dask_restore.model_spec(str(folder), None, device="cpu", factors=(1, 2, 2))
    assert spec.build().factors == (1, 2, 2)
    merged = dask_restore.restore_graph(volume[None], spec, result.normalization, plan, 1, 1)
    with dask.config.set(scheduler="threads"):
        values = result.normalization[0].inverse(merged.compute()[0])
    np.testing.assert_allclose(values, result.data, rtol=0, atol=1e-3)


def test_a_model_is_refused_for_other_factors(models):
    with pytest.raises(ValueError, match=r"model 'lat-gan' was trained for factors x\(1,2,2\), "
                                         r"not x\(4,1,1\); use x\(1,2,2\)"):
        get_restorer(str(models["gan"]), factors=(4, 1, 1))
    with pytest.raises(ValueError, match=r"trained for factors x\(1,2,2\), not x\(2,1,1\)"):
        get_restorer(str(models["gan"]), 2)
    with pytest.raises(ValueError, match=r"trained for factors x\(2,1,1\), not x\(2,2,2\)"):
        get_restorer(str(models["z2"]), factors=(2, 2, 2))
    # z_factor alone speaks for z: a door that only knows z still gets the lateral model
    assert get_restorer(str(models["gan"]), 1).factors == (1, 2, 2)
    assert get_restorer(str(models["gan"]), factors=(1, 2, 2)).factors == (1, 2, 2)


# --- chains ----------------------------------------------------------------------------


def test_a_chain_of_a_lateral_and_a_z_model_multiplies_per_axis(models, volume):
    chain = [str(models["gan"]), str(models["z2"])]
    assert stage_factors(chain) == [(1, 2, 2), (2, 1, 1)]
    result = drain(iter_restore_job(volume, chain, spacing=SPACING, origin=ORIGIN,
                                    output_dtype="float32", device="cpu"))
    assert result.data.shape == (12, 40, 48)
    assert result.factors == (2, 2, 2) and result.settings["factors"] == [2, 2, 2]
    assert (result.spacing, result.origin) == output_geometry(SPACING, ORIGIN, (2, 2, 2))
    first = _restore(get_restorer(chain[0]), volume, spacing=SPACING, origin=ORIGIN)
    second = _restore(get_restorer(chain[1]), first.data, spacing=first.spacing,
                      origin=first.origin)
    np.testing.assert_allclose(result.data, second.data, rtol=1e-5, atol=1e-2)
    geometry = chain_geometry(stage_geometries(chain))
    assert geometry.factors == (2, 2, 2) and geometry.z_factor == 2
    with pytest.raises(ValueError, match=r"upsamples by x\(1,2,2\) x x\(2,1,1\) = x\(2,2,2\), "
                                         r"not x\(2,1,1\)"):
        stage_factors(chain, factors=(2, 1, 1))


def test_a_baseline_in_a_chain_fills_what_the_models_leave_per_axis(models):
    lateral = str(models["gan"])
    assert stage_factors([lateral, "cubic"], factors=(4, 2, 2)) == [(1, 2, 2), (4, 1, 1)]
    assert stage_factors([lateral, "cubic"], factors=(1, 4, 2)) == [(1, 2, 2), (1, 2, 1)]
    # No factors: z follows the spacing of the voxels the models leave (2 / 0.5: x4).
    assert stage_factors([lateral, "cubic"], spacing=(2.0, 1.0, 1.0)) == [(1, 2, 2), (4, 1, 1)]
    restorers = get_chain([lateral, "cubic"], factors=(2, 4, 4))
    assert [r.factors for r in restorers] == [(1, 2, 2), (2, 2, 2)]
    with pytest.raises(ValueError, match=r"factors must be multiples of those on every axis, "
                                         r"not x\(2,3,2\)"):
        stage_factors([lateral, "cubic"], factors=(2, 3, 2))
    with pytest.raises(ValueError, match="would have z-factor 1 and change nothing"):
        stage_factors([lateral, "cubic"], factors=(1, 2, 2))
    with pytest.raises(ValueError, match=r"upsamples y by 2 x 2 x 2 x 2 x 2 = 32, beyond 16"):
        stage_factors([lateral] * 5)


def test_chain_notes_and_geometry_per_axis():
    def geometry(factors, halo=(2, 3, 3)):
        return RestorerGeometry("n", factors[0], halo, (1,) * 3, (0,) * 3, 1.0,
                                factors=factors)

    up, same = geometry((1, 2, 2)), geometry((1, 1, 1))
    assert chain_notes(["lat", "den"], [up, same]) == [
        "lat upsamples y and x before den restores: same-shape models usually go first, on "
        "the voxels they were trained on"]
    # a later stage's halo is in voxels the stages before it upsampled, per axis
    assert chain_geometry([up, same]).halo == (4, 5, 5)
    assert chain_geometry([same, up]).halo == (4, 6, 6)


# --- files, references, validation -----------------------------------------------------


def test_a_file_restore_checks_the_reference_on_every_axis(tmp_path, volume):
    src = write_volume(tmp_path / "in.tif", Volume(volume, SPACING))
    reference = ndimage.zoom(volume, (1, 2, 2), order=1).astype(np.float32)
    write_volume(tmp_path / "ref.tif", Volume(reference, (2.0, 0.2, 0.25)))
    written = drain(iter_restore_file(src, tmp_path / "out.tif", "linear", factors=(1, 2, 2),
                                      reference=tmp_path / "ref.tif"))
    assert written.shape == (6, 40, 48)
    assert "linear x(1,2,2)" in written.describe()
    assert read_volume(tmp_path / "out.tif").spacing == pytest.approx((2.0, 0.2, 0.25))
    with pytest.raises(ValueError, match="differ in shape"):
        drain(iter_restore_file(src, tmp_path / "out2.tif", "linear", factors=(2, 2, 2),
                                reference=tmp_path / "ref.tif"))


def test_the_baseline_validation_interpolates_every_axis():
    rng = np.random.default_rng(0)
    target = smooth(rng, (8, 16, 16), scale=1.0, offset=0.0)[None]
    low = target.reshape(1, 8, 8, 2, 8, 2).mean(axis=(3, 5))  # area-downsampled laterally
    data = SimpleNamespace(validation=[(low, target)], z_factor=1, factors=(1, 2, 2))
    scores = baseline_validation(data)
    expected = upsample(torch.from_numpy(low[None]), (1, 2, 2), "cubic")[0, 0].numpy()
    mse = float(np.mean((expected - target[0]) ** 2))
    assert scores["psnr"] == pytest.approx(10 * np.log10(1 / mse), rel=1e-4)


# --- Model Zoo packages ------------------------------------------------------------------


@pytest.mark.parametrize("family, dims, scales", [
    ("gan", 3, {"z": 1.0, "y": 0.5, "x": 0.5}), ("unet", 2, {"y": 0.5, "x": 0.5})])
def test_lateral_models_export_to_the_model_zoo_and_back(tmp_path, library, volume, family,
                                                          dims, scales):
    pytest.importorskip("bioimageio.core")
    import zipfile

    import yaml

    import helpers
    from napari_volsr.engine.bioimageio import export_bioimageio, import_bioimageio
    from napari_volsr.engine.models import read_model_config

    folder = save_tiny(tmp_path / f"lat{dims}", family, z_factor=1, spatial_dims=dims,
                       task="upsample", lateral_factors=(2, 2))
    path, _ = export_bioimageio(folder, tmp_path / "lat.zip")
    with zipfile.ZipFile(path) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        archive.extractall(tmp_path / "package", ["test_input.npy", "test_output.npy"])
    axes = rdf["outputs"][0]["axes"]
    assert {a["id"]: a["scale"] for a in axes if a.get("id") in scales} == scales
    kwargs = rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert kwargs["factors"] == ([1, 2, 2] if dims == 3 else [2, 2])
    test_in = np.load(tmp_path / "package" / "test_input.npy")
    test_out = np.load(tmp_path / "package" / "test_output.npy")
    assert test_out.shape[-2:] == (2 * test_in.shape[-2], 2 * test_in.shape[-1])
    helpers.zoo_test(path)
    back = import_bioimageio(path, name=f"lat{dims}-back")
    assert read_model_config(back).factors == (1, 2, 2)
    original = _restore(get_restorer(str(folder)), volume).data
    np.testing.assert_array_equal(_restore(get_restorer(str(back)), volume).data, original)


def test_a_preview_of_a_lateral_restore_equals_the_whole_over_its_region(volume):
    from napari_volsr.engine.preview import iter_preview

    keep = (slice(1, 4), slice(5, 12), slice(3, 20))
    read = (slice(0, 6), slice(0, 20), slice(0, 24))
    whole = _restore(get_restorer("linear", factors=(2, 2, 2)), volume, spacing=SPACING)
    preview = drain(iter_preview(volume, "linear", None, factors=(2, 2, 2), keep=keep, read=read,
                                 spacing=SPACING, output_dtype="float32", device="cpu"))
    region = tuple(slice(k.start * 2, k.stop * 2) for k in keep)
    assert preview.data.shape == (6, 14, 34)
    np.testing.assert_allclose(preview.data, whole.data[region], rtol=0, atol=1e-3)
    assert preview.spacing == pytest.approx(whole.spacing)
