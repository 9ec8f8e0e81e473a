"""CSBDeep's isotropic CARE on one anisotropic volume for a wall-clock budget (for iso_matrix.py).

Runs in an interpreter that has ``csbdeep`` and TensorFlow, which never enter this
project's environment: a separate virtual environment, for example::

    python3 -m venv /work/csbdeepvenv
    /work/csbdeepvenv/bin/pip install csbdeep tensorflow-cpu
    export VOLSR_CSBDEEP_PYTHON=/work/csbdeepvenv/bin/python

(on Python 3.11 pip picks tensorflow-cpu 2.21 with Keras 3 and csbdeep 0.8.2, about
1 GB). This script imports nothing from napari_volsr.

The recipe is CSBDeep's isotropic reconstruction example (examples/isotropic_reconstruction,
notebooks 1-3), with the settings of slab z-subsampling: the anisotropic volume is both
source and target of ``RawData.from_arrays`` (axes ZYX); ``anisotropic_distortions``
blurs the lateral planes along X with a box of ``factor`` pixels (the slab average, the
way the matrix made the input) and subsamples X by ``factor``; ``create_patches`` draws
1 x P x P patches (the notebook: 512 of 128 x 128; here P shrinks to fit small planes),
the Z axis is dropped, 10% of the patches validate; ``Config`` takes CSBDeep's defaults
(U-Net depth 2, MAE, Adam 4e-4, batch 16, 400 steps per epoch, learning rate halved on
plateaus) except TensorBoard, which is off; ``IsotropicCARE.train`` runs until a Keras
callback sees the budget spent (the partial epoch is still validated, and CSBDeep loads
its best-validation weights at the end, as it always does).

Prediction is ``IsotropicCARE.predict`` (XZ and YZ planes, geometric mean), with one
change so the output lands on the matrix's slab grid (DESIGN 3: input slice i covers
output slices i*f .. i*f+f-1): CSBDeep's own z upsampling is ``scipy.ndimage.zoom`` with
aligned corners, which puts output slice j at input position j (n-1)/(nf-1) and so
shifts and stretches the result against the truth by up to (f-1)/2 slices. ``--grid
slab`` (default) does the same linear upsampling on the slab grid (``zoom(...,
order=1, grid_mode=True)``) and calls ``predict`` with factor 1; ``--grid csbdeep``
keeps CSBDeep's own.

Writes the restored volume (float32, the input's units; ``.npy``, or ``.tif`` with
tifffile) and a JSON report: steps, epochs, train and predict wall / CPU seconds, patch,
number of patches, versions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def fit_patch(wanted: int, lateral: int) -> int:
    """The patch side: ``wanted``, else the largest multiple of 16 in the plane (>= 16).

    CSBDeep's U-Net (depth 2) needs sides divisible by 4; the notebook advises 8 or a
    power of two. ``anisotropic_distortions`` may crop X to a multiple of the factor.
    """
    side = min(wanted, lateral // 16 * 16)
    if side < 16:
        raise SystemExit(f"lateral planes of {lateral} px hold no 16 x 16 patch")
    return side


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="anisotropic ZYX volume, .npy")
    parser.add_argument("--output", type=Path, required=True, help="restored volume, .npy or .tif")
    parser.add_argument("--report", type=Path, required=True, help="JSON report")
    parser.add_argument("--factor", type=int, required=True, help="z subsampling factor")
    parser.add_argument("--minutes", type=float, required=True, help="training budget")
    parser.add_argument("--patch", type=int, default=128, help="lateral patch side (notebook: 128)")
    parser.add_argument("--patches", type=int, default=512,
                        help="patches drawn from the volume (notebook: 512)")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="default: CSBDeep's (400)")
    parser.add_argument("--grid", choices=("slab", "csbdeep"), default="slab",
                        help="z upsampling grid of the prediction (see above)")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def make_patches(volume: np.ndarray, factor: int, side: int, n_patches: int):
    """(X, Y, axes) of 2D training pairs: lateral planes degraded along X as z was."""
    from csbdeep.data import RawData, create_patches
    from csbdeep.data.transform import anisotropic_distortions
    from csbdeep.utils import axes_dict

    raw = RawData.from_arrays([volume], [volume], axes="ZYX")
    # A box of f pixels along X, then every f-th pixel: the slab mean of f slices.
    box = np.ones((1, factor), np.float32) / factor
    transform = anisotropic_distortions(subsample=factor, psf=box, psf_axes="YX")
    x, y, axes = create_patches(raw, patch_size=(1, side, side), n_patches_per_image=n_patches,
                                transforms=[transform], verbose=False)
    z = axes_dict(axes)["Z"]
    return np.take(x, 0, axis=z), np.take(y, 0, axis=z), axes.replace("Z", "")


def budget_callback(seconds: float):
    """A Keras callback that stops ``fit`` once ``seconds`` of training have passed."""
    import keras

    class Budget(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.start = None
            self.steps = 0

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if time.perf_counter() - self.start >= seconds:
                self.model.stop_training = True

    return Budget()


def train(volume: np.ndarray, args):
    """Train an IsotropicCARE model; returns (model, budget callback, history, patch info)."""
    from csbdeep.io import load_training_data, save_training_data
    from csbdeep.models import Config, IsotropicCARE
    from csbdeep.utils import axes_dict

    side = fit_patch(args.patch, min(volume.shape[1:]))
    x, y, axes = make_patches(volume, args.factor, side, args.patches)
    data = args.work_dir / "training_data.npz"
    save_training_data(data, x, y, axes)
    (x, y), (x_val, y_val), axes = load_training_data(data, validation_split=0.1, verbose=False)
    channel = axes_dict(axes)["C"]
    options = {"train_tensorboard": False}
    if args.steps_per_epoch:
        options["train_steps_per_epoch"] = args.steps_per_epoch
    config = Config(axes, x.shape[channel], y.shape[channel], **options)
    model = IsotropicCARE(config, "isotropic_care", basedir=str(args.work_dir / "models"))
    budget = budget_callback(args.minutes * 60)
    model.prepare_for_training()
    model.callbacks.append(budget)
    # The epoch count is out of reach: the budget ends training.
    history = model.train(x, y, validation_data=(x_val, y_val), epochs=100_000)
    info = {"patch": f"{side}x{side}", "patches": int(len(x) + len(x_val)),
            "n_val": int(len(x_val)), "batch": config.train_batch_size,
            "steps_per_epoch": config.train_steps_per_epoch}
    return model, budget, history, info


def predict(model, volume: np.ndarray, factor: int, grid: str) -> np.ndarray:
    from scipy.ndimage import zoom

    if grid == "csbdeep":
        return model.predict(volume, "ZYX", factor)
    # Linear along z on the slab grid (align_corners=False), as CSBDeep's order-1 zoom.
    upsampled = zoom(volume, (factor, 1, 1), order=1, mode="nearest", grid_mode=True)
    return model.predict(upsampled.astype(np.float32), "ZYX", 1)


def write(path: Path, array: np.ndarray) -> None:
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, array)
    else:
        np.save(path, array)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import csbdeep
    import tensorflow as tf

    # CSBDeep draws patches and batches from numpy's global generator.
    np.random.seed(args.seed)  # noqa: NPY002
    tf.random.set_seed(args.seed)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    volume = np.load(args.input).astype(np.float32)
    start, cpu = time.perf_counter(), cpu_seconds()
    model, budget, history, info = train(volume, args)
    train_s, train_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    start, cpu = time.perf_counter(), cpu_seconds()
    restored = np.asarray(predict(model, volume, args.factor, args.grid), np.float32)
    predict_s, predict_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    expected = (volume.shape[0] * args.factor, *volume.shape[1:])
    if restored.shape != expected:
        raise SystemExit(f"prediction has shape {restored.shape}, expected {expected}")
    write(args.output, restored)
    val_loss = history.history.get("val_loss") or [None]
    args.report.write_text(json.dumps({
        "steps": budget.steps, "epochs": len(history.history.get("loss", [])),
        "train_s": train_s, "train_cpu_s": train_cpu, "predict_s": predict_s,
        "predict_cpu_s": predict_cpu, "grid": args.grid, "final_val_loss": val_loss[-1],
        "csbdeep": csbdeep.__version__, "tensorflow": tf.__version__, **info,
    }))


if __name__ == "__main__":
    main()
