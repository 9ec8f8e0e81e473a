"""The same invalid training request through the console, the CLI and the Train panel.

Every door hands its inputs to ``engine.training_request.resolve_training``, so each
refuses with the engine's sentence, word for word.
"""

import json
import os
import socket
from dataclasses import dataclass, field

import numpy as np
import pytest
import tifffile
from scipy import ndimage

import napari_volsr as vs
from napari_volsr.cli import main

# A noise-only degradation, so a synthetic request is valid unless a case says otherwise.
NOISE = {"gaussian_sigma": (0.01, 0.02)}


@dataclass
class Case:
    """One request: inputs by role (shapes), settings, and what the refusal must mention."""

    id: str
    inputs: dict
    expect: str
    z_factor: int | None = None
    name: str = "doors"
    family: str | None = None
    resume: bool = False
    steps: int = 4
    patch: tuple | None = None
    noise: bool = True
    nan: bool = False  # the first volume holds NaN and infinite voxels
    held: bool = False  # another live run holds the model name
    source: str | None = None  # None: from the inputs, as the console infers it
    extra: dict = field(default_factory=dict)


CASES = [
    Case("pair differs in y/x", {"raw": (8, 32, 32), "target": (16, 32, 40)}, "differ in Y/X"),
    Case("pair depth not a multiple", {"raw": (8, 32, 32), "target": (12, 32, 32)},
         "the target depth must be the raw depth times the z-factor"),
    Case("z-factor conflicts with the pair", {"raw": (8, 32, 32), "target": (16, 32, 32)},
         "set the z-factor to 2", z_factor=3),
    Case("isotropic with z-factor 1", {"volume": (8, 32, 32)}, "leaves nothing to make isotropic",
         z_factor=1),
    Case("simulated input equals target", {"target": (8, 32, 32)},
         "the simulated input equals the target", z_factor=1, noise=False),
    Case("volume smaller than the patch", {"raw": (3, 8, 8), "target": (3, 8, 8)},
         "use a smaller patch", patch=(4, 16, 16)),
    Case("bad model name", {"target": (8, 32, 32)}, "is not a valid model name", name="a/b"),
    Case("name taken", {"target": (8, 32, 32)}, "exists in", name="trained"),
    Case("resume without a checkpoint", {"target": (8, 32, 32)}, "no checkpoint for the model",
         name="never-trained", resume=True),
    Case("resume with another family", {"target": (8, 32, 32)}, "family rcan (not gan)",
         name="trained", family="gan", resume=True),
    Case("resume with a spent step budget", {"target": (8, 32, 32)}, "steps already",
         name="trained", family="rcan", resume=True, steps=2),
    Case("non-finite values in the data", {"target": (8, 32, 32)},
         "'target' holds 2 NaN or infinite voxels", nan=True),
    Case("name held by a running training", {"target": (8, 32, 32)},
         "is already training a model named 'held'", name="held", held=True),
    Case("noise2noise with one acquisition", {"volume": (8, 32, 32)},
         "needs two or more acquisitions", source="noise2noise"),
    Case("noise2void with a GAN", {"volume": (8, 32, 32)}, "cannot learn from",
         source="noise2void", family="gan"),
]


def smooth(shape, seed=0):
    rng = np.random.default_rng(seed)
    volume = ndimage.gaussian_filter(rng.random(shape), 1.0)
    return ((volume - volume.min()) / np.ptp(volume) * 200 + 20).astype(np.float32)


@pytest.fixture(scope="module")
def trained_library(tmp_path_factory):
    """A library holding 'trained': RCAN tiny, 2 steps, with its checkpoint."""
    folder = tmp_path_factory.mktemp("library")
    mp = pytest.MonkeyPatch()
    mp.setenv("NAPARI_VOLSR_MODELS", str(folder))
    try:
        vs.train(target=smooth((8, 32, 32)), name="trained", family="rcan", preset="tiny",
                 steps=2, batch_size=1, patch_shape=(4, 16, 16), degradation=NOISE)
    finally:
        mp.undo()
    return folder


@pytest.fixture
def library(trained_library, monkeypatch):
    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(trained_library))
    return trained_library


