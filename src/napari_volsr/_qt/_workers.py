"""What both panels need to run engine generators in napari thread workers."""

from __future__ import annotations

import os

# Debugging aid: run the same generators on the main thread (tracebacks, breakpoints).
NO_THREADS = os.environ.get("NAPARI_VOLSR_NOTHREADS", "") not in ("", "0")


class WorkerFailed(Exception):
    """An error raised in a worker, re-raised under a type the worker reports.

    superqt's GeneratorWorker takes a RuntimeError for a deleted Qt object: it would
    warn and never emit ``errored`` or ``finished``. Torch reports most failures (out
    of memory, shape mismatches) as RuntimeError.
    """


def reporting_errors(generator):
    """Yield from ``generator`` and return its value; RuntimeErrors become WorkerFailed."""
    try:
        return (yield from generator)
    except RuntimeError as exc:
        raise WorkerFailed(str(exc) or type(exc).__name__) from exc


def tap(generator, on_yield):
    """Re-yield ``generator``, calling ``on_yield`` for each record; keep its return."""
    while True:
        try:
            record = next(generator)
        except StopIteration as stop:
            return stop.value
        on_yield(record)
        yield record
