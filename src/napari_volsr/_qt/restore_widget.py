"""The Restore panel: pick a layer and a model, preview or restore in a worker, add the result."""

# The form only gathers values: its sections live in restore_sections, plans, previews
# and restore jobs in the engine (tiling.plan_restore, preview, pipeline).

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import Container

from .._layers import (
    LayerInputError,
    default_z_factor,
    layer_input,
    result_factors,
    result_label,
    result_layers,
    result_name,
)
from ..engine.chain import chain_geometry, plan_chain
from ..engine.data import DEFAULT_PERCENTILES
from ..engine.devices import device_budget
from ..engine.models import ModelError, list_library, read_model_config
from ..engine.pipeline import iter_restore_job
from ..engine.preview import expand_region, iter_preview, visible_region
from ..engine.restorers import BASELINES
from ..engine.tiling import parse_block_shape
from ._restore_logic import region_text
from ._widgets import ShowWatcher, align_label_column, scroll_form
from ._workers import NO_THREADS, reporting_errors, tap
from .restore_chain import ChainSection, plan_summary
from .restore_models import ModelFiles
from .restore_sections import (
    DiffusionSection,
    FlipsSection,
    LayerModelSection,
    ModelCardSection,
    RunSection,
    TilesSection,
    cubic_z_factor,
)

if TYPE_CHECKING:
    import napari


class _FormError(ValueError):
    """The form cannot be run as it is; the message says what to change."""


