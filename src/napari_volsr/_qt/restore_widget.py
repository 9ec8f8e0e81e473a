"""The Restore panel: pick a layer and a model, restore in a worker, add the result."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton, SpinBox

from .._layers import LayerInputError, default_z_factor, layer_input, result_layers
from ..engine.models import ModelError, read_model_config
from ..engine.restorers import BASELINES, get_restorer, list_restorers

if TYPE_CHECKING:
    import napari

# Debugging aid: run the same generator on the main thread (tracebacks, breakpoints).
NO_THREADS = os.environ.get("NAPARI_VOLSR_NOTHREADS", "") not in ("", "0")


class RestoreWidget(Container):
    """Restore an image layer with a model or the interpolation baseline."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        self.worker = None
        self._progress = None
        self._z_touched = False

        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True)
        self.model = ComboBox(label="model", choices=lambda _w: list_restorers(), value="cubic",
                              tooltip="interpolation baseline or a trained model from the library")
        self.z_factor = SpinBox(label="z-factor", min=1, max=16, value=1,
                                tooltip="z upsampling factor (1 = same-shape restoration)")
        self.run_button = PushButton(text="Restore")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(label="progress", value=0, max=1, visible=False)
        self.status = Label(label="status", value="ready")
        self.extend([self.image, self.model, self.z_factor, self.run_button,
                     self.cancel_button, self.progress_bar, self.status])

        self.image.changed.connect(self._on_image_changed)
        self.model.changed.connect(self._on_model_changed)
        self.z_factor.changed.connect(self._on_z_edited)
        self.run_button.changed.connect(self._on_run)
        self.cancel_button.changed.connect(self._on_cancel)
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------ form state
    def _image_layers(self, _widget=None):
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_layers(self, _event=None):
        self.image.reset_choices()
        if self.image.value is None:
            selected = [l for l in self.viewer.layers.selection if l in self._image_layers()]
            choices = self._image_layers()
            if selected or choices:
                self.image.value = (selected or choices)[-1]

    def refresh_models(self):
        """Re-read the model library (e.g. after training)."""
        self.model.reset_choices()

    def _set_z(self, value: int):
        self.z_factor.changed.disconnect(self._on_z_edited)
        self.z_factor.value = value
        self.z_factor.changed.connect(self._on_z_edited)

    def _model_config(self):
        if self.model.value in BASELINES:
            return None
        try:
            return read_model_config(self.model.value)
        except ModelError as exc:
            self.status.value = str(exc)
            return None

    def _on_image_changed(self, layer):
        if layer is not None and not self._z_touched and self._model_config() is None:
            self._set_z(default_z_factor(layer.scale))

    def _on_model_changed(self, _name):
        config = self._model_config()
        # A trained model fixes the z-factor; baselines take any.
        self.z_factor.enabled = config is None
        if config is not None:
            self._set_z(config.z_factor)
            summary = config.training.get("summary", "")
            self.status.value = (
                f"{config.name}: {config.family} {config.task} x{config.z_factor}, "
                f"{config.spatial_dims}D {summary}".rstrip()
            )
        elif self.image.value is not None and not self._z_touched:
            self._set_z(default_z_factor(self.image.value.scale))

    def _on_z_edited(self, _value):
        self._z_touched = True

    # ------------------------------------------------------------ actions
    def _notify_error(self, message: str):
        from napari.utils.notifications import show_error

        self.status.value = message
        show_error(message)

    def _on_run(self, _=None):
        """Validate the form on the main thread, then restore in a worker."""
        from ..engine.predict import iter_restore

        if self.worker is not None:
            self._notify_error("A restoration is already running: wait for it or press Cancel.")
            return
        layer = self.image.value
        if layer is None:
            self._notify_error("No image layer: open a volume (File > Open) and select it.")
            return
        try:
            source = layer_input(layer)
            restorer = get_restorer(self.model.value, self.z_factor.value)
        except (LayerInputError, ValueError) as exc:
            self._notify_error(str(exc))
            return
        expected = default_z_factor(source["spacing"])
        if restorer.z_factor != expected and restorer.z_factor > 1:
            from napari.utils.notifications import show_warning

            show_warning(
                f"z-factor {restorer.z_factor} differs from the layer's anisotropy "
                f"(z/x spacing suggests {expected}); the result's voxels will not be cubic"
            )
        generator = iter_restore(
            source["data"], restorer, spacing=source["spacing"], origin=source["origin"]
        )
        self._source = source
        self._start(generator)

    def _start(self, generator):
        from napari.utils import progress

        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress_bar.visible = True
        self.progress_bar.value = 0
        self.status.value = "restoring..."
        self._progress = progress(total=0, desc="volsr restore")
        if NO_THREADS:
            from ..engine.predict import drain

            try:
                self._on_returned(drain(_tap(generator, self._on_yielded)))
            except Exception as exc:  # same path as the worker's errored signal
                self._on_errored(exc)
            self._on_finished()
            return
        from napari.qt.threading import create_worker

        self.worker = create_worker(lambda: (yield from generator), _start_thread=False)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _on_cancel(self, _=None):
        if self.worker is not None:
            self.status.value = "cancelling..."
            self.worker.quit()

    # ------------------------------------------------------------ worker signals
    def _on_yielded(self, record):
        self.progress_bar.max = max(record.total, 1)
        self.progress_bar.value = record.done
        self.status.value = f"{record.stage}: {record.done}/{record.total} {record.message}"
        bar = self._progress
        if bar is not None and record.stage == "blocks":
            bar.total = record.total
            bar.n = record.done
            bar.set_description("volsr restore")
            bar.refresh()

    def _on_returned(self, result):
        from napari.layers import Layer

        source = self._source
        for data, kwargs, layer_type in result_layers(result, source["name"], source["metadata"]):
            self.viewer.add_layer(Layer.create(data, kwargs, layer_type))
        self.status.value = f"done: {result.plan}"

    def _on_errored(self, exc):
        self._notify_error(f"Restoration failed: {exc}")

    def _on_aborted(self):
        self.status.value = "cancelled: nothing was added"

    def _on_finished(self):
        self.worker = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.progress_bar.visible = False


def _tap(generator, on_yield):
    """Re-yield ``generator``, calling ``on_yield`` for each record; keep its return."""
    while True:
        try:
            record = next(generator)
        except StopIteration as stop:
            return stop.value
        on_yield(record)
        yield record
