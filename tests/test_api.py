import numpy as np

import napari_volsr as vs


def test_restore_array_returns_array(smooth_volume):
    out = vs.restore(smooth_volume, model="linear", z_factor=2)
    assert isinstance(out, np.ndarray) and out.shape == (24, 20, 24)


def test_list_models_has_baselines():
    assert {"linear", "cubic"} <= set(vs.list_models())
