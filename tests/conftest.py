import numpy as np
import pytest
from scipy import ndimage


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def smooth_volume(rng):
    """A smooth random float volume in about 0..1 (Z, Y, X) = (12, 20, 24)."""
    vol = ndimage.gaussian_filter(rng.random((12, 20, 24)), 2.0)
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    return vol.astype(np.float32)


@pytest.fixture
def anisotropic_tiff(tmp_path, rng):
    """An ImageJ TIFF (8, 24, 20) uint16 with spacing 0.8 x 0.2 x 0.2 µm."""
    import tifffile

    data = (ndimage.gaussian_filter(rng.random((8, 24, 20)), 1.5) * 4000).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(5.0, 5.0),
                     metadata={"spacing": 0.8, "unit": "um", "axes": "ZYX"})
    return path, data
