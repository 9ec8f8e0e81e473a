"""A chain of models through the console and the Restore panel ("then apply")."""

import numpy as np
import pytest
from helpers import TINY_NETWORK, save_tiny

import napari_volsr as vs

NAME = f"stack [den then {TINY_NETWORK} x2]"


@pytest.fixture
def chain_library(tiny_library):
    save_tiny(tiny_library / "den", family="rcan", z_factor=1)
    return tiny_library


def test_console_restores_a_layer_with_a_chain(make_napari_viewer, chain_library, smooth_volume):
    viewer = make_napari_viewer()
    layer = viewer.add_image(smooth_volume, name="stack", scale=(0.4, 0.2, 0.2))
    vs.restore(layer, model=["den", TINY_NETWORK], viewer=viewer)
    out = viewer.layers[NAME]
    assert out.data.shape == (24, 20, 24)
    np.testing.assert_allclose(out.scale, (0.2, 0.2, 0.2))
    np.testing.assert_allclose(out.translate, (-0.1, 0, 0))
    assert [s["model"] for s in out.metadata["volsr"]["chain"]] == ["den", TINY_NETWORK]
    array = vs.restore(smooth_volume, model=["den", TINY_NETWORK])
    np.testing.assert_allclose(array, out.data, rtol=1e-5, atol=1e-3)


def test_panel_then_apply_runs_both_models_as_one_job(qtbot, restore_panel, chain_library,
                                                      smooth_volume):
    viewer, widget = restore_panel
    widget.refresh_models()
    viewer.add_image(smooth_volume, name="stack", scale=(0.4, 0.2, 0.2))
    widget.model.value = "den"
    assert widget.then_model.value == "" and widget.z_factor.value == 1
    widget.then_model.value = TINY_NETWORK
    assert widget.z_factor.value == 2 and not widget.z_factor.enabled  # the models fix it
    lines = widget.plan_label.value.splitlines()
    assert lines[0].startswith("den x1: ") and lines[1].startswith(f"{TINY_NETWORK} x2: ")
    assert "output 24x20x24" in lines[2]
    widget._on_run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    out = viewer.layers[NAME]
    assert out.data.shape == (24, 20, 24)
    np.testing.assert_allclose(out.scale, (0.2, 0.2, 0.2))
    assert f"added '{NAME}'" in widget.status.value
    widget.then_model.value = "cubic"  # a baseline takes what the models leave of x2
    assert widget.z_factor.enabled and widget.z_factor.value == 2
    assert widget.plan_label.value.splitlines()[1].startswith("cubic x2: ")
    widget.then_model.value = ""  # one model again
    assert widget.z_factor.value == 1 and not widget.z_factor.enabled
