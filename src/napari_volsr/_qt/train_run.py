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


def checkpoint_dims(name: str, default: int) -> int:
    """The dimensionality of model ``name``'s checkpoint (it sets the patch's length).

    ``default`` for a bad name or a missing checkpoint: ``resolve_training`` explains those.
    """
    from ..engine.config import check_model_name
    from ..engine.models import library_dir
    from ..engine.training_request import read_checkpoint

    try:
        return read_checkpoint(library_dir() / check_model_name(name))[0].spatial_dims
    except ValueError:
        return default


def baseline_name(factors) -> str:
    """What the validation baseline is: the input itself, or cubic interpolation.

    ``factors``: the z-factor, or the factors (z, y, x).
    """
    from ..engine.geometry import validate_factors

    return "input" if validate_factors(factors) == (1, 1, 1) else "cubic"


def status_text(record, psnr: float | None, minutes: float | None,
                baseline: float | None = None, baseline_label: str = "baseline") -> str:
    """The status line for a training record: step, loss, validation, time.

    ``baseline_label`` names the reference score (``input``, ``cubic``).
    """
    from .train_sections import time_text

    total = record.total
    parts = [f"step {record.step}" + (f"/{total}" if total else "")]
    if record.loss is not None:
        parts.append(f"loss {record.loss:.4g}")
    if psnr is not None:
        parts.append(f"val PSNR {psnr:.2f} dB"
                     + (f" ({baseline_label} {baseline:.2f})" if baseline is not None else ""))
    parts.append(time_text(record.elapsed, minutes) if minutes
                 else f"{record.elapsed / 60:.1f} min")
    if record.data_wait > 0.5:
        parts.append(f"waiting for data {record.data_wait:.0%}")
    text = ", ".join(parts)
    return f"{text} - {record.message}" if record.message else text


def saved_text(config) -> str:
    """``finished, 200 steps, val PSNR 21.90 dB (input 19.80 dB)``: a saved model's run.

    What the score compares stays under the plot (the engine's validation label).
    """
    card = config.training
    how = "stopped early" if card.get("stopped_early") else "finished"
    psnr = (card.get("final_validation") or {}).get("psnr")
    baseline = (card.get("baseline_validation") or {}).get("psnr")
    detail = f"{how}, {card.get('steps')} steps"
    if psnr is not None:
        detail += f", val PSNR {psnr:.2f} dB"
        if baseline is not None:
            detail += f" ({baseline_name(config.factors)} {baseline:.2f} dB)"
    return detail


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