def volumes(case: Case) -> dict:
    arrays = {role: smooth(shape, i) for i, (role, shape) in enumerate(case.inputs.items())}
    if case.nan:
        first = next(iter(arrays.values()))
        first[1, 2, 3], first[-1, -2, -3] = np.nan, np.inf
    return arrays


def console_refusal(case: Case) -> str:
    arrays = volumes(case)
    settings = dict(name=case.name, family=case.family, preset="tiny", z_factor=case.z_factor,
                    resume=case.resume, steps=case.steps, batch_size=1, **case.extra)
    if case.source:
        settings["source"] = case.source
    if case.patch:
        settings["patch_shape"] = case.patch
    if "raw" not in arrays:  # no degradation at all where a case asks for none
        settings["degradation"] = NOISE if case.noise else {}
    with pytest.raises(ValueError) as refusal:
        vs.train(**arrays, **settings)
    return str(refusal.value)


def cli_refusal(case: Case, tmp_path, capsys) -> str:
    argv = ["train", "--name", case.name, "--preset", "tiny", "--steps", str(case.steps),
            "--batch-size", "1", "-q"]
    for role, volume in volumes(case).items():
        path = tmp_path / f"{role}.tif"
        tifffile.imwrite(path, volume)
        argv += [f"--{role}", str(path)]
    if "raw" not in case.inputs:
        config = tmp_path / "noise.json"
        config.write_text('{"degradation": {"gaussian_sigma": [0.01, 0.02]}}' if case.noise
                          else '{"degradation": {}}')
        argv += ["-c", str(config)]
    if case.z_factor is not None:
        argv += ["--z-factor", str(case.z_factor)]
    if case.source:
        argv += ["--source", case.source]
    if case.family:
        argv += ["--family", case.family]
    if case.patch:
        argv += ["--patch", ",".join(map(str, case.patch))]
    if case.resume:
        argv += ["--resume"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("volsr: error: ")
    return lines[-1].removeprefix("volsr: error: ")


def panel_refusal(case: Case, make_napari_viewer, qtbot, monkeypatch) -> str:
    from napari_volsr._qt.train_widget import TrainWidget

    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    viewer = make_napari_viewer()
    for role, volume in volumes(case).items():
        viewer.add_image(volume, name=role)
    widget = TrainWidget(viewer)
    source = case.source or ("isotropic" if "volume" in case.inputs else
                             "paired" if "raw" in case.inputs else "synthetic")
    widget.source.value = source
    for role in case.inputs:
        picker = widget.data_section.pickers[role]  # noise2noise: the acquisitions list
        picker.value = [viewer.layers[role]] if source == "noise2noise" else viewer.layers[role]
    widget.preset.value = "tiny"
    if case.family:
        widget.family.value = case.family
    if case.z_factor is not None:
        widget.z_factor.value = case.z_factor
    if case.patch:
        widget.dims.value = len(case.patch)
        widget.patch_z.value, widget.patch_y.value, widget.patch_x.value = case.patch
    if not case.noise:
        widget.blur_high.value = widget.noise_high.value = 0.0
        widget.poisson.value = False
    widget.steps.value = case.steps
    widget.minutes.value = 0
    widget.batch_size.value = 1
    widget.model_name.value = case.name
    (widget._on_resume if case.resume else widget._on_start)()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert len(messages) == 1, messages
    return str(messages[0])


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_every_door_refuses_with_the_engines_sentence(case, library, tmp_path, capsys,
                                                      make_napari_viewer, qtbot, monkeypatch):
    if case.held:  # a live process (this test's parent) holds the name
        (library / f".{case.name}.reserved").write_text(json.dumps(
            {"pid": os.getppid(), "host": socket.gethostname(), "token": "t"}))
    console = console_refusal(case)
    assert case.expect in console
    assert cli_refusal(case, tmp_path, capsys) == console
    assert panel_refusal(case, make_napari_viewer, qtbot, monkeypatch) == console
    assert sorted(p.name for p in library.iterdir() if not p.name.startswith(".")) == ["trained"]
