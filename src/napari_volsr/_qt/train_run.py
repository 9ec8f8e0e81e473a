"""One run of the Train panel: the resolved request, its preview and its worker."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from ._workers import WorkerFailed, reporting_errors

if TYPE_CHECKING:
    from ..engine.training_request import TrainingRequest


class DataRefused(Exception):
    """The engine refused the request's volumes while building its patches.

    Raised in the worker; the panel shows the engine's sentence as it is, like the
    refusals of ``resolve_training`` on the main thread.
    """


@dataclass
class TrainingRun:
    """What the main thread prepared for one training run."""

    request: TrainingRequest
    preview_input: np.ndarray | None = None
    preview_kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The model's library name."""
        return self.request.config.model.name


class Control:
    """State the panel's ``destroyed`` slot may touch: no Qt, no reference to the panel."""

    def __init__(self):
        self.stop = threading.Event()
        self.closed = False

    def close(self, *_):
        """The panel is gone: stop training (the engine saves the model)."""
        self.closed = True
        self.stop.set()


def training_run(request: TrainingRequest, *, stop: threading.Event, preview_input):
    """Build the request's training data, then yield from its ``iter_train``; return the model.

    Runs in the worker: the request holds arrays and configs only. ``stop`` is the
    engine's ``should_stop``: it finishes the step, checkpoints, saves and returns the model.
    """
    try:
        request.data  # noqa: B018 - reads the volumes and cuts the patches, off the UI thread
    except ValueError as exc:
        raise DataRefused(str(exc)) from exc
    except RuntimeError as exc:
        raise WorkerFailed(str(exc) or type(exc).__name__) from exc
    if stop.is_set():
        return None
    return (yield from reporting_errors(request.iter_train(
        should_stop=stop.is_set, preview_input=preview_input)))


def start_worker(generator, *, aborted, yielded, returned, errored, finished):
    """Run ``generator`` in a napari thread worker wired to the panel's slots; return it."""
    from napari.qt.threading import create_worker
    from qtpy.QtCore import Qt

    def train_model():  # napari lists running tasks by this function's name
        return (yield from generator)

    # _ignore_errors: errors become notifications in the errored slot, not re-raised.
    worker = create_worker(train_model, _start_thread=False, _ignore_errors=True)
    # worker.quit() (napari calls it when its window closes) leaves the generator
    # suspended; closing it right there, in the worker thread, lets iter_train save
    # a checkpoint and the model at once instead of whenever it is garbage-collected.
    worker.aborted.connect(partial(_close_generator, generator), Qt.DirectConnection)
    worker.aborted.connect(aborted)
    worker.yielded.connect(yielded)
    worker.returned.connect(returned)
    worker.errored.connect(errored)
    worker.finished.connect(finished)
    worker.start()
    return worker


def _close_generator(generator):
    try:
        generator.close()
    except Exception as exc:  # an exception escaping a Qt slot would abort the app
        warnings.warn(f"saving the stopped training failed: {exc}", RuntimeWarning, stacklevel=1)
