"""The Restore panel's model files: load a folder, import and export Model Zoo packages."""

# Export runs the network on a test volume and import rebuilds and checks it: seconds
# each, so both run in a thread worker and report through the panel's status line.

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.models import (
    ModelError,
    library_dir,
    list_library,
    read_model_config,
    resolve_model_path,
)
from ._workers import NO_THREADS

if TYPE_CHECKING:
    from .restore_widget import RestoreWidget

ZOO_FILTER = "BioImage Model Zoo package (*.zip)"
# The engine also reads an unpacked package's description file.
ZOO_OPEN_FILTER = "BioImage Model Zoo package (*.zip rdf.yaml *.bioimageio.yaml)"
SPEC_MISSING = ("BioImage Model Zoo packages need bioimageio.spec: "
                "pip install 'napari-volsr[bioimageio]'")


def free_name(name: str, taken) -> str:
    """``name``, or ``name-2``, ``name-3``... : the first not in ``taken``."""
    taken = set(taken)
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def import_package(package: Path) -> tuple[Path, str]:
    """Import a Model Zoo package under a free library name: (folder, the package's name).

    The panel has no name field: a package whose model is already in the library (say,
    the user's own export) comes in beside it rather than being refused.
    """
    # Reading the description twice (for its name, then to import) costs tens of ms.
    from ..engine.bioimageio import import_bioimageio, package_model_name

    wanted = package_model_name(package)
    taken = {p.name for p in library_dir().iterdir()} if library_dir().is_dir() else set()
    folder = import_bioimageio(package, name=free_name(wanted, taken))
    return folder, wanted


def _zip_name(path: str) -> Path:
    """Make a save-dialog answer a ``.zip`` path (the dialog may drop the extension)."""
    path = Path(path).expanduser()
    return path if path.suffix.lower() == ".zip" else path.with_name(path.name + ".zip")


