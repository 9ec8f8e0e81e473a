import numpy as np
import pytest

from napari_volsr._reader import get_reader
from napari_volsr._sample_data import chromosomes, em_fibsem
from napari_volsr._writer import write_image
from napari_volsr.engine.io import read_volume


def test_reader_puts_spacing_into_scale(anisotropic_tiff):
    path, data = anisotropic_tiff
    reader = get_reader(str(path))
    assert reader is not None
    [(layer_data, kwargs, layer_type)] = reader(str(path))
    assert layer_type == "image"
    np.testing.assert_array_equal(layer_data, data)
    np.testing.assert_allclose(kwargs["scale"], (0.8, 0.2, 0.2))
    assert kwargs["name"] == "stack"


@pytest.mark.parametrize("path", ["a.png", "b.csv", "", "no_suffix", 42, None, ["a.tif", "b.tif"]])
def test_reader_declines_without_raising(path):
    assert get_reader(path) is None


def test_nifti_reader_and_writer_update_affine(tmp_path, rng):
    nib = pytest.importorskip("nibabel")
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(rng.random((6, 5, 4)).astype(np.float32), affine), tmp_path / "m.nii.gz")
    [(data, kwargs, _)] = get_reader(str(tmp_path / "m.nii.gz"))(str(tmp_path / "m.nii.gz"))
    assert data.shape == (4, 5, 6)
    np.testing.assert_allclose(kwargs["scale"], (2.0, 0.5, 0.5))
    # Write a z-upsampled layer carrying the source metadata: the affine follows.
    up = np.repeat(data, 2, axis=0)
    meta = {"scale": (1.0, 0.5, 0.5), "translate": (-0.5, 0, 0), "metadata": kwargs["metadata"]}
    [written] = write_image(str(tmp_path / "up.nii.gz"), up, meta)
    out = nib.load(written)
    assert out.shape == (6, 5, 8)
    np.testing.assert_allclose(out.header.get_zooms(), (0.5, 0.5, 1.0))
    np.testing.assert_allclose(out.affine[2, 3], -0.5)  # 0 + 2 * (0.5 * 0.5 - 0.5)


def test_tiff_writer_keeps_spacing(tmp_path, smooth_volume):
    meta = {"scale": (0.3, 0.1, 0.1), "translate": (0, 0, 0), "metadata": {"unit": "µm"}}
    [written] = write_image(str(tmp_path / "w.tif"), smooth_volume, meta)
    vol = read_volume(written)
    np.testing.assert_allclose(vol.spacing, (0.3, 0.1, 0.1))
    assert vol.unit == "µm"


def test_writer_refuses_rgb(tmp_path):
    with pytest.raises(ValueError, match="RGB"):
        write_image(str(tmp_path / "x.tif"), np.zeros((4, 4, 3), np.uint8), {"rgb": True})


def test_sample_data_is_real_and_scaled():
    [(data, kwargs, _)] = chromosomes()
    assert data.shape == (40, 152, 126)
    assert kwargs["scale"][0] / kwargs["scale"][2] == pytest.approx(4.43, abs=0.01)
    [(em, em_kwargs, _)] = em_fibsem()
    assert em.shape == (128, 160, 160) and em_kwargs["scale"] == (10.0, 10.0, 10.0)
