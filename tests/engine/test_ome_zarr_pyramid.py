"""OME-Zarr pyramids: the level plan, outputs checked by ome-zarr-py and ome-zarr-models, inputs."""

import json
import warnings

import numpy as np
import pytest

from napari_volsr._reader import read_layers
from napari_volsr.engine.io import (
    VolsrWarning,
    Volume,
    VolumeIOError,
    read_volume,
    write_volume,
)
from napari_volsr.engine.io.ome_zarr_pyramid import _downsample_block, output_name, plan_levels
from napari_volsr.engine.io.zarr import read_zarr_levels, write_zarr
from napari_volsr.engine.pipeline import iter_restore_file
from napari_volsr.engine.predict import drain

zarr = pytest.importorskip("zarr")
ome_zarr = pytest.importorskip("ome_zarr")


def _block_mean(data: np.ndarray, factors) -> np.ndarray:
    """The reference downsampling: edge-replicated padding, mean per block, in float64."""
    padded = np.pad(data, [(0, -n % f) for n, f in zip(data.shape, factors)], mode="edge")
    out = padded.astype(np.float64)
    for axis, f in enumerate(factors):
        shape = out.shape[:axis] + (out.shape[axis] // f, f) + out.shape[axis + 1:]
        out = out.reshape(shape).mean(axis=axis + 1)
    return out


def _ome_zarr_node(path):
    """The image node ome-zarr-py's reader finds at ``path``."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    [node, *_] = list(Reader(parse_url(str(path)))())
    return node


# ------------------------------------------------------------------ the level plan
def test_anisotropic_levels_keep_z_until_the_lateral_voxels_catch_up():
    levels = plan_levels((40, 2000, 1000), "ZYX", (2.0, 0.5, 0.5), (1.0, 0.0, 0.0))
    assert [lv.shape for lv in levels] == [(40, 2000, 1000), (40, 1000, 500), (40, 500, 250),
                                           (20, 250, 125)]
    assert [lv.factors for lv in levels[1:]] == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert levels[-1].scale == (4.0, 4.0, 4.0)
    # Pixel centres: a level's first voxel sits at the centre of the voxels it averages,
    # (s - 1) / 2 voxels of level 0 along each axis downsampled s times.
    assert levels[-1].translation == pytest.approx((1.0 + 0.5 * 2.0, 3.5 * 0.5, 3.5 * 0.5))


def test_isotropic_levels_halve_every_axis_and_stop_at_the_target_size():
    levels = plan_levels((2, 300, 600, 513), "CZYX", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert [lv.shape for lv in levels] == [(2, 300, 600, 513), (2, 150, 300, 257),
                                           (2, 75, 150, 129)]
    assert all(lv.factors[0] == 1 and lv.scale[0] == 1.0 for lv in levels)  # channels
    assert plan_levels((8, 256, 100), "ZYX", (1, 1, 1), (0, 0, 0)) == plan_levels(
        (8, 256, 100), "ZYX", (1, 1, 1), (0, 0, 0), target=256)[:1]


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_downsampling_is_a_block_mean_in_the_datas_type(rng, dtype):
    block = (rng.random((5, 7, 4)) * 1000).astype(dtype)
    down = _downsample_block(block, (1, 2, 2))
    assert down.dtype == dtype and down.shape == (5, 4, 2)
    expected = _block_mean(block, (1, 2, 2))
    np.testing.assert_allclose(down, np.rint(expected) if dtype == np.uint16 else expected,
                               rtol=1e-6)


def test_output_name_is_the_final_files_not_the_temporarys(tmp_path):
    assert output_name(tmp_path / ".cells.ome.zarr.a6rxvjdp.part.ome.zarr") == "cells"
    assert output_name(tmp_path / "cells.zarr") == "cells"


# ------------------------------------------------------------------ outputs
@pytest.fixture
def tall_volume(rng):
    """Taller than one level's target (256) laterally, still tiny: 6 x 520 x 40 uint16."""
    data = rng.integers(0, 4000, size=(6, 520, 40), dtype=np.uint16)
    return Volume(data, (0.3, 0.3, 0.3), "ZYX", "µm", (2.0, 1.0, 0.5))


def test_output_pyramid_levels_are_streamed_block_means(tmp_path, tall_volume):
    path = write_volume(tmp_path / "cells.ome.zarr", tall_volume)
    group = zarr.open_group(str(path), mode="r")
    shapes = [group[str(i)].shape for i in range(3)]
    assert shapes == [(6, 520, 40), (3, 260, 20), (2, 130, 10)] and "3" not in group
    level1 = _block_mean(tall_volume.data, (2, 2, 2))
    np.testing.assert_array_equal(group["1"][...], np.rint(level1).astype(np.uint16))
    np.testing.assert_array_equal(group["2"][...],
                                  np.rint(_block_mean(group["1"][...], (2, 2, 2))))
    back = read_volume(path)  # restoring reads level 0, lazily as before
    np.testing.assert_array_equal(np.asarray(back.data), tall_volume.data)
    assert back.origin == pytest.approx((2.0, 1.0, 0.5))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_outputs_validate_and_read_back_with_ome_zarr_py(tmp_path, tall_volume, version):
    models = pytest.importorskip(f"ome_zarr_models.v0{version[-1]}")
    path = tmp_path / "cells.ome.zarr"
    write_zarr(path, tall_volume, ngff_version=version)
    group = zarr.open_group(str(path), mode="r")
    image = models.Image.from_zarr(group)  # raises on any NGFF violation
    attributes = image.attributes
    [multiscale] = getattr(attributes, "ome", attributes).multiscales  # 0.5 nests under "ome"
    assert multiscale.name == "cells" and len(multiscale.datasets) == 3
    assert group.metadata.zarr_format == (2 if version == "0.4" else 3)
    node = _ome_zarr_node(path)
    assert node.metadata["name"] == "cells"
    assert [a.shape for a in node.data] == [(6, 520, 40), (3, 260, 20), (2, 130, 10)]
    assert [a["unit"] for a in node.metadata["axes"]] == ["micrometer"] * 3
    scale2, translation2 = node.metadata["coordinateTransformations"][2]
    assert scale2["scale"] == pytest.approx([1.2] * 3)
    assert translation2["translation"] == pytest.approx([2.45, 1.45, 0.95])


def test_unknown_ngff_version_is_refused_before_writing(tmp_path, tall_volume):
    asked = Volume(tall_volume.data, (1, 1, 1), metadata={"ngff_version": "0.3"})
    with pytest.raises(VolumeIOError, match="version '0.3' cannot be written; use one of 0.4"):
        write_volume(tmp_path / "v.ome.zarr", asked)
    assert list(tmp_path.iterdir()) == []


def test_restored_zarr_output_gets_its_name_and_a_pyramid(tmp_path, rng):
    source = write_volume(tmp_path / "in.tif",
                          Volume(rng.random((4, 300, 24), dtype=np.float32), (1.0, 0.5, 0.5)))
    out = tmp_path / "restored.ome.zarr"
    drain(iter_restore_file(source, out, "linear", 2, block_shape=(4, 64, 24)))
    attrs = json.loads((out / ".zattrs").read_text())["multiscales"][0]
    assert attrs["name"] == "restored"
    assert [d["path"] for d in attrs["datasets"]] == ["0", "1"]
    group = zarr.open_group(str(out), mode="r")
    assert group["1"].shape == (4, 150, 12)  # z (8 x 0.5) halves with y and x (0.5)
    np.testing.assert_allclose(group["1"][...], _block_mean(group["0"][...], (2, 2, 2)),
                               rtol=1e-5)
    assert [e for e in tmp_path.iterdir() if e.name.startswith(".")] == []


# ------------------------------------------------------------------ inputs
def _ome_zarr_py_pyramid(path, data, version="0.4"):
    """A 3-level pyramid written by ome-zarr-py itself (z in µm, y and x in nm)."""
    import inspect

    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    if "axes_units" not in inspect.signature(write_image).parameters:
        pytest.skip("this ome-zarr has no scale / axes_units arguments (0.17+)")
    group = zarr.open_group(str(path), mode="w",
                            zarr_format=2 if version == "0.4" else 3)
    write_image(data, group, axes="zyx", scale_factors=[2, 4],
                fmt=FormatV04() if version == "0.4" else FormatV05(),
                scale={"z": 0.5, "y": 40.0, "x": 40.0},
                axes_units={"z": "micrometer", "y": "nanometer", "x": "nanometer"},
                storage_options={"chunks": (4, 16, 16)})
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_py_pyramid_reads_as_levels_each_at_its_scale(tmp_path, rng, version):
    data = rng.integers(0, 255, size=(4, 32, 48), dtype=np.uint8)
    path = _ome_zarr_py_pyramid(tmp_path / "py.ome.zarr", data, version)
    levels = read_zarr_levels(path)
    assert [lv.data.shape for lv in levels] == [(4, 32, 48), (4, 16, 24), (4, 8, 12)]
    # Each axis's own unit: z in µm is converted to the nanometres of y and x.
    assert {lv.unit for lv in levels} == {"nm"}
    for level, factor in zip(levels, (1, 2, 4)):
        assert level.spacing == pytest.approx((500.0, 40.0 * factor, 40.0 * factor))
    np.testing.assert_array_equal(np.asarray(levels[0].data), data)
    [(layer_data, kwargs, kind)] = read_layers(str(path))
    assert kind == "image" and kwargs["multiscale"] is True
    assert [level.shape for level in layer_data] == [(4, 32, 48), (4, 16, 24), (4, 8, 12)]
    assert kwargs["scale"] == pytest.approx((500.0, 40.0, 40.0))
    assert kwargs["units"] == ("nanometer",) * 3


def test_multiscales_wide_transformations_apply_to_every_level(tmp_path, tall_volume):
    path = write_volume(tmp_path / "w.ome.zarr", tall_volume)
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["multiscales"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [2.0, 2.0, 2.0]},
        {"type": "translation", "translation": [10.0, 0.0, 0.0]}]
    (path / ".zattrs").write_text(json.dumps(attrs))
    levels = read_zarr_levels(path)
    assert levels[1].spacing == pytest.approx((1.2, 1.2, 1.2))
    assert levels[1].origin == pytest.approx((2 * 2.15 + 10.0, 2 * 1.15, 2 * 0.65))
    assert read_volume(path).origin == pytest.approx((14.0, 2.0, 1.0))


def test_a_level_that_does_not_cover_level_0_is_left_out(tmp_path, tall_volume):
    path = write_volume(tmp_path / "bad.ome.zarr", tall_volume)
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"][2]["coordinateTransformations"][0]["scale"] = [9, 9, 9]
    (path / ".zattrs").write_text(json.dumps(attrs))
    with pytest.warns(VolsrWarning, match="level 2 .* does not cover level 0's extent"):
        levels = read_zarr_levels(path)
    assert len(levels) == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_volume(path)  # restoring needs level 0 only: nothing to say
    assert [w for w in caught if issubclass(w.category, VolsrWarning)] == []