class ModelFiles:
    """Models from files for the Restore panel: folders, Model Zoo import and export.

    One Model Zoo job (import or export) at a time, in its own worker beside the panel's
    restore worker; its buttons are disabled meanwhile.
    """

    def __init__(self, panel: RestoreWidget):
        self.panel = panel
        self.folders: dict[str, str] = {}  # label in the dropdown -> model folder
        self.worker = None
        self.job: str | None = None  # "export" or "import" while a worker runs

    # ------------------------------------------------------------ folders
    def add_folder(self, folder) -> bool:
        """Validate a model folder and make it selectable; a notification if it is not one."""
        panel = self.panel
        folder = Path(folder).expanduser()
        try:
            if not folder.is_dir():
                raise ModelError(f"{folder}: no such folder")
            config = read_model_config(folder)
        except ModelError as exc:
            panel._notify_error(
                f"Not a usable model folder: {exc}. Choose the folder that holds config.json "
                "and weights.safetensors (as saved by Train), or a Model Zoo .zip with "
                "'import Model Zoo package...'."
            )
            return False
        resolved = folder.resolve()
        library = {resolve_model_path(n).resolve(): n for n in list_library()}
        if resolved in library:  # already in the library: just select it
            panel.model.value = library[resolved]
            return True
        self.folders[f"{config.name} ({resolved.name} folder)"] = str(resolved)
        panel.model.reset_choices()
        panel.then_model.reset_choices()
        panel.model.value = str(resolved)
        panel.status.value = f"model folder added: {resolved}"
        return True

    def on_load_folder(self, _=None):
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.panel.native, "Choose a model folder")
        if folder:
            self.add_folder(folder)

    # ------------------------------------------------------------ Model Zoo
    def export_blocked(self, config) -> str | None:
        """Why ``config``'s model cannot be exported now (None when it can)."""
        if config is None:
            return "interpolation baselines have no network to export"
        if self.job is not None:
            return f"a Model Zoo {self.job} is running: wait for it to finish"
        from ..engine.bioimageio import unsupported_reason

        reason = unsupported_reason(config)
        if reason is None and importlib.util.find_spec("bioimageio.spec") is None:
            return SPEC_MISSING
        return reason

    def on_import(self, _=None):
        from qtpy.QtWidgets import QFileDialog

        path, _filter = QFileDialog.getOpenFileName(
            self.panel.native, "Import a BioImage Model Zoo package", str(Path.home()),
            f"{ZOO_OPEN_FILTER};;All files (*)")
        if path:
            self.import_zoo(path)

    def import_zoo(self, path) -> None:
        """Import the package at ``path`` into the library in a worker, then select it."""
        package = Path(path).expanduser()
        if self._refused_while_busy():
            return
        if importlib.util.find_spec("bioimageio.spec") is None:
            self.panel._notify_error(SPEC_MISSING)
            return
        self._start("import", f"importing {package.name}...", import_package, package)

    def on_export(self, _=None):
        from qtpy.QtWidgets import QFileDialog

        config = self.panel._model_config()
        if config is None or self.export_blocked(config):
            return
        path, _filter = QFileDialog.getSaveFileName(
            self.panel.native, f"Export '{config.name}' to the BioImage Model Zoo",
            str(Path.home() / f"{config.name}.zip"), ZOO_FILTER)
        if path:
            self.export_zoo(path)

    def export_zoo(self, path) -> None:
        """Export the selected model as a Model Zoo package ``path`` (.zip) in a worker.

        The save dialog has already asked before replacing a file: an existing one is
        overwritten (atomically: the engine writes a temporary file, then renames it).
        """
        from ..engine.bioimageio import export_bioimageio

        panel = self.panel
        config = panel._model_config()
        blocked = self.export_blocked(config)
        if blocked:
            panel._notify_error(f"Cannot export '{panel.model.value}': {blocked}.")
            return
        dest = _zip_name(path)
        self._start("export", f"exporting '{config.name}' to {dest.name} (runs the network "
                              "on a test volume)...",
                    export_bioimageio, panel.model.value, dest, overwrite=True)

    # ------------------------------------------------------------ the worker
    def _refused_while_busy(self) -> bool:
        if self.job is None:
            return False
        self.panel._notify_error(f"A Model Zoo {self.job} is running: wait for it to finish.")
        return True

    def _buttons(self, enabled: bool) -> None:
        panel = self.panel
        panel.import_zoo_button.enabled = enabled
        config = panel._model_config()
        panel.card.show(config, panel.model.value, self.export_blocked(config))

    def _start(self, job: str, message: str, func, *args, **kwargs) -> None:
        self.job = job
        self.panel.status.value = message
        self._buttons(False)
        if NO_THREADS:
            try:
                result = func(*args, **kwargs)
            except Exception as exc:  # same path as the worker's errored signal
                self._on_errored(exc)
            else:
                self._on_returned(result)
            self._on_finished()
            return
        from napari.qt.threading import create_worker

        # _ignore_errors: failures become notifications in _on_errored, not re-raised.
        self.worker = create_worker(func, *args, **kwargs, _start_thread=False,
                                    _ignore_errors=True)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _on_returned(self, result) -> None:
        from napari.utils.notifications import show_info

        from ..engine.text import format_bytes

        panel = self.panel
        if panel._closed:
            return
        if self.job == "export":
            path, notes = result
            panel.status.value = (f"wrote {path}: BioImage Model Zoo package, "
                                  f"{format_bytes(path.stat().st_size)}")
            for note in notes:  # e.g. no TorchScript: the package is valid without it
                show_info(note)
            return
        folder, wanted = result
        panel.refresh_models()
        panel.model.value = folder.name
        renamed = "" if folder.name == wanted else f" ('{wanted}' is already in the library)"
        panel.status.value = f"imported a Model Zoo package as '{folder.name}'{renamed}"

    def _on_errored(self, exc) -> None:
        what = "Export to the Model Zoo" if self.job == "export" else "Model Zoo import"
        if isinstance(exc, ModelError):  # the engine's sentence, as `volsr models` says it
            self.panel._notify_error(f"{what} failed: {exc}")
        else:
            self.panel._notify_error(f"{what} failed: {type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self.job = None
        if not self.panel._closed:
            self._buttons(True)
