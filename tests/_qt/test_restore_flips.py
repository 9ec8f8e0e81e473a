"""The Restore panel's test-time flips box: the model's default until the user ticks it."""

import numpy as np
from helpers import save_tiny


def _run(qtbot, widget):
    widget._on_run()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def test_flips_box_follows_the_model_until_touched(qtbot, restore_panel, library, rng):
    save_tiny(library / "n2v", "unet", 1, spatial_dims=2, training={"source": "noise2void"})
    save_tiny(library / "syn", "unet", 1, spatial_dims=3, training={"source": "synthetic"})
    viewer, widget = restore_panel
    widget.model.reset_choices()
    viewer.add_image(rng.random((4, 16, 16)).astype(np.float32), name="noisy")
    assert widget.flips.native.isHidden()  # cubic: no network to flip

    widget.model.value = "n2v"
    assert not widget.flips.native.isHidden()
    assert widget.flips.value is True
    assert "4 passes" in widget.flips.tooltip

    assert widget._form()["restorer_options"] == {}  # untouched: each model's own default
    _run(qtbot, widget)
    assert viewer.layers["noisy [n2v]"].metadata["volsr"]["flips"] is True

    widget.model.value = "syn"
    assert widget.flips.value is False
    widget.flips.value = True  # the user's choice now holds for every model
    assert widget._form()["restorer_options"] == {"flips": True}
    widget.model.value = "n2v"
    assert widget.flips.value is True
    widget.flips.value = False
    _run(qtbot, widget)
    out = [layer for layer in viewer.layers if layer.name.startswith("noisy [n2v]")][-1]
    assert out.metadata["volsr"]["flips"] is False

    widget.model.value = "cubic"
    assert widget.flips.native.isHidden()
    assert widget._form()["restorer_options"] == {}