class RestoreWidget(Container):
    """Restore an image layer with a trained model or an interpolation baseline."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self.viewer = viewer
        self.worker = None
        self._job = None  # "restore" or "preview" while a worker runs
        self._cancelled = False  # the user cancelled the running job
        self._source = None
        self._started = None
        self._closed = False
        self._z_touched = False
        self.files = ModelFiles(self)  # model folders, Model Zoo import and export
        self.plan = None  # the PlanSummary shown in the tiles line

        self.card = ModelCardSection()
        self.inputs = LayerModelSection(self._image_layers, self._model_choices, self.card)
        self.chain = ChainSection(self._model_choices)  # "then apply", above the z-factor
        self.inputs.native.layout().insertWidget(4, self.chain.native)
        self.sampler = DiffusionSection()
        self.augment = FlipsSection()
        self.tiles = TilesSection()
        self.actions = RunSection()
        # The form scrolls; the buttons, the progress bar and the status stay in view.
        self.form = Container(labels=False, widgets=[self.inputs, self.sampler, self.augment,
                                                     self.tiles])
        self.form.margins = (0, 0, 0, 0)
        self.extend([self.form, self.actions])
        self.scroll = scroll_form(self.native.layout(), self.form.native)
        sections = (self.inputs, self.card, self.chain, self.sampler, self.tiles, self.actions,
                    self.augment)
        for section in sections:  # the form's widgets, by the names tests and users know
            for name in section.WIDGETS:
                setattr(self, name, getattr(section, name))
        self._labelled = (*sections[:5], self.augment, self.advanced, self.actions.footer)

        self.image.changed.connect(self._on_image_changed)
        for widget in (self.model, self.then_model):
            widget.changed.connect(self._on_model_changed)
        self.z_factor.changed.connect(self._on_z_edited)
        self.lateral_factor.changed.connect(self._update_plan)
        for widget in (self.block_shape, self.device, self.diffusion_samples):
            widget.changed.connect(self._update_plan)
        self.load_model_button.changed.connect(self.files.on_load_folder)
        self.import_zoo_button.changed.connect(self.files.on_import)
        self.export_zoo_button.changed.connect(self.files.on_export)
        self.preview_button.changed.connect(self._on_preview)
        self.run_button.changed.connect(self._on_run)
        self.cancel_button.changed.connect(self._on_cancel)
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        # Closing the panel (or the viewer, which deletes it) stops a running worker.
        self._watcher = ShowWatcher(self._align_labels, self._stop_worker, self.native)
        self.native.installEventFilter(self._watcher)
        self.native.destroyed.connect(self._on_destroyed)
        self._refresh_layers()
        self._on_model_changed(self.model.value)

    def _align_labels(self):
        """One label column for all sections, measured in the font napari styles."""
        align_label_column(self._labelled, self.status.native)

    # ------------------------------------------------------------ form state
    def _image_layers(self, _widget=None):
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _model_choices(self, _widget=None):
        choices = [(name, name) for name in (*BASELINES, *list_library())]
        return choices + list(self.files.folders.items())

    def _refresh_layers(self, _event=None):
        if self._closed:
            return
        self.image.reset_choices()
        if self.image.value is None:
            selected = [x for x in self.viewer.layers.selection if x in self._image_layers()]
            choices = self._image_layers()
            if selected or choices:
                self.image.value = (selected or choices)[-1]
        self._update_plan()

    def refresh_models(self):
        """Re-read the model library (e.g. after training)."""
        self.model.reset_choices()
        self.then_model.reset_choices()
        self._on_model_changed(self.model.value)

    def add_model_folder(self, folder) -> bool:
        """Validate a model folder and make it selectable; a notification if it is not one."""
        return self.files.add_folder(folder)

    def import_zoo_package(self, path) -> None:
        """Import a BioImage Model Zoo package into the library (a worker), then select it."""
        self.files.import_zoo(path)

    def export_zoo_package(self, path) -> None:
        """Write the selected model as a BioImage Model Zoo package ``path`` (a worker)."""
        self.files.export_zoo(path)

    def _set_quietly(self, widget, value, handler):
        widget.changed.disconnect(handler)
        widget.value = value
        widget.changed.connect(handler)

    def _model_config(self):
        if self.model.value in BASELINES or self.model.value is None:
            return None
        try:
            return read_model_config(self.model.value)
        except ModelError as exc:
            self.status.value = str(exc)
            return None

    def _on_image_changed(self, layer):
        if layer is not None and not self._z_touched and self._model_config() is None:
            self._set_quietly(self.z_factor, default_z_factor(layer.scale), self._on_z_edited)
        self._update_plan()

    def _on_model_changed(self, _name):
        if self._closed:
            return
        config = self._model_config()
        self.inputs.follow_model(config)
        self.sampler.follow_model(config)
        self.augment.follow_model(config)
        self.tiles.set_percentiles(config.percentiles if config is not None
                                   else DEFAULT_PERCENTILES)
        self.card.show(config, self.model.value, self.files.export_blocked(config))
        if config is not None:
            self._set_quietly(self.z_factor, config.z_factor, self._on_z_edited)
        elif self.image.value is not None and not self._z_touched:
            self._set_quietly(self.z_factor, default_z_factor(self.image.value.scale),
                              self._on_z_edited)
        layer = self.image.value
        self.chain.follow(self.model.value, self.z_factor, None if layer is None or
                          self._z_touched else default_z_factor(layer.scale))
        self.inputs.follow_lateral(self.chain.fixed_lateral(self.model.value))
        self._update_plan()

    def _on_z_edited(self, _value):
        self._z_touched = True
        self._update_plan()

    def _update_plan(self, _=None):
        """Recompute the tiles line and the anisotropy warning (cheap: no weights)."""
        if self._closed:
            return
        self.plan = None
        layer = self.image.value
        self.inputs.show_z_warning(layer)
        self.inputs.show_output()
        if layer is None:
            self.tiles.show_plan("choose an image layer")
            return
        try:
            source = layer_input(layer)
            _, geometries = self.chain.plan(self.model.value, self.z_factor.value, layer.scale,
                                            self.sampler.options().get("diffusion_samples"),
                                            self._lateral_factors())
            block_shape = parse_block_shape(self.block_shape.value)
            device, budget = device_budget(self.device.value)
            plans = plan_chain(source["data"].shape, geometries, block_shape, budget)
        except (ValueError, ModelError) as exc:
            self.tiles.show_plan(str(exc), warn=True)
            return
        unit = (source["units"] or (source["metadata"].get("unit"),))[-1]
        self.inputs.show_output(source["data"].shape, plans[-1].out_shape, layer.scale, unit)
        self.plan = plan_summary(self.chain.names(self.model.value), plans, geometries, budget,
                                 auto=isinstance(block_shape, str))
        self.tiles.show_plan(f"{self.plan.describe()} ({device})", warn=self.plan.over_budget)

    def _lateral_factors(self) -> tuple[int, int, int] | None:
        """The form's (fz, fy, fx) when it upsamples y or x; None: z alone, as before."""
        factors = self.inputs.factors()
        return factors if factors[1:] != (1, 1) else None

    # ------------------------------------------------------------ reading the form
    def _notify_error(self, message: str):
        from napari.utils.notifications import show_error

        if not self._closed:
            self.status.value = message
        show_error(message)

    def _busy_message(self) -> str | None:
        if self.worker is None:
            return None
        what = "A preview" if self._job == "preview" else "A restoration"
        return f"{what} is already running: wait for it to finish or press Cancel."

    def _form(self) -> dict:
        """Read and check the form on the main thread; raise ValueError if unusable.

        Refusals are the engine's sentences (layer, block shape, device, model), so
        the panel, the console and ``volsr restore`` say the same.
        """
        layer = self.image.value
        if layer is None:
            raise _FormError("No image layer: open a volume (File > Open) and select it.")
        try:
            source = layer_input(layer)
        except LayerInputError as exc:
            raise _FormError(str(exc)) from None
        block_shape = parse_block_shape(self.block_shape.value)
        device_budget(self.device.value)  # a missing GPU is reported now, not later
        low, high = float(self.percentile_low.value), float(self.percentile_high.value)
        if not low < high:
            raise _FormError(f"The low percentile ({low:g}) must be below the high one "
                             f"({high:g}): change them under Advanced.")
        options = {**self.sampler.options(), **self.augment.options()}
        # Unknown or unusable models (and chains) are refused here; trained models fix
        # the z-factor (a chain's is the whole job's).
        factors = self._lateral_factors()
        models, geometries = self.chain.plan(self.model.value, int(self.z_factor.value),
                                             source["spacing"], options.get("diffusion_samples"),
                                             factors)
        geometry = chain_geometry(geometries)
        return {
            "layer": layer, "source": source, "model": models,
            "z_factor": geometry.z_factor, "geometry": geometry, "restorer_options": options,
            "factors": {} if factors is None else {"factors": factors},
            "restore_kwargs": {
                "block_shape": block_shape, "percentiles": (low, high),
                "output_dtype": self.output_dtype.value, "device": self.device.value,
                "precision": self.precision.value,
            },
        }

    # ------------------------------------------------------------ actions
    def _checked_form(self):
        """Return the validated form, or None after telling the user what blocks a run."""
        busy = self._busy_message()
        if busy:
            self._notify_error(busy)
            return None
        try:
            return self._form()
        except ValueError as exc:  # _FormError and engine checks alike
            self._notify_error(str(exc))
            return None

    def _on_run(self, _=None):
        """Validate the form on the main thread, then restore in a worker."""
        form = self._checked_form()
        if form is None:
            return
        source = form["source"]
        expected = cubic_z_factor(source["spacing"])
        if form["z_factor"] != expected and form["z_factor"] > 1:
            from napari.utils.notifications import show_warning

            show_warning(
                f"z-factor {form['z_factor']} differs from the layer's anisotropy "
                f"(z/x spacing suggests {expected}); the result's voxels will not be cubic"
            )
        generator = iter_restore_job(
            source["data"], form["model"], form["z_factor"],
            restorer_options=form["restorer_options"], spacing=source["spacing"],
            origin=source["origin"], **form["factors"], **form["restore_kwargs"],
        )
        self._source = source
        self._start(generator, "restore")

    def _view_region(self, layer, halo):
        """(keep, read) regions of ``layer`` for the current 2D view."""
        viewer = self.viewer
        if viewer.dims.ndisplay != 2:
            raise _FormError("Preview works in the 2D view: switch the viewer to 2D "
                             "(the square/cube button, bottom left) or press Restore.")
        displayed = list(viewer.dims.displayed)
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        center = np.asarray(camera.center, dtype=float)[-2:]
        size = np.asarray(viewer.canvas.viewbox_size(viewer.layers), dtype=float)
        half = size / max(float(camera.zoom), 1e-12) / 2
        point = np.asarray(viewer.dims.point, dtype=float)
        corners = []
        for sy in (-1, 1):
            for sx in (-1, 1):
                world = point.copy()
                world[displayed[0]] = center[0] + sy * half[0]
                world[displayed[1]] = center[1] + sx * half[1]
                corners.append(np.asarray(layer.world_to_data(world), dtype=float))
        corners = np.array(corners)
        # Layer axes that map to displayed world axes vary across the corners.
        offset = viewer.dims.ndim - layer.ndim
        sliced = [axis + offset not in displayed for axis in range(layer.ndim)]
        shape = layer_input(layer)["data"].shape
        keep = visible_region(shape, corners.min(0), corners.max(0), sliced)
        if keep is None:
            raise _FormError(f"'{layer.name}' is not in view: pan/zoom onto it or move the "
                             "slider into its range, then press Preview again.")
        return keep, expand_region(keep, halo, shape)

    def _on_preview(self, _=None):
        """Restore what the 2D view shows into a '... preview' layer."""
        form = self._checked_form()
        if form is None:
            return
        try:
            keep, read = self._view_region(form["layer"], form["geometry"].halo)
        except _FormError as exc:
            self._notify_error(str(exc))
            return
        source = form["source"]
        generator = iter_preview(
            source["data"], form["model"], form["z_factor"], keep=keep, read=read,
            restorer_options=form["restorer_options"], spacing=source["spacing"],
            origin=source["origin"], **form["factors"], **form["restore_kwargs"],
        )
        self._source = source
        self._start(generator, "preview")

    def _start(self, generator, job: str):
        self._job = job
        self._cancelled = False
        self._started = time.monotonic()
        self.actions.start(job, self._source["name"])
        if NO_THREADS:
            from ..engine.predict import drain

            try:
                self._on_returned(drain(tap(generator, self._on_yielded)))
            except Exception as exc:  # same path as the worker's errored signal
                self._on_errored(exc)
            self._on_finished()
            return
        from napari.qt.threading import create_worker

        # _ignore_errors: failures become notifications in _on_errored, not re-raised.
        self.worker = create_worker(
            lambda: (yield from reporting_errors(generator)), _start_thread=False,
            _ignore_errors=True,
        )
        self.worker.yielded.connect(self._on_yielded)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _on_cancel(self, _=None):
        if self.worker is not None:
            self.status.value = "cancelling after the current block..."
            # A result already on its way (the last block finished just before) is dropped.
            self._cancelled = True
            self.worker.quit()

    def _stop_worker(self):
        """Ask a running worker to stop at its next yield (panel or viewer closing)."""
        if self.worker is not None:
            self.worker.quit()

    def _on_destroyed(self, _obj=None):
        self._closed = True
        self._stop_worker()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self._refresh_layers)

    # ------------------------------------------------------------ worker signals
    def _on_yielded(self, record):
        # Updating a napari bar processes events, which may run _on_finished: the
        # section then closes the bars once the update is over.
        self.actions.update_bars(record)
        if self._closed or self._job is None:  # closed, or finished meanwhile
            return
        self.actions.show(record, self._job)

    def _on_returned(self, result):
        if self._closed:
            return
        if self._cancelled:
            self._on_aborted()
            return
        if self._job == "preview":
            self._show_preview(result)
            return
        from napari.layers import Layer

        source = self._source
        names = []
        for data, kwargs, layer_type in result_layers(
                result, source["name"], source["metadata"], units=source["units"],
                axis_labels=source["axis_labels"]):
            names.append(self.viewer.add_layer(Layer.create(data, kwargs, layer_type)).name)
        shape = "x".join(map(str, result.data.shape))
        self.status.value = (f"done in {self._elapsed():.1f} s: added '{names[0]}' ({shape})"
                             + (f" and {len(names) - 1} more" if len(names) > 1 else ""))

    def _show_preview(self, result):
        from napari.layers import Layer

        source = self._source
        data, kwargs, layer_type = result_layers(
            result, source["name"], source["metadata"], units=source["units"],
            axis_labels=source["axis_labels"])[0]
        name = result_name(source["name"], result_label(result.settings),
                           result_factors(result)) + " preview"
        kwargs["name"] = name
        existing = next((x for x in self.viewer.layers
                         if x.name == name and x.metadata.get("volsr", {}).get("preview")), None)
        if existing is None:
            self.viewer.add_layer(Layer.create(data, kwargs, layer_type))
        else:  # only a layer this panel made is updated
            existing.data = data
            existing.scale = kwargs["scale"]
            existing.translate = kwargs["translate"]
            existing.metadata = kwargs["metadata"]
            existing.contrast_limits = kwargs["contrast_limits"]
        region = region_text(result.settings["preview_region"], source["data"].shape)
        self.status.value = f"preview of {region} in '{name}'; press Restore for all"

    def _elapsed(self) -> float:
        return time.monotonic() - self._started if self._started is not None else 0.0

    def _on_errored(self, exc):
        text = str(exc)
        if isinstance(exc, ValueError):  # an engine refusal: its sentence, as every door says it
            self._notify_error(text)
            return
        hint = ""
        if isinstance(exc, MemoryError) or "out of memory" in text.lower():
            hint = " Set smaller blocks under Advanced (e.g. 8,64,64) or choose device cpu."
        elif "cuda" in text.lower() or "mps" in text.lower():
            hint = " Try device cpu under Advanced."
        job = "Preview" if self._job == "preview" else "Restoration"
        self._notify_error(f"{job} failed: {text}.{hint}".replace("..", "."))

    def _on_aborted(self):
        if not self._closed:
            self.status.value = "cancelled: nothing was added"

    def _on_finished(self):
        self.worker = None
        self._job = None
        self.actions.finish()
        if not self._closed:
            self.actions.ready()
