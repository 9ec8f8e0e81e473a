"""The ``volsr`` click group, its error types and the entry point that maps errors to one line."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings

import click

from ..engine.io import VolsrWarning


class _Failure(click.ClickException):
    """A failure with a one-line message (printed by :func:`main`), exit status 1."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that the same cleanup runs."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a command runs, SIGTERM (``timeout``, SLURM, ``docker stop``) acts as Ctrl-C.

    A second SIGTERM is ignored, so that it cannot cut the cleanup short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def interrupted_code(exc: BaseException) -> int:
    """Exit status of an interrupted command: 143 after SIGTERM, 130 after Ctrl-C."""
    return 128 + signal.SIGTERM if isinstance(exc, _Terminated) else 130


class _Interrupted(click.ClickException):
    """Stopped by Ctrl-C (or SIGTERM); the message says what was kept. Exit status 130."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="napari-volsr")
def cli():
    """Restore 3D volumes and make anisotropic ones isotropic."""


@contextlib.contextmanager
def _warnings_as_lines():
    """Print the engine's warnings as ``volsr: warning: ...`` lines, every time they occur."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", VolsrWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, VolsrWarning):
                click.echo(f"volsr: warning: {' '.join(str(message).split())}", err=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def main(argv=None):
    """Entry point of the ``volsr`` command: errors are one line, never a traceback.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after the program name (default: ``sys.argv[1:]``).
    """
    # tifffile and nibabel log what they find wrong in a file; our error or warning names
    # the file and the problem in one line, so their log lines would only repeat it.
    for name in ("tifffile", "nibabel"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with _warnings_as_lines():
            cli.main(args=argv, prog_name="volsr", standalone_mode=False)
    except _Interrupted as exc:
        click.echo(f"volsr: interrupted: {exc.format_message()}", err=True)
        # zarr's reads still pending on its event loop are dropped at exit, and Python
        # reports each as a coroutine never awaited: noise after the one line that matters.
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"volsr: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        click.echo("volsr: interrupted" + (" (SIGTERM)" if isinstance(exc, _Terminated) else ""),
                   err=True)
        sys.exit(interrupted_code(exc))
    except Exception as exc:  # what no command anticipated: out of memory, a full disk...
        message = " ".join(str(exc).split()) or "no details"
        click.echo(f"volsr: error: {type(exc).__name__}: {message}", err=True)
        sys.exit(1)
