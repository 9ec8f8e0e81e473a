"""The Train panel's denoising sources: Noise2Void (one noisy layer), Noise2Noise (several)."""

import numpy as np
import pytest

import napari_volsr as vs
from napari_volsr._qt.train_data import SOURCE_LABELS
from napari_volsr._qt.train_widget import TrainWidget
from napari_volsr.engine.models import list_library, load_model

SCALE = (1.0, 0.5, 0.5)
pytestmark = pytest.mark.usefixtures("library")  # trained models land there


@pytest.fixture(scope="module")
def acquisitions(pair):
    """Two noisy acquisitions of one clean sample, (16, 48, 48) float32."""
    noisy, clean = pair
    second = clean + np.random.default_rng(7).normal(0, 15, clean.shape)
    return noisy, second.astype(np.float32)


def panel_with(make_napari_viewer, layers: dict):
    """A docked Train panel over ``layers`` (name -> array)."""
    viewer = make_napari_viewer()
    for name, data in layers.items():
        viewer.add_image(data, name=name, scale=SCALE)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    return viewer, widget


def configure(widget, name: str, steps=4):
    widget.preset.value = "tiny"
    widget.steps.value = steps
    widget.validate_every.value = 2
    widget.batch_size.value = 2
    widget.learning_rate.value = "1e-3"
    widget.model_name.value = name


def train(qtbot, widget):
    widget._on_start()
    # Not waitSignal(worker.finished): a run that fails at once may finish before it connects.
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)


def shown(widget) -> bool:
    """Not hidden (a magicgui widget or a Qt one such as a collapsible box)."""
    return not getattr(widget, "native", widget).isHidden()


def test_each_source_shows_its_pickers_and_settings(make_napari_viewer, acquisitions):
    _, widget = panel_with(make_napari_viewer, {"noisy 1": acquisitions[0],
                                                "noisy 2": acquisitions[1]})
    combo = widget.source.native
    labels = {combo.itemData(i): combo.itemText(i) for i in range(combo.count())}
    assert labels["noise2void"] == SOURCE_LABELS["noise2void"] == \
        "noisy volume alone (Noise2Void)"
    assert labels["noise2noise"] == "several noisy acquisitions (Noise2Noise)"
    # Two same-shaped layers: the auto-choice stays a pair, never a denoising source.
    assert widget.source.value == "paired"

    widget.source.value = "noise2void"
    assert shown(widget.volume) and widget.volume.label == "noisy volume"
    assert not any(shown(w) for w in (widget.raw, widget.target, widget.acquisitions))
    assert not shown(widget.degradation_box) and shown(widget.blind_spot_box)
    assert widget.z_factor.value == 1 and not widget.z_factor.enabled
    assert widget.dims.enabled
    widget.dims.value = 2
    assert not shown(widget.patch_z)

    widget.source.value = "noise2noise"
    assert shown(widget.acquisitions) and not shown(widget.volume)
    assert [layer.name for layer in widget.acquisitions.value] == ["noisy 1", "noisy 2"]
    assert not shown(widget.degradation_box) and not shown(widget.blind_spot_box)
    assert widget.z_factor.value == 1 and not widget.z_factor.enabled

    widget.source.value = "isotropic"
    assert widget.volume.label == "volume" and widget.z_factor.enabled
    widget.source.value = "synthetic"
    assert shown(widget.degradation_box) and not shown(widget.blind_spot_box)


def test_blind_spot_settings_reach_the_config(make_napari_viewer, acquisitions):
    _, widget = panel_with(make_napari_viewer, {"noisy": acquisitions[0]})
    widget.source.value = "noise2void"
    assert not widget.mask_span.enabled  # no streak axis: no span
    assert widget.masked_one_in.value == 64  # the engine's default, 1/64
    widget.masked_one_in.value = 256
    widget.replacement.value = "neighbour"
    widget.mask_axis.value = "x"
    assert widget.mask_span.enabled
    widget.mask_span.value = 3
    assert widget.blind_spot.values() == dict(masked_fraction=1 / 256, replacement="neighbour",
                                              mask_axis="x", mask_span=3)


