import os
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

# Test modules import the shared helpers and case tables (helpers.py, bad_input_cases.py)
# by name. pytest's default "prepend" import mode already puts this folder on sys.path when
# it loads this file; this keeps them importable under --import-mode=importlib too.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

import helpers  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Torch on one thread for the whole run.

    The networks here are tiny: a second intra-op thread buys nothing, and on a shared,
    busy machine its spinning OpenMP workers stall each step (seconds instead of
    milliseconds). No test needs more: worker processes and ``torch_threads`` set their own.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def private_model_library(tmp_path_factory):
    """Every test process gets its own model library unless a test sets one.

    Tests run in parallel processes (scripts/test.sh): a test that saves a model without
    the ``library`` fixture must neither meet another process's model of the same name
    nor write into the user's real library.
    """
    before = os.environ.get("NAPARI_VOLSR_MODELS")
    os.environ["NAPARI_VOLSR_MODELS"] = str(tmp_path_factory.mktemp("models"))
    yield
    if before is None:
        os.environ.pop("NAPARI_VOLSR_MODELS", None)
    else:
        os.environ["NAPARI_VOLSR_MODELS"] = before


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def smooth_volume(rng):
    """A smooth random float volume in about 0..1 (Z, Y, X) = (12, 20, 24)."""
    vol = ndimage.gaussian_filter(rng.random((12, 20, 24)), 2.0)
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    return vol.astype(np.float32)


@pytest.fixture
def anisotropic_tiff(tmp_path, rng):
    """An ImageJ TIFF (8, 24, 20) uint16 with spacing 0.8 x 0.2 x 0.2 µm."""
    import tifffile

    data = (ndimage.gaussian_filter(rng.random((8, 24, 20)), 1.5) * 4000).astype(np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(5.0, 5.0),
                     metadata={"spacing": 0.8, "unit": "um", "axes": "ZYX"})
    return path, data


@pytest.fixture(scope="module")
def pair():
    """(noisy raw, clean target), both (16, 48, 48) float32, the same in every test."""
    return helpers.noisy_pair(np.random.default_rng(1))


@pytest.fixture
def save_tiny():
    """``save_tiny(folder, family="gan", z_factor=2, **fields)``: an untrained tiny model."""
    return helpers.save_tiny


@pytest.fixture
def library(tmp_path, monkeypatch):
    """An empty model library in a temporary folder (``NAPARI_VOLSR_MODELS``)."""
    root = tmp_path / "library"
    root.mkdir()
    monkeypatch.setenv("NAPARI_VOLSR_MODELS", str(root))
    return root


@pytest.fixture
def tiny_library(library):
    """The model library holding one model, ``helpers.TINY_NETWORK`` (tiny GAN, z x2)."""
    helpers.save_tiny(library / helpers.TINY_NETWORK)
    return library


@pytest.fixture
def errors(monkeypatch):
    """Messages the panels show as error notifications."""
    messages = []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    return messages


@pytest.fixture
def restore_panel(make_napari_viewer):
    """A viewer with the Restore panel docked: ``(viewer, panel)``."""
    from napari_volsr._qt.restore_widget import RestoreWidget

    viewer = make_napari_viewer()
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Restore")
    return viewer, widget
