import numpy as np

import napari_volsr as vs


def test_restore_layer_adds_to_viewer(make_napari_viewer, smooth_volume):
    viewer = make_napari_viewer()
    layer = viewer.add_image(smooth_volume, name="stack", scale=(0.6, 0.2, 0.2))
    tuples = vs.restore(layer, model="cubic", viewer=viewer)
    assert len(tuples) == 1
    out = viewer.layers["stack [cubic x3]"]
    assert out.data.shape == (36, 20, 24)
    np.testing.assert_allclose(out.scale, (0.2, 0.2, 0.2))
    np.testing.assert_allclose(out.translate, (-0.2, 0, 0))
