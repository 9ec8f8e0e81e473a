"""The Train panel: pick data and a model family, train in a worker, watch it learn."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

from magicgui.widgets import Container

from ..engine.training_config import default_family, default_spatial_dims

from ._widgets import ShowWatcher, collapsible, scroll_form
from ._workers import NO_THREADS, tap
from .train_data import DENOISE_SOURCES, SIMULATING_SOURCES, BlindSpotSection, DataSection
from .train_defaults import fitted_patch, layer_shape
from .train_preview import PREVIEW_KEY, PreviewLayer, preview_crop
from .train_run import (
    Control,
    DataRefused,
    TrainingRun,
    baseline_name,
    checkpoint_dims,
    saved_text,
    start_worker,
    status_text,
    training_run,
)
from .train_sections import (
    AdvancedSection,
    BudgetSection,
    DegradationSection,
    ModelSection,
    NameSection,
    RunSection,
    align_labels,
)

if TYPE_CHECKING:
    import napari

# Status and progress bar refresh at most this often (plots throttle themselves).
STATUS_MS = 200


class TrainWidget(Container):
    """Train a restoration, denoising or z-upsampling model on image layers.

    The form is one container per section (``model_section``, ``data_section``,
    ``budget_section``, ``degradation``, ``blind_spot``, ``advanced``, ``name_section``),
    in a scroll area; the run section (buttons, progress, status) and the plot stay in
    view under it. The fields are also attributes of the panel (``family``, ``raw``,
    ``steps``...).
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        from qtpy.QtCore import QTimer

        super().__init__(labels=False)
        self.viewer = viewer
        self.worker = None
        self.run_info: TrainingRun | None = None
        self.last_model = None
        self._control = Control()
        self._updating = False
        self._touched: set[str] = set()
        self._preview = PreviewLayer(viewer)
        self._pending = None
        self._note = ""
        self._build_form()

        self._status_timer = QTimer(self.native)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(STATUS_MS)
        self._status_timer.timeout.connect(self._show_pending)
        self._connect()
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        # Closing the panel or the viewer stops training; the engine then saves the model.
        self.native.destroyed.connect(self._control.close)
        # Shown: align the labels in napari's font; docked off: take the preview away.
        self._watcher = ShowWatcher(self._align, self._preview.remove, self.native)
        self.native.installEventFilter(self._watcher)
        self._refresh_layers()
        self._on_form_changed()
        self._on_budget_changed()

    def _build_form(self):
        """The scrolled form (sections, collapsible boxes), then the run section and plot."""
        from .loss_plot import LossPlot

        self.model_section = ModelSection()
        self.data_section = DataSection(self._layer_choices)
        self.budget_section = BudgetSection()
        self.degradation = DegradationSection()
        self.blind_spot = BlindSpotSection()
        self.advanced = AdvancedSection()
        self.name_section = NameSection()
        self.run_section = RunSection()
        main = [self.model_section, self.data_section, self.budget_section, self.name_section]
        for section in (*main, self.degradation, self.blind_spot, self.advanced,
                        self.run_section):
            for name in section.FIELDS:  # the panel's fields keep their names
                setattr(self, name, getattr(section, name))
        self.form = Container(labels=False, widgets=main)
        self.form.margins = (0, 0, 0, 0)
        self.extend([self.form, self.run_section])
        # One label column for the form, and one inside each collapsible box (indented).
        columns = [[*main, self.run_section], [self.degradation], [self.blind_spot]]
        aligners = [align_labels(column, self.status.native) for column in columns]
        self._align = lambda: [align() for align in aligners]
        layout = self.form.native.layout()
        self.degradation_box = collapsible("Degradation (simulated inputs)",
                                           self.degradation.native)
        self.blind_spot_box = collapsible("Blind spot (Noise2Void)", self.blind_spot.native)
        self.advanced_box = collapsible("Advanced training settings", self.advanced.native)
        for box in (self.degradation_box, self.blind_spot_box, self.advanced_box):
            layout.insertWidget(layout.indexOf(self.name_section.native), box)
        self.scroll = scroll_form(self.native.layout(), self.form.native)
        self.plot = LossPlot()
        self.native.layout().addWidget(self.plot)

    def _connect(self):
        data = (self.source, self.raw, self.target, self.volume, self.acquisitions)
        # Marked as edited before the form reacts, which keeps edited values.
        self.family.changed.connect(self._edited("family"))
        self.dims.changed.connect(self._edited("dims"))
        self.context_planes.changed.connect(self._edited("context"))
        for field in (self.family, self.preset, *data, self.dims, self.val_fraction):
            field.changed.connect(self._on_form_changed)
        for picker in data:
            picker.changed.connect(self._edited("data"))
        for budget in (self.steps, self.minutes):
            budget.changed.connect(self._on_budget_changed)
        self.live_preview.changed.connect(self._on_live_preview)
        self.z_factor.changed.connect(self._on_factor_edited("z"))
        self.lateral_factor.changed.connect(self._on_factor_edited("lateral"))
        for box in (self.patch_z, self.patch_y, self.patch_x):
            box.changed.connect(self._edited("patch"))
        self.model_name.changed.connect(self._on_name_edited)
        self.start_button.changed.connect(self._on_start)
        self.stop_button.changed.connect(self._on_stop)
        self.resume_button.changed.connect(self._on_resume)

    # ------------------------------------------------------------ form state
    @contextmanager
    def _quiet(self):
        """Programmatic form changes: do not mark fields as edited by the user."""
        before, self._updating = self._updating, True
        try:
            yield
        finally:
            self._updating = before

    def _layer_choices(self, _widget=None):
        from napari.layers import Image

        return [layer for layer in self.viewer.layers
                if isinstance(layer, Image) and PREVIEW_KEY not in layer.metadata]

    def _refresh_layers(self, _event=None):
        if self._closed:
            return
        with self._quiet():
            self.data_section.refresh(self.viewer.layers.selection,
                                      choose="data" not in self._touched)
        self._on_form_changed()

    def _on_form_changed(self, _=None):
        if self._closed:
            return
        source = self.source.value
        self.data_section.show_source()
        self.degradation_box.setVisible(source in SIMULATING_SOURCES)
        self.blind_spot_box.setVisible(source == "noise2void")
        self._touched -= self.data_section.fixed_factors()  # the source's own, not edits
        with self._quiet():
            if "z" not in self._touched:
                self.z_factor.value = self.data_section.default_z()
            self.data_section.follow_lateral("lateral" not in self._touched)
            upsampling = self.data_section.upsampling()  # the engine's defaults follow it
            if "family" not in self._touched:  # the engine's default for the task
                self.family.value = default_family(source, upsampling)
            if source == "isotropic" or self.z_factor.value > 1 or "dims" not in self._touched:
                self.dims.value = default_spatial_dims(source, upsampling)
        self.z_factor.enabled = source not in DENOISE_SOURCES
        self.dims.enabled = source != "isotropic" and self.z_factor.value == 1
        self.budget_section.show_dims(self.dims.value)
        with self._quiet():
            self.data_section.show_context(self.family.value,
                                           not self._touched & {"context", "resumed context"})
        if "patch" not in self._touched:
            self._show_fitted_patch()
        if "name" not in self._touched:
            self._suggest_name()

    def _show_fitted_patch(self):
        """The patch the engine will fit to the source layer (used when left unedited)."""
        layer = self.data_section.source_layer
        fit = fitted_patch(self.source.value, self.dims.value, self.data_section.upsampling(),
                           self.family.value, self.preset.value,
                           layer_shape(layer) if layer is not None else None,
                           self.val_fraction.value)
        with self._quiet():
            self.budget_section.show_patch(fit.patch_shape)

    def _on_budget_changed(self, _value=None):
        if self.worker is None:
            self.run_section.show_budget(self.budget_section.budget_text())

    def _on_live_preview(self, on):
        if not on:
            self._preview.remove()

    def _suggest_name(self):
        from ..engine.models import library_dir
        from ..engine.training_request import free_model_name

        layer = (self.target.value if self.source.value == "paired"
                 else self.data_section.source_layer)
        with self._quiet():
            self.model_name.value = free_model_name(library_dir(), getattr(layer, "name", None),
                                                    self.family.value)

    def _edited(self, key: str):
        """A slot marking ``key`` as the user's: the form then keeps its value."""
        def mark(_value):
            if not self._updating:
                self._touched.add(key)
        return mark

    def _on_factor_edited(self, key: str):
        """A slot for a factor box: the user's value stays, and the form follows it."""
        def edited(_value):
            if not self._updating:
                self._touched.add(key)
                self._on_form_changed()
        return edited

    def _on_name_edited(self, _name):
        if self._updating:
            return
        self._touched.add("name")
        if self.worker is None:
            self.status.value = self.name_section.name_hint()

    # ------------------------------------------------------------ reading the form
    def _prepare(self, resume: bool) -> TrainingRun:
        """Read the form into one engine request on the main thread.

        ``resolve_training`` checks it and raises TrainingRequestError (a ValueError)
        with the sentence to show; on Resume the checkpoint decides the model settings,
        and a family other than its own is refused.
        """
        from ..engine.training_request import resolve_training

        request = resolve_training(
            source=self.source.value, **self.data_section.inputs(),
            # On Resume a family the user chose is checked; the automatic one is not.
            family=self.family.value if not resume or "family" in self._touched else None,
            preset=None if resume else self.preset.value,
            **self.data_section.factor_keywords(resume),
            spatial_dims=None if resume else self.dims.value,
            # Sent where it applies; on Resume only if chosen (the checkpoint has its own).
            context_planes=(self.data_section.context_value(self.family.value)
                            if not resume or "context" in self._touched else None),
            name=self.model_name.value, resume=resume, overwrite=self.overwrite.value,
            **self._overrides(checkpoint_dims(self.model_name.value, self.dims.value) if resume
                              else self.dims.value),
        )
        # After the engine's checks: a resume without a checkpoint says so first.
        if self.source.value == "paired" and self.raw.value is not None \
                and self.raw.value is self.target.value:
            raise ValueError("raw and target are the same layer: choose the degraded volume as "
                             "raw and the good one as target, or use 'target only'")
        if resume:
            self._show_model_settings(request.config.model)
        if "patch" not in self._touched:  # the boxes show the patch the engine fitted
            with self._quiet():
                self.budget_section.show_patch(request.config.patch_shape)
        run = TrainingRun(request)
        role = next(iter(self.data_section.pickers))
        run.preview_input, run.preview_kwargs = preview_crop(
            request.config, request.inputs[role][0], self.data_section.source_layer.colormap)
        return run

    def _overrides(self, dims: int) -> dict:
        """The form's training settings as TrainingConfig fields (0 budgets: no limit)."""
        if not self.steps.value and not self.minutes.value:
            raise ValueError("set at least one budget: steps or minutes (0 means no limit)")
        overrides = dict(
            # Left unedited, the engine fits the patch to the volumes (as in every door).
            patch_shape=(self.budget_section.patch_shape(dims) if "patch" in self._touched
                         else None),
            batch_size=self.batch_size.value,
            steps=self.steps.value or None,
            minutes=self.minutes.value or None,
            learning_rate=self.advanced.learning_rate_value(),
            val_fraction=self.val_fraction.value,
            foreground=self.foreground.value,
            validate_every=self.validate_every.value, tensorboard=self.tensorboard.value,
        )
        if self.source.value in SIMULATING_SOURCES:
            overrides["degradation"] = self.degradation.config()
        if self.source.value == "noise2void":
            overrides["blind_spot"] = self.blind_spot.values()
        return overrides

    def _show_model_settings(self, model):
        """On Resume the checkpoint decides the network: show its settings in the form."""
        with self._quiet():
            self.model_section.show(model)
            self.data_section.show_model(model)
        # Kept in view, but not the user's choice: resuming another model must not send it.
        self._touched.update(("z", "lateral", "resumed context"))
        self._touched.discard("context")

    # ------------------------------------------------------------ actions
    def _notify_error(self, message: str):
        from napari.utils.notifications import show_error

        self.status.value = message
        show_error(message)

    def _on_start(self, _=None):
        """Check the form on the main thread, then train in a worker."""
        self._launch(resume=False)

    def _on_resume(self, _=None):
        """Continue the named model from its last checkpoint."""
        self._launch(resume=True)

    def _launch(self, resume: bool):
        from ..engine.models import ModelError

        if self.worker is not None:
            self._notify_error(
                f"'{self.run_info.name}' is training: press Stop (the model is saved) and "
                "start again, or open a second Train panel for another run."
            )
            return
        try:
            run = self._prepare(resume)
        except (ValueError, ModelError) as exc:
            self._notify_error(str(exc))
            return
        self._start(run)

    def _start(self, run: TrainingRun):
        self.run_info = run
        self._control.stop = stop = threading.Event()
        self._pending = None
        # The name now belongs to this model (Resume uses it); new layers (its results)
        # no longer change the data the form proposes.
        self._touched.update(("name", "data"))
        request = run.request
        config = request.config
        self.plot.set_history(request.history)
        self.plot.describe(baseline_name(config.model.factors))
        # A time budget ends the run at a step nobody knows yet: the axis follows the steps.
        self.plot.set_total(None if config.minutes else config.steps)
        self._note = request.note
        self.run_section.show_progress(request.start_step, config.steps,
                                       request.history[-1].get("time", 0.0)
                                       if request.history else 0.0, config.minutes)
        self.run_section.set_running(True)
        verb = (f"resuming '{run.name}' at step {request.start_step}" if request.resume
                else f"training '{run.name}'")
        self.status.value = "\n".join(filter(None, [
            f"{verb}: preparing patches and the network...", request.note]))
        generator = training_run(request, stop=stop, preview_input=run.preview_input)
        if NO_THREADS:
            from ..engine.predict import drain

            self.worker = "main thread"
            try:
                self._on_returned(drain(tap(generator, self._on_yielded)))
            except Exception as exc:  # the same path as the worker's errored signal
                self._on_errored(exc)
            self._on_finished()
            return
        self.worker = start_worker(
            generator, aborted=self._on_aborted, yielded=self._on_yielded,
            returned=self._on_returned, errored=self._on_errored, finished=self._on_finished)

    def _on_stop(self, _=None):
        if self.worker is None:
            self.status.value = "nothing is training"
            return
        # The engine finishes this step, checkpoints and saves the model, then returns
        # it. (worker.quit() would abandon the generator without closing it.)
        self._control.stop.set()
        self.stop_button.enabled = False
        self.status.value = "stopping after this step: saving a checkpoint and the model..."

    @property
    def _closed(self) -> bool:
        return self._control.closed

    # ------------------------------------------------------------ worker signals
    def _on_yielded(self, record):
        if self._closed:
            return
        self.plot.add_record(record)
        if record.preview is not None:
            self._show_preview(record.preview)
        final = record.message.startswith(("stopped", "finished"))
        if record.message and not record.losses and not final:
            from napari.utils.notifications import show_warning

            show_warning(record.message)
        self._pending = record
        if record.validation or record.message:
            self._show_pending()
        elif not self._status_timer.isActive():
            self._status_timer.start()

    def _show_pending(self):
        record, self._pending = self._pending, None
        if record is None or self._closed:
            return
        minutes = self.run_info.request.config.minutes if self.run_info else None
        self.run_section.show_progress(record.step, record.total, record.elapsed, minutes)
        psnr = self.plot.psnr_values[-1] if self.plot.psnr_values else None
        self.status.value = "\n".join(filter(None, [
            status_text(record, psnr, minutes, self.plot.baseline, self.plot.baseline_name),
            self._note]))

    def _show_preview(self, array):
        if self.live_preview.value:
            self._preview.show(array, self.run_info.preview_kwargs)

    def _on_returned(self, model):
        if self._closed:
            return
        if model is None:
            self.status.value = "stopped before training started: nothing was saved"
            return
        from napari.utils.notifications import show_info

        from .panels import refresh_restore_panels

        self.last_model = model
        refresh_restore_panels(self.viewer)
        with self._quiet():
            self.overwrite.value = False
        detail = saved_text(model.config)
        card = model.config.training
        self.run_section.show_done(card.get("steps") or 0, 60 * (card.get("minutes") or 0))
        self.status.value = f"model '{model.config.name}' saved ({detail}); pick it in Restore"
        show_info(f"model '{model.config.name}' saved ({detail})")

    def _on_aborted(self):
        """Report the model saved when ``worker.quit()`` stopped training (napari's tasks)."""
        if self._closed or self.run_info is None:
            return
        from napari.utils.notifications import show_info

        from ..engine.models import ModelError, read_model_config
        from .panels import refresh_restore_panels

        name = self.run_info.name
        try:
            config = read_model_config(self.run_info.request.folder)
        except ModelError:
            self.status.value = f"cancelled before '{name}' was saved"
            return
        refresh_restore_panels(self.viewer)
        steps = config.training.get("steps")
        self.status.value = (f"model '{name}' saved (stopped early, {steps} steps); "
                             "pick it in Restore")
        show_info(f"model '{name}' saved (stopped early, {steps} steps)")

    def _on_errored(self, exc):
        if self._closed:
            return
        from pydantic import ValidationError

        from ..engine.config import describe_validation_error

        if isinstance(exc, DataRefused):  # the engine's sentence, as on the main thread
            self._notify_error(str(exc))
            return
        if isinstance(exc, ValidationError):
            message = describe_validation_error(exc)
        else:
            message = str(exc) or type(exc).__name__
        name = self.run_info.name if self.run_info else "the model"
        self._notify_error(f"Training '{name}' failed: {message}")

    def _on_finished(self):
        self.worker = None
        if self._closed:
            return
        self._status_timer.stop()
        self.run_section.set_running(False)
        self.plot.update()

