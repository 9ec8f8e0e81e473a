"""The Train panel's 2.5D control: neighbour planes for 2D same-shape U-Net / SRUNet models."""

import pytest

import napari_volsr as vs
from napari_volsr._qt.train_defaults import takes_context
from napari_volsr._qt.train_widget import TrainWidget
from napari_volsr.engine.models import list_library, load_model
from napari_volsr.engine.training_config import default_context_planes

pytestmark = pytest.mark.usefixtures("library")  # trained models land there


@pytest.fixture
def panel(make_napari_viewer, pair):
    """A docked Train panel over a noisy and a clean layer of the same shape."""
    viewer = make_napari_viewer()
    viewer.add_image(pair[0], name="noisy")
    viewer.add_image(pair[1], name="clean")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    return viewer, widget


def shown(widget) -> bool:
    return not widget.native.isHidden()


def configure(widget, name: str, steps=4):
    widget.preset.value = "tiny"
    widget.steps.value = steps
    widget.validate_every.value = 2
    widget.batch_size.value = 2
    widget.learning_rate.value = "1e-3"
    widget.model_name.value = name


def train(qtbot, widget, resume=False):
    (widget._on_resume if resume else widget._on_start)()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)


def spy_requests(monkeypatch) -> list:
    """The keywords of each ``resolve_training`` call the panel makes."""
    from napari_volsr.engine import training_request

    calls, resolve = [], training_request.resolve_training
    monkeypatch.setattr(training_request, "resolve_training",
                        lambda **kwargs: (calls.append(kwargs), resolve(**kwargs))[1])
    return calls


def test_shown_only_where_the_engine_takes_neighbour_planes(panel):
    _, widget = panel
    box = widget.context_planes
    for source in ("paired", "synthetic", "noise2void", "noise2noise"):
        widget.source.value = source
        assert (widget.family.value, widget.dims.value) == ("unet", 2)  # same-shape defaults
        assert shown(box), source
    widget.dims.value = 3
    assert not shown(box)
    widget.dims.value = 2
    widget.family.value = "rcan"  # adds its input back: planes as channels do not fit
    assert not shown(box)
    widget.family.value = "srunet"
    assert shown(box)
    widget.source.value = "synthetic"
    widget.z_factor.value = 2
    assert not shown(box)
    widget.z_factor.value = 1  # upsampling made it 3D; the user's 2D comes back by hand
    widget.dims.value = 2
    assert shown(box)
    widget.source.value = "isotropic"
    assert not shown(box)
    # The z rule alone, whatever the dimensionality the form would choose.
    assert not takes_context("synthetic", 2, 2, "unet")
    assert takes_context("synthetic", 2, 1, "unet")


def test_follows_the_engine_default_until_edited(make_napari_viewer, pair, monkeypatch):
    from napari_volsr.engine import training_config

    monkeypatch.setattr(training_config, "default_context_planes", lambda *task: 2)
    viewer = make_napari_viewer()
    viewer.add_image(pair[0], name="noisy")
    widget = TrainWidget(viewer)
    widget.source.value = "noise2void"
    assert widget.dims.value == 2 and widget.context_planes.value == 2
    monkeypatch.setattr(training_config, "default_context_planes", lambda *task: 3)
    widget.source.value = "synthetic"
    assert widget.context_planes.value == 3  # read again at each change
    widget.context_planes.value = 1
    widget.source.value = "noise2void"
    assert widget.context_planes.value == 1  # the user's value stays


def test_a_chosen_value_trains_a_2_5d_model(qtbot, panel, monkeypatch):
    viewer, widget = panel
    calls = spy_requests(monkeypatch)
    widget.source.value = "noise2void"
    widget.volume.value = viewer.layers["noisy"]
    configure(widget, "n2v-ctx")
    widget.context_planes.value = 1

    train(qtbot, widget)

    assert list_library() == ["n2v-ctx"], widget.status.value
    assert calls[-1]["context_planes"] == 1
    assert widget.run_info.request.config.model.context_planes == 1
    assert load_model("n2v-ctx").config.context_planes == 1
    # The panel's words for an existing model say how it sees the volume, as the CLI does.
    assert "(unet 2.5D (1 plane each side), x1," in widget.name_section.name_hint()


def test_hidden_means_not_sent(panel, monkeypatch):
    _, widget = panel
    calls = spy_requests(monkeypatch)
    widget.source.value = "synthetic"
    configure(widget, "flat")
    widget.context_planes.value = 2  # chosen, then the network no longer takes it
    widget.dims.value = 3
    assert not shown(widget.context_planes)

    run = widget._prepare(resume=False)

    assert calls[-1]["context_planes"] is None
    assert run.request.config.model.context_planes == 0


def test_resume_keeps_the_saved_models_planes(qtbot, panel, pair):
    _, widget = panel
    for name, planes in (("ctx", 2), ("plain", 0)):
        vs.train(target=pair[1], preset="tiny", spatial_dims=2, context_planes=planes,
                 name=name, steps=1, patch_shape=(16, 16), batch_size=2, n_val=2,
                 validate_every=1, degradation={"gaussian_sigma": (0.05, 0.1)})
    widget.source.value = "synthetic"
    configure(widget, "ctx", steps=2)
    # The engine's default for a new model (not the checkpoint's 2).
    assert widget.context_planes.value == default_context_planes("synthetic", 2, 1, "unet")

    train(qtbot, widget, resume=True)

    config = load_model("ctx").config
    assert config.context_planes == 2 and config.training["steps"] == 2, widget.status.value
    assert widget.context_planes.value == 2 and shown(widget.context_planes)
    # The shown planes were the checkpoint's, not a choice: another model resumes with its own.
    configure(widget, "plain", steps=2)
    train(qtbot, widget, resume=True)
    assert load_model("plain").config.training["steps"] == 2, widget.status.value
