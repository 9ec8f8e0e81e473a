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


def test_restore_array_with_a_saved_upsampling_model(tmp_path, monkeypatch, smooth_volume):
    from napari_volsr.engine.config import ModelConfig
    from napari_volsr.engine.models import save_model
    from napari_volsr.engine.registry import build_network, network_config

    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(tmp_path))
    config = ModelConfig(name="up3", task="upsample", z_factor=3, network=network_config("gan", "tiny"))
    save_model(tmp_path / "up3", config, build_network(config))
    out = vs.restore(smooth_volume, model="up3")  # the model's own z-factor
    assert out.shape == (36, 20, 24)
