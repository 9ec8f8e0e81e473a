"""OME-Zarr pyramids in the viewer: a multiscale layer per file, restored from level 0."""

import numpy as np
import pytest

import napari_volsr as vs
from napari_volsr.engine.io import Volume, write_volume

pytest.importorskip("ome_zarr")


@pytest.fixture
def pyramid(tmp_path, rng):
    """A 3-level OME-Zarr output (z in µm, anisotropic): 4 x 520 x 24 at 1.0 x 0.25 x 0.25."""
    data = rng.integers(0, 4000, size=(4, 520, 24), dtype=np.uint16)
    volume = Volume(data, (1.0, 0.25, 0.25), "ZYX", "µm", (3.0, 0.0, 0.0))
    return write_volume(tmp_path / "cells.ome.zarr", volume), data


def test_pyramid_opens_as_one_multiscale_layer(make_napari_viewer, pyramid):
    path, data = pyramid
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-volsr")
    assert layer.name == "cells" and layer.multiscale
    assert [level.shape for level in layer.data] == [(4, 520, 24), (4, 260, 12), (4, 130, 6)]
    np.testing.assert_allclose(layer.scale, (1.0, 0.25, 0.25))
    np.testing.assert_allclose(layer.translate, (3.0, 0.0, 0.0))
    # napari places each level by its shape; the file's own voxel sizes say the same
    # (z, coarser than y and x, is kept until they catch up).
    np.testing.assert_allclose(np.asarray(layer.downsample_factors) * layer.scale,
                               [(1.0, 0.25, 0.25), (1.0, 0.5, 0.5), (1.0, 1.0, 1.0)])
    assert tuple(str(u) for u in layer.units) == ("micrometer",) * 3
    np.testing.assert_array_equal(np.asarray(layer.data[0]), data)


def test_restoring_a_multiscale_layer_reads_its_full_resolution(make_napari_viewer, pyramid):
    path, data = pyramid
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-volsr")
    vs.restore(layer, model="linear", z_factor=2, viewer=viewer)
    out = viewer.layers["cells [linear x2]"]
    assert not out.multiscale and out.data.shape == (8, 520, 24)
    np.testing.assert_allclose(out.scale, (0.5, 0.25, 0.25))
    # Slab grid: the first output slice is a quarter of an input slice before its centre.
    np.testing.assert_allclose(out.translate, (2.75, 0.0, 0.0))
    np.testing.assert_allclose(np.asarray(out.data)[::2].mean(), data.mean(), rtol=0.05)


def test_a_multiscale_layer_saves_from_its_full_resolution(make_napari_viewer, pyramid,
                                                          tmp_path):
    from napari.plugins.io import save_layers

    from napari_volsr.engine.io import read_volume

    path, data = pyramid
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-volsr")
    [written] = save_layers(str(tmp_path / "copy.ome.zarr"), [layer], plugin="napari-volsr")
    back = read_volume(written)
    np.testing.assert_array_equal(np.asarray(back.data), data)
    assert back.spacing == pytest.approx((1.0, 0.25, 0.25))
    assert back.origin == pytest.approx((3.0, 0.0, 0.0))
