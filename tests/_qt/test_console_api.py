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


def test_a_layers_unit_reaches_the_model_card(make_napari_viewer, tmp_path, monkeypatch):
    import numpy as np

    import napari_volsr as vs
    from napari_volsr._qt._restore_logic import model_card

    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(tmp_path / "library"))
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    layer = viewer.add_image(rng.random((8, 32, 32)).astype(np.float32), scale=(0.8, 0.2, 0.2),
                             metadata={"unit": "µm"})
    model = vs.train(volume=layer, preset="tiny", steps=1, name="unit")
    assert model.config.training["voxel_unit"] == "µm"
    assert "µm" in model_card(model.config)