def test_noise2void_trains_from_one_noisy_layer(qtbot, make_napari_viewer, acquisitions):
    viewer, widget = panel_with(make_napari_viewer, {"noisy": acquisitions[0]})
    widget.source.value = "noise2void"
    assert widget.volume.value is viewer.layers["noisy"]
    configure(widget, "n2v")
    widget.replacement.value = "neighbour"

    train(qtbot, widget)

    assert list_library() == ["n2v"], widget.status.value
    assert widget.run_info.request.config.blind_spot.replacement == "neighbour"
    card = load_model("n2v").config.training
    assert card["source"] == "noise2void" and card["steps"] == 4
    assert widget.plot.loss_steps == [1, 2, 3, 4] and widget.plot.psnr_steps == [2, 4]
    # The plot says what its PSNR compares: no clean data here.
    assert widget.plot.validation_label and "blind-spot" in widget.plot.caption()
    assert widget.plot.baseline_name == "input"
    assert "n2v preview" in viewer.layers
    assert "model 'n2v' saved" in widget.status.value
    np.testing.assert_array_equal(viewer.layers["noisy"].data, acquisitions[0])


def test_noise2noise_trains_on_two_acquisitions(qtbot, make_napari_viewer, acquisitions):
    viewer, widget = panel_with(make_napari_viewer, {"first": acquisitions[0],
                                                     "second": acquisitions[1],
                                                     "other": acquisitions[0][:, :40]})
    widget.source.value = "noise2noise"
    widget.acquisitions.value = [viewer.layers["first"], viewer.layers["second"]]
    configure(widget, "n2n")

    train(qtbot, widget)

    assert list_library() == ["n2n"], widget.status.value
    assert load_model("n2n").config.training["source"] == "noise2noise"
    assert widget.plot.psnr_steps == [2, 4] and widget.plot.validation_label
    assert vs.restore(acquisitions[0], model="n2n").shape == acquisitions[0].shape


def engine_refusal(layers: list) -> str:
    """The console's refusal of the same layers: the engine's sentence."""
    with pytest.raises(ValueError) as refusal:
        vs.train(volume=layers, source="noise2noise", preset="tiny", steps=4, batch_size=2,
                 name="refused")
    return str(refusal.value)


@pytest.mark.parametrize("chosen", [["first"], ["first", "narrow"]],
                         ids=["one acquisition", "shapes differ"])
def test_noise2noise_refusals_are_the_engines(chosen, qtbot, make_napari_viewer, acquisitions,
                                              errors):
    layers = {"first": acquisitions[0], "narrow": acquisitions[1][:, :, :40]}
    viewer, widget = panel_with(make_napari_viewer, layers)
    widget.source.value = "noise2noise"
    widget.acquisitions.value = [viewer.layers[name] for name in chosen]
    configure(widget, "refused")

    widget._on_start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)

    assert errors == [engine_refusal(widget.acquisitions.value)]
    assert widget.status.value == errors[0]
    assert list_library() == [] and "refused preview" not in viewer.layers


def test_a_streak_mask_along_z_needs_a_3d_network(make_napari_viewer, acquisitions, errors):
    viewer, widget = panel_with(make_napari_viewer, {"noisy": acquisitions[0]})
    # One layer, even named 'noisy': the auto-choice is as before (its spacing: isotropic).
    assert widget.source.value == "isotropic"
    widget.source.value = "noise2void"
    configure(widget, "streaks")
    widget.dims.value = 2
    widget.mask_axis.value = "z"

    widget._on_start()

    assert widget.worker is None  # refused on the main thread, before any worker
    with pytest.raises(ValueError) as refusal:
        vs.train(volume=viewer.layers["noisy"], source="noise2void", spatial_dims=2,
                 blind_spot={"mask_axis": "z"}, preset="tiny", steps=4, batch_size=2,
                 name="streaks")
    assert errors == [str(refusal.value)] and "3D model" in errors[0]
    assert list_library() == []
