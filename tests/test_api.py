import numpy as np

import napari_volsr as vs


def test_restore_array_returns_array(smooth_volume):
    out = vs.restore(smooth_volume, model="linear", z_factor=2)
    assert isinstance(out, np.ndarray) and out.shape == (24, 20, 24)


def test_list_models_has_baselines():
    assert {"linear", "cubic"} <= set(vs.list_models())


def test_restore_takes_lists_and_tensors_like_arrays(smooth_volume):
    import torch

    expected = vs.restore(smooth_volume, model="cubic", z_factor=2)
    np.testing.assert_array_equal(vs.restore(smooth_volume.tolist(), model="cubic", z_factor=2),
                                  expected)
    tensor = torch.from_numpy(smooth_volume.copy())
    np.testing.assert_array_equal(vs.restore(tensor, model="cubic", z_factor=2), expected)


def test_restore_array_with_spacing_follows_its_anisotropy(smooth_volume):
    out = vs.restore(smooth_volume, model="linear", spacing=(0.6, 0.2, 0.2))
    assert out.shape == (36, 20, 24)  # z-factor 3 from the spacing, as for a layer
