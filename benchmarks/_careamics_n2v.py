"""CAREamics Noise2Void on one noisy volume for a wall-clock budget (for denoise_matrix.py).

Runs in an interpreter that has CAREamics, usually its own virtual environment:
careamics 0.3.5 pins ``torchvision<=0.26`` (hence torch <= 2.11), which cannot sit beside
this project's torch, so::

    python3 -m venv /work/benchvenv && /work/benchvenv/bin/pip install careamics==0.3.5
    export VOLSR_CAREAMICS_PYTHON=/work/benchvenv/bin/python

(about 5 GB: pip picks torch 2.11.0 and torchvision 0.26.0 from PyPI, CUDA builds, which
run on the CPU too. A CPU-only torch 2.13 with torchvision 0.28 does not work: PyPI's
torchvision 0.28 links CUDA torch libraries, and careamics imports torchvision.)

This script imports nothing from napari_volsr. The configuration is CAREamics' own
``create_n2v_config`` (UNet, N2V pixel manipulation, its augmentations, normalisation
and optimiser defaults) with the axes, patch and batch given here: ``ZYX`` trains a 3D
N2V on the volume, ``SYX`` a 2D one on its z slices (CAREamics' usual way with stacks);
the number of validation patches is cut to about 10% of the volume's patches; the epoch
budget is made unreachable and Lightning's ``max_time`` stops training at the budget.
The final weights are saved and used for the tiled prediction (CAREamics' default for
N2V is its last epoch-end checkpoint, which can be older than the stop).

Writes the restored volume (float32 npy, the input's units) and a JSON report: steps,
epochs, train and predict wall / CPU seconds (this process and reaped children, such as
data-loader workers), patch, batch, tile.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def fit_size(wanted: int, available: int) -> int:
    """The largest power of two <= both (at least 8): CAREamics' patches are powers of two."""
    size = 8
    while size * 2 <= min(wanted, available):
        size *= 2
    return size


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="noisy ZYX volume, .npy")
    parser.add_argument("--output", type=Path, required=True, help="restored volume, .npy")
    parser.add_argument("--report", type=Path, required=True, help="JSON report")
    parser.add_argument("--minutes", type=float, required=True, help="training budget")
    parser.add_argument("--axes", choices=("ZYX", "SYX"), default="ZYX",
                        help="ZYX: 3D N2V; SYX: 2D N2V on the z slices as samples")
    parser.add_argument("--patch", default="32,64,64",
                        help="N2V patch, Z,Y,X (3D) or Y,X (2D); rounded down to powers of 2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--work-dir", type=Path, required=True)
    return parser.parse_args(argv)


def plan(shape: tuple[int, ...], wanted: list[int]) -> tuple[list[int], list[int], int]:
    """(patch, tile, patches in the volume) for the spatial ``shape`` (ZYX or YX)."""
    if len(wanted) != len(shape):
        raise SystemExit(f"--patch needs {len(shape)} values for these axes, got {wanted}")
    patch = [fit_size(p, n) for p, n in zip(wanted, shape, strict=True)]
    patch[-2] = patch[-1] = min(patch[-2:])  # CAREamics wants square YX patches
    # Tiles twice the patch (powers of two, so the UNet's pooling divides them).
    tile = [fit_size(2 * p, n) for p, n in zip(patch, shape, strict=True)]
    tile[-2] = tile[-1] = min(tile[-2:])
    return patch, tile, int(np.prod([n // p for n, p in zip(shape, patch, strict=True)]))


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch
    from careamics import CAREamist
    from careamics.config import create_n2v_config

    noisy = np.load(args.input).astype(np.float32)
    spatial = noisy.shape if args.axes == "ZYX" else noisy.shape[1:]
    patch, tile, per_sample = plan(spatial, [int(p) for p in args.patch.split(",")])
    # CAREamics sets aside 8 grid patches for validation by default; one volume half
    # holds few 3D ones (8 for the EM half at 32x64x64), so keep about 10% instead.
    n_patches = per_sample * (1 if args.axes == "ZYX" else noisy.shape[0])
    n_val = max(1, min(8, n_patches // 10))
    config = create_n2v_config(
        experiment_name="volsr_bench_n2v", data_type="array", axes=args.axes,
        patch_size=patch, batch_size=args.batch, num_epochs=1_000_000, n_val_patches=n_val,
    )
    config.training_config.trainer_params["max_time"] = {"seconds": args.minutes * 60}
    careamist = CAREamist(config, work_dir=args.work_dir, enable_progress_bar=False)
    start, cpu = time.perf_counter(), cpu_seconds()
    careamist.train(train_data=noisy)
    train_s, train_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    final = args.work_dir / "final.ckpt"
    careamist.trainer.save_checkpoint(final)
    start, cpu = time.perf_counter(), cpu_seconds()
    predictions, _ = careamist.predict(noisy, tile_size=tile,
                                       tile_overlap=[t // 4 for t in tile], checkpoint=final)
    predict_s, predict_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    restored = np.asarray(predictions[0], dtype=np.float32).reshape(noisy.shape)
    np.save(args.output, restored)
    args.report.write_text(json.dumps({
        "steps": int(careamist.trainer.global_step),
        "epochs": int(careamist.trainer.current_epoch),
        "train_s": train_s, "train_cpu_s": train_cpu,
        "predict_s": predict_s, "predict_cpu_s": predict_cpu, "axes": args.axes,
        "patch": "x".join(map(str, patch)), "batch": args.batch, "n_val_patches": n_val,
        "tile": "x".join(map(str, tile)), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
