"""An optional TensorBoard event log of a training run, beside its ``history.csv``.

The log holds what the history records (losses, learning rate, time and validation
scores, under the history's own column names) plus images of the validation and preview
patches. It lives in ``<model folder>/tensorboard`` from the first step on, so
``tensorboard --logdir <library>`` shows runs while they train; saving the model carries
it into the saved folder, and a resumed run appends to it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

TB_FOLDER = "tensorboard"
INSTALL_HINT = "pip install tensorboard"
MISSING_MESSAGE = ("a TensorBoard log needs the tensorboard package, which is not installed: "
                   f"{INSTALL_HINT} (or napari-volsr[tensorboard]), or train without it")
# Events reach the file at least this often, so a live TensorBoard keeps up with the run.
FLUSH_SECONDS = 10
# Display range of preview images in their own units (robust to a few wild voxels).
PREVIEW_PERCENTILES = (0.5, 99.5)


def tensorboard_available() -> bool:
    """Whether the tensorboard package is installed (found, not imported: cheap)."""
    return importlib.util.find_spec("tensorboard") is not None


def require_tensorboard():
    """``torch.utils.tensorboard.SummaryWriter``; a ValueError with the fix when it is missing."""
    from .training_config import TrainingRequestError

    if not tensorboard_available():
        raise TrainingRequestError(MISSING_MESSAGE)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # installed but broken (e.g. an incompatible protobuf)
        raise TrainingRequestError(f"a TensorBoard log needs a working tensorboard package "
                                   f"({exc}); reinstall it ({INSTALL_HINT}) or train "
                                   "without it") from None
    return SummaryWriter


def log_folder(model_folder) -> Path:
    """Where a model's TensorBoard log goes: ``<model folder>/tensorboard``."""
    return Path(model_folder) / TB_FOLDER


def log_note(model_folder) -> str:
    """A sentence for people: where the log is and how to open it."""
    folder = log_folder(model_folder)
    return f"TensorBoard log in {folder} (open it with: tensorboard --logdir \"{folder}\")"


def center_slice(volume, z_factor: int = 1) -> np.ndarray:
    """A 2D image of a ZYX (or YX) array: its central z slice (a YX array as it is).

    ``z_factor`` > 1 marks an array on the output grid: it shows the slice the input's
    central slice became (slab convention), so input and output images match.
    """
    a = np.asarray(volume, dtype=np.float32)
    if a.ndim == 3:
        depth = a.shape[0] // z_factor
        a = a[(depth // 2) * z_factor + z_factor // 2]
    return a


def display(image: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """``image`` mapped from ``low..high`` to 0..1 and clipped; unknown voxels black."""
    span = high - low if high > low else 1.0
    return np.clip(np.nan_to_num((image - low) / span, nan=0.0), 0.0, 1.0)


class TrainingLog:
    """The TensorBoard writer of one training run (rank 0 only).

    Parameters
    ----------
    model_folder
        The model folder; the log goes into its ``tensorboard`` subfolder.
    start_step
        Steps already trained (resume). A new run (0) replaces an earlier log of this
        name; a resumed run appends and drops events logged after its checkpoint.
    history
        The checkpoint's history rows: written first when no earlier log exists, so a
        run that turns the log on when resumed still shows its whole history.
    about
        A text shown on TensorBoard's Text tab (what the run is, what validation compares).
    """

    def __init__(self, model_folder, *, start_step: int = 0, history=(), about: str = ""):
        summary_writer = require_tensorboard()
        self.model_folder = Path(model_folder)
        self.folder = log_folder(model_folder)
        if start_step == 0:
            shutil.rmtree(self.folder, ignore_errors=True)
        earlier = self.folder.is_dir()
        # purge_step: TensorBoard hides the events an interrupted run logged after its
        # last checkpoint, which the resumed run now logs again.
        self.writer = summary_writer(str(self.folder), flush_secs=FLUSH_SECONDS,
                                     purge_step=start_step + 1 if start_step else None)
        if not earlier:
            for row in history:
                self.scalars(row)
        if about:
            self.writer.add_text("run", about, start_step)

    def scalars(self, row: dict) -> None:
        """One history row: every number but ``step`` under its column name."""
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, float(value), step)

    def images(self, step: int, example=None, prediction=None, z_factor: int = 1,
               preview_input=None, preview=None) -> None:
        """Central slices of a validation patch and of the preview, at ``step``.

        ``example`` is the first ``(input, target)`` validation pair and ``prediction``
        the network's output for it (normalised units: 0..1 is the percentile range);
        ``preview_input`` and ``preview`` are the preview crop and its restoration, in
        the data's units, shown with the crop's own display range.
        """
        if example is not None and prediction is not None:
            source, target = (np.asarray(a) for a in example)
            # The middle channel is the plane restored when neighbours are input channels.
            self._image("validation/input", center_slice(source[len(source) // 2]), step)
            self._image("validation/output", center_slice(prediction[0], z_factor), step)
            if np.isfinite(target).all():  # blind-spot targets know only masked voxels
                self._image("validation/target", center_slice(target[0], z_factor), step)
        if preview_input is not None and preview is not None:
            crop = center_slice(preview_input)
            low, high = np.nanpercentile(crop, PREVIEW_PERCENTILES)
            self._image("preview/input", display(crop, low, high), step, raw=True)
            self._image("preview/output", display(center_slice(preview, z_factor), low, high),
                        step, raw=True)

    def _image(self, tag: str, image: np.ndarray, step: int, raw: bool = False) -> None:
        self.writer.add_image(tag, image if raw else display(image), step, dataformats="HW")

    def close(self, checkpoints: Path | None = None) -> None:
        """Flush and close; a new run that failed before any save leaves nothing behind.

        ``checkpoints`` is the run's checkpoint folder: without it nor a saved model, the
        model folder this log created would only block the name, so it goes.
        """
        if self.writer is None:
            return
        self.writer.close()
        self.writer = None
        saved = (self.model_folder / "config.json").is_file()
        if (checkpoints is not None and not saved and not Path(checkpoints).exists()
                and self.model_folder.is_dir()):
            if [p.name for p in self.model_folder.iterdir()] == [TB_FOLDER]:
                shutil.rmtree(self.model_folder, ignore_errors=True)


def about_text(config, validation_label: str) -> str:
    """The run's description for TensorBoard's Text tab (markdown)."""
    model = config.model
    from .geometry import describe_factors

    lines = [f"**{model.name}**: {model.family} {model.task} {describe_factors(model.factors)}, "
             f"{model.spatial_dims}D, {config.source} data"]
    if validation_label:
        lines.append(f"val_psnr, val_ssim: validation {validation_label}")
    settings = config.model_dump(mode="json", exclude={"model"})
    lines.append("settings: `" + json.dumps(settings, separators=(", ", ": ")) + "`")
    return "\n\n".join(lines)
