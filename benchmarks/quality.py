"""Restoration quality on real volumes: PSNR / SSIM of each family against baselines.

Cases (the ground truth is the real volume; its degraded copy is what the model sees):

- ``iso``: slab z-downsampling by ``--z-factor`` (mean of each group of f slices, the
  slab model of DESIGN 3). Each family trains a 2D network self-supervised on the
  anisotropic volume alone (lateral planes degraded the same way), is applied on XZ
  and YZ planes, and is compared with the original next to cubic interpolation. No
  ground truth is used in training, so the whole volume is scored.
- ``denoise``: Poisson (peak photons) + Gaussian noise. Each family trains a 3D
  network on paired noisy/clean patches from the first 75% of Y rows and is scored on
  the held-out last 25% next to the noisy input.
- ``denoise-matrix``: every denoising method (ours through the console API, a Gaussian,
  BM4D, CAREamics N2V) at the same budgets; delegated to ``denoise_matrix.py``, which
  takes its own options (``--case denoise-matrix --help``).
- ``iso-matrix``: every near-isotropic volume x z-factors 2, 4, 6, each family at its
  defaults next to spline cubic and CSBDeep's IsotropicCARE at the same budget;
  delegated to ``iso_matrix.py`` (``--case iso-matrix --help``).
- ``lateral``: lateral (y, x) super-resolution x2 and x4, every family trained on a
  clean half next to the cubic spline on the held-out half; delegated to
  ``lateral_matrix.py`` (``--case lateral --help``).

Usage::

    python benchmarks/quality.py --case iso --volume em --minutes 10 --families rcan
    python benchmarks/quality.py --case denoise --volume em --minutes 3
    python benchmarks/quality.py --case denoise-matrix --volumes em --peaks 30 --minutes 10
    python benchmarks/quality.py --case iso-matrix --volumes em --z-factors 4 --minutes 10

Budgets are wall-clock minutes of training per family on this machine (CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.degrade import DegradationConfig, add_noise, slab_downsample
from napari_volsr.engine.io import read_volume
from napari_volsr.engine.metrics import psnr, ssim
from napari_volsr.engine.models import load_model
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import network_config
from napari_volsr.engine.restorers import InterpolationRestorer, NetworkRestorer
from napari_volsr.engine.train import make_training_data, train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOLUMES = {
    "em": "em_fibsem_fly_medulla_10nm_128x160x160.tif",
    "mri": "mri_t1_brain_1mm_stroke.nii.gz",
    "nuclei": "fluo_ovule_nuclei_confocal_100x100x100.tif",
}


def scores(prediction, reference) -> str:
    span = float(np.ptp(reference))
    return f"PSNR {psnr(prediction, reference, span):6.2f} dB  SSIM {ssim(prediction, reference, span):.4f}"


def family_overrides(family: str, args) -> dict:
    if family == "diffusion":
        return {"sample_steps": args.diffusion_steps, "n_samples": 1, "dropout": 0.0}
    if family == "rcan":
        return {"upsampling": args.rcan_upsampling}
    return {}


def train_or_reuse(config, folder: Path, args, **sources):
    """Train (or, with --reuse, load the model a previous run of this script saved)."""
    if args.reuse and (folder / "config.json").is_file():
        trained = load_model(folder)
        settings = trained.config.training.get("settings", {})
        # Version-2 cards keep the loss under "method", version-1 cards at the top.
        saved_loss = settings.get("method", {}).get("loss", settings.get("loss"))
        if settings.get("minutes") == args.minutes and saved_loss == getattr(config.method, "loss", None):
            return trained
    data = make_training_data(config, **sources)
    return train(config, data, output_dir=folder, overwrite=True)


def run_iso(volume: np.ndarray, args, out_dir: Path) -> None:
    f = args.z_factor
    depth = volume.shape[0] // f * f
    truth = volume[:depth].astype(np.float32)
    aniso = slab_downsample(truth, f, axis=0)
    print(f"iso x{f}: ground truth {truth.shape}, anisotropic input {aniso.shape}")
    # "cubic" is the prefiltered cubic B-spline, the baseline every "vs cubic" refers to.
    for mode in ("linear", "catmull-rom", "cubic"):
        base = restore(aniso, InterpolationRestorer(mode, f)).data
        print(f"  {mode + ' interpolation':<28} {scores(base, truth)}")
    for family in args.families:
        torch.manual_seed(0)
        model = ModelConfig(
            name=f"bench-iso-{family}", task="isotropic", spatial_dims=2, z_factor=f,
            network=network_config(family, args.preset, **family_overrides(family, args)),
        )
        patch = (args.patch // f, args.patch)
        config = TrainingConfig(
            model=model, source="isotropic", patch_shape=patch, batch_size=args.batch,
            steps=None, minutes=args.minutes, learning_rate=args.lr.get(family),
            validate_every=10_000, checkpoint_every=10_000, lr_decay=args.lr_decay,
            degradation=DegradationConfig(), loss=args.loss, n_val=4,
            warmup_steps=args.gan_warmup, seed=0,
        )
        trained = train_or_reuse(config, out_dir / model.name, args, volumes=[aniso])
        card = trained.config.training
        for flips in (False, True) if args.flips else (False,):
            start = time.perf_counter()
            restorer = NetworkRestorer(trained, diffusion_steps=args.diffusion_steps,
                                       diffusion_samples=1, flips=flips)
            result = restore(aniso, restorer).data
            restore_s = time.perf_counter() - start
            label = f"{family} (2D, {args.preset}{', flips' if flips else ''})"
            print(f"  {label:<28} {scores(result, truth)}  [{card['steps']} steps, train "
                  f"{card['minutes']:.1f} min, data wait {100 * card['data_wait_share']:.1f}%, "
                  f"restore {restore_s:.0f} s]", flush=True)


def run_denoise(volume: np.ndarray, args, out_dir: Path) -> None:
    rng = np.random.default_rng(0)
    low, high = np.percentile(volume, [1, 99.8])
    unit = (volume.astype(np.float32) - low) / (high - low)
    noisy_unit = add_noise(unit, rng, poisson_peak=args.peak, gaussian_sigma=args.sigma)
    noisy = noisy_unit * (high - low) + low
    truth = volume.astype(np.float32)
    split = int(volume.shape[1] * 0.75)
    held = (slice(None), slice(split, None), slice(None))
    print(f"denoise: Poisson peak {args.peak} + Gaussian sigma {args.sigma}; "
          f"train rows [0, {split}), score rows [{split}, {volume.shape[1]})")
    print(f"  {'noisy input':<28} {scores(noisy[held], truth[held])}")
    for family in args.families:
        torch.manual_seed(0)
        model = ModelConfig(
            name=f"bench-denoise-{family}", task="restore", spatial_dims=3, z_factor=1,
            network=network_config(family, args.preset, **family_overrides(family, args)),
        )
        p = args.patch // 2
        config = TrainingConfig(
            model=model, source="paired", patch_shape=(16, p, p), batch_size=args.batch,
            steps=None, minutes=args.minutes, learning_rate=args.lr.get(family),
            validate_every=10_000, checkpoint_every=10_000, n_val=4, loss=args.loss,
            lr_decay=args.lr_decay,
            warmup_steps=args.gan_warmup, seed=0,
        )
        trained = train_or_reuse(config, out_dir / model.name, args,
                                 raws=[noisy[:, :split]], targets=[truth[:, :split]])
        restorer = NetworkRestorer(trained, diffusion_steps=args.diffusion_steps,
                                   diffusion_samples=1)
        result = restore(noisy[held], restorer).data
        card = trained.config.training
        print(f"  {family + ' (3D, ' + args.preset + ')':<28} {scores(result, truth[held])}  "
              f"[{card['steps']} steps, train {card['minutes']:.1f} min, data wait "
              f"{100 * card['data_wait_share']:.1f}%]", flush=True)


def main():
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):  # the matrices have their own options: hand them all over
        case = arg.removeprefix("--case=") if arg.startswith("--case=") else (
            argv[i + 1] if arg == "--case" and i + 1 < len(argv) else None)
        if case in ("denoise-matrix", "iso-matrix", "lateral"):
            if case == "denoise-matrix":
                from denoise_matrix import main as matrix
            elif case == "lateral":
                from lateral_matrix import main as matrix
            else:
                from iso_matrix import main as matrix

            width = 1 if "=" in arg else 2
            return matrix(argv[:i] + argv[i + width:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["iso", "denoise", "denoise-matrix", "iso-matrix",
                                           "lateral"],
                        default="iso")
    parser.add_argument("--volume", choices=sorted(VOLUMES), default="em")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--families", default="rcan,srunet,gan,diffusion")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget per family")
    parser.add_argument("--z-factor", type=int, default=4)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--peak", type=float, default=10.0)
    parser.add_argument("--sigma", type=float, default=0.05)
    parser.add_argument("--diffusion-steps", type=int, default=10)
    parser.add_argument("--gan-warmup", type=int, default=100)
    parser.add_argument("--rcan-upsampling", choices=["input", "features"], default="features",
                        help="RCAN on the interpolated input (3D-RCAN) or sub-pixel (features)")
    parser.add_argument("--loss", choices=["mae", "mse", "cubic_weighted"], default="mae",
                        help="pixel loss of RCAN/SRUNet")
    parser.add_argument("--lr-decay", choices=["quarters", "cosine", "none"], default="quarters",
                        help="learning-rate schedule over the budget")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="override every family's learning rate")
    parser.add_argument("--flips", action="store_true",
                        help="also restore with test-time flips (averaged over all axis flips)")
    parser.add_argument("--reuse", action="store_true",
                        help="restore with models an earlier run saved in --out (same budget)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "volsr-bench")
    args = parser.parse_args()
    args.families = [f for f in args.families.split(",") if f]
    # Larger steps than the paper defaults: the budget here is minutes, not days.
    args.lr = {"rcan": 5e-4, "srunet": 5e-4, "gan": 2e-4, "diffusion": 5e-4}
    if args.learning_rate is not None:
        args.lr = dict.fromkeys(args.lr, args.learning_rate)
    volume = np.asarray(read_volume(args.data / VOLUMES[args.volume]).data)
    print(f"volume {args.volume} {volume.shape} {volume.dtype}; torch threads "
          f"{torch.get_num_threads()}; budget {args.minutes} min per family")
    args.out.mkdir(parents=True, exist_ok=True)
    (run_iso if args.case == "iso" else run_denoise)(volume, args, args.out)


if __name__ == "__main__":
    main()
