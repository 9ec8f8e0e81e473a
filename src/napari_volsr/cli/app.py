"""The ``volsr`` click group, its error types and the entry point that maps errors to one line."""

from __future__ import annotations

import logging
import sys

import click


class _Failure(click.ClickException):
    """A failure with a one-line message (printed by :func:`main`), exit status 1."""


class _Interrupted(click.ClickException):
    """Stopped by Ctrl-C (or SIGTERM); the message says what was kept. Exit status 130."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="napari-volsr")
def cli():
    """Restore 3D volumes and make anisotropic ones isotropic."""


def main(argv=None):
    """Entry point of the ``volsr`` command: errors are one line, never a traceback.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after the program name (default: ``sys.argv[1:]``).
    """
    # tifffile logs what it finds wrong in a file before raising; our error names the
    # file and the problem in one line, so its log lines would only repeat it, noisily.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        cli.main(args=argv, prog_name="volsr", standalone_mode=False)
    except _Interrupted as exc:
        click.echo(f"volsr: interrupted: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"volsr: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("volsr: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # what no command anticipated: out of memory, a full disk...
        message = " ".join(str(exc).split()) or "no details"
        click.echo(f"volsr: error: {type(exc).__name__}: {message}", err=True)
        sys.exit(1)
