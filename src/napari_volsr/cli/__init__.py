"""The ``volsr`` command line: the click group ``cli`` and its entry point ``main``."""

# Submodules are imported as modules (not their commands) so that
# ``napari_volsr.cli.restore`` names the module, where tests patch what it looks up.
from . import inspect, models, restore, train
from .app import cli, main

for _command in (inspect.info, inspect.evaluate, inspect.demo, models.models, restore.restore,
                 train.train):
    cli.add_command(_command)
del _command

__all__ = ["cli", "main"]
