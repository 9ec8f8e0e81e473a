"""Progress of a training run on the terminal, and the signals that stop it cleanly."""

from __future__ import annotations

import signal
import sys
import threading

import click


class _GracefulStop:
    """While training: the first Ctrl-C (or SIGTERM) asks to stop after this step.

    Stopping then closes the training generator, whose handler saves a checkpoint and
    the model. A second Ctrl-C aborts at once, except while that save runs. Handlers are
    installed only on the main thread (Python allows no other).
    """

    def __init__(self):
        self.signum: int | None = None
        self.saving = False
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        # No printing here: the main thread may be inside a write to the same stream.
        if self.signum is not None and signum == signal.SIGINT and not self.saving:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum

    def __exit__(self, *exc_info):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return False


class _TrainDisplay:
    """Training progress on stderr: a live bar on terminals, a line per validation in logs.

    The bar's label carries the loss and the last validation PSNR. Without a terminal
    click prints the label whenever it changes, so it changes at the first step and at
    validations only. What the PSNR compares (``validation_label``: the target, or noisy
    data for the denoising sources) is said once, at the first validation.
    """

    def __init__(self, quiet: bool, minutes: float | None):
        self.quiet = quiet
        self.live = sys.stderr.isatty()
        self.seconds = None if minutes is None else max(1, round(minutes * 60))
        self.bar = None
        self.psnr: float | None = None
        self.baseline: float | None = None
        self.logged_first = False
        self.told_label = False

    def show(self, record) -> None:
        if record.validation:
            self.psnr = record.validation.get("psnr")
        if record.baseline_validation:
            self.baseline = record.baseline_validation.get("psnr")
        if not record.losses:
            if record.message and not record.message.startswith(("finished", "stopped")):
                self.message(record.message)  # data warnings come before the first step
            return
        if self.quiet:
            return
        if record.validation and record.validation_label and not self.told_label:
            self.told_label = True
            self.message(f"validation PSNR {record.validation_label}")
        label = f"loss {record.loss:.4g}"
        if self.psnr is not None:
            label += f", val PSNR {self.psnr:.2f} dB"
            if self.baseline is not None:
                label += f" (interpolation {self.baseline:.2f})"
        total = record.total or self.seconds
        position = record.step if record.total else int(record.elapsed)
        if self.bar is None:
            self.bar = click.progressbar(length=max(total or 1, 1), label="training",
                                         file=sys.stderr, show_pos=bool(record.total))
            self.bar.__enter__()
        if self.live:
            self.bar.label = label
        elif not self.logged_first or record.validation:
            self.logged_first = True
            self.bar.label = f"step {record.step}/{record.total or '?'}: {label}"
        self.bar.update(max(0, min(position, self.bar.length) - self.bar.pos))
        if record.message and not self.live:
            self.message(record.message)  # e.g. checkpoint saved

    def message(self, text: str) -> None:
        if self.bar is not None and self.live:
            click.echo("", err=True)  # leave the bar's line
        click.echo(f"volsr: {text}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
