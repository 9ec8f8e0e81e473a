"""Probe denoising defaults: family x dimensionality x source at one CPU-minute budget.

The measurements behind ``engine.training_config.default_family`` and
``default_spatial_dims`` for same-shape restoration. A volume of ``../shared/data`` is
normalised by its 0.1 / 99.9 percentiles and clipped to [0, 1], Poisson (``peak``) +
Gaussian 0.03 noise is drawn once, and the volume is split along X: the synthetic
source trains on the clean first half, Noise2Void on the noisy second half, and both
restore the noisy second half, scored against its clean copy (border 4, range 1).

Each variant is ``source:family:dims:preset[:key=value...]`` with keys ``batch``,
``lr``, ``patch`` (``16x32x32``), ``decay``, ``loss``, ``steps``, ``context`` (2.5D planes
each side; ``--context-planes N`` sets it for every variant that does not); everything else
is the engine's default (for Noise2Void, the source's network settings, e.g. N2V2 for U-Nets).

Usage::

    python benchmarks/denoise_defaults.py em 1.5 \\
        "synthetic:unet:2:small,synthetic:unet:3:small:patch=16x32x32:batch=8" 30
"""

import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.degrade import DegradationConfig, add_noise
from napari_volsr.engine.metrics import psnr, ssim
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import network_config
from napari_volsr.engine.restorers import NetworkRestorer
from napari_volsr.engine.train import make_training_data, train
from napari_volsr.engine.training_config import SOURCE_NETWORK_DEFAULTS

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILES = {"em": "em_fibsem_fly_medulla_10nm_128x160x160.tif",
         "nuclei": "fluo_ovule_nuclei_confocal_100x100x100.tif",
         "membrane": "fluo_ovule_membrane_confocal_32x128x128.tif"}
BORDER = 4


def config_for(variant: str, minutes: float, peak: float,
               context_planes: int | None = None) -> TrainingConfig:
    source, family, dims, preset, *rest = variant.split(":")
    extra = dict(kv.split("=") for kv in rest)
    net = network_config(family, preset, **SOURCE_NETWORK_DEFAULTS.get((source, family), {}))
    context = int(extra.get("context", context_planes or 0))
    model = ModelConfig(name="probe", task="restore", spatial_dims=int(dims), network=net,
                        context_planes=context)
    steps = int(extra["steps"]) if "steps" in extra else None
    kw = dict(model=model, source=source, steps=steps, minutes=None if steps else minutes,
              validate_every=10**6, checkpoint_every=10**6, n_val=4, seed=0)
    if "batch" in extra:
        kw["batch_size"] = int(extra["batch"])
    if "lr" in extra:
        kw["learning_rate"] = float(extra["lr"])
    if "patch" in extra:
        kw["patch_shape"] = tuple(int(p) for p in extra["patch"].split("x"))
    if "decay" in extra:
        kw["lr_decay"] = extra["decay"]
    if "loss" in extra:
        kw["method"] = {"kind": "supervised", "loss": extra["loss"]}
    if source == "synthetic":
        kw["degradation"] = DegradationConfig(poisson_peak=(peak, peak),
                                              gaussian_sigma=(0.03, 0.03))
    return TrainingConfig(**kw)


def main():
    argv = list(sys.argv[1:])
    context_planes = None
    if "--context-planes" in argv:
        at = argv.index("--context-planes")
        context_planes = int(argv[at + 1])
        del argv[at : at + 2]
    name, minutes, variants = argv[0], float(argv[1]), argv[2].split(",")
    peak = float(argv[3]) if len(argv) > 3 else 30.0
    volume = tifffile.imread(DATA / FILES[name]).astype(np.float32)
    low, high = np.percentile(volume, [0.1, 99.9])
    volume = np.clip((volume - low) / (high - low), 0, 1)
    noisy = add_noise(volume, np.random.default_rng(0), poisson_peak=peak,
                      gaussian_sigma=0.03).astype(np.float32)
    half = volume.shape[2] // 2
    clean_train, noisy_test, truth = volume[..., :half], noisy[..., half:], volume[..., half:]
    inner = (slice(BORDER, -BORDER),) * 3

    def score(x):
        return psnr(x[inner], truth[inner], 1.0), ssim(x[inner], truth[inner], 1.0)

    print(f"{name} peak {peak}: noisy PSNR {score(noisy_test)[0]:.2f} SSIM "
          f"{score(noisy_test)[1]:.4f}", flush=True)
    for variant in variants:
        torch.manual_seed(0)
        config = config_for(variant, minutes, peak, context_planes)
        if config.source == "synthetic":
            data = make_training_data(config, targets=[clean_train])
        else:
            data = make_training_data(config, volumes=[noisy_test])
        start, cpu = time.time(), time.process_time()
        model = train(config, data, output_dir=Path("/tmp/volsr-denoise-defaults") /
                      variant.replace(":", "_"), overwrite=True)
        wall, cpu = time.time() - start, time.process_time() - cpu
        out = restore(noisy_test, NetworkRestorer(model)).data
        p, s = score(out)
        print(f"{variant:<45} PSNR {p:6.2f} SSIM {s:.4f} steps {model.config.training['steps']} "
              f"wall {wall:.0f}s cpu {cpu:.0f}s patch {config.resolved_patch_shape()} "
              f"batch {config.batch_size}", flush=True)


if __name__ == "__main__":
    main()
