"""What test-time flips gain: the same trained model restored with and without them.

The measurement behind ``engine.tta.default_flips``. For each ``volume:variant`` (the
variant syntax of ``denoise_defaults.py``: ``source:family:dims:preset[:key=value...]``),
a volume of ``../shared/data`` is normalised by its 0.1 / 99.9 percentiles, Poisson
(``--peak``) + Gaussian 0.03 noise is drawn once, and the volume is split along X as in
``denoise_defaults.py``; the model trains for a fixed number of steps (so the machine's
load changes the time, not the model), then restores the noisy half with flips off and
on. Printed: PSNR (border 4, range 1) of both, the gain, and the restore times.

Usage::

    python benchmarks/tta_gain.py --runs "em:noise2void:unet:2:small:context=1:steps=2000" \\
        --peak 30
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_defaults import BORDER, DATA, FILES, config_for  # noqa: E402

from napari_volsr.engine.degrade import add_noise  # noqa: E402
from napari_volsr.engine.metrics import psnr  # noqa: E402
from napari_volsr.engine.predict import restore  # noqa: E402
from napari_volsr.engine.restorers import NetworkRestorer  # noqa: E402
from napari_volsr.engine.train import make_training_data, train  # noqa: E402


def split_volume(name: str, peak: float, crop: int | None = None):
    """(clean training half, noisy test half, its clean truth), as denoise_defaults.py."""
    volume = tifffile.imread(DATA / FILES[name]).astype(np.float32)
    if crop:
        volume = volume[:crop, :crop, : 2 * crop]
    low, high = np.percentile(volume, [0.1, 99.9])
    volume = np.clip((volume - low) / (high - low), 0, 1)
    noisy = add_noise(volume, np.random.default_rng(0), poisson_peak=peak,
                      gaussian_sigma=0.03).astype(np.float32)
    half = volume.shape[2] // 2
    return volume[..., :half], noisy[..., half:], volume[..., half:]


def run(spec: str, peak: float, out_dir: Path, crop: int | None) -> None:
    name, variant = spec.split(":", 1)
    clean_train, noisy_test, truth = split_volume(name, peak, crop)
    inner = (slice(BORDER, -BORDER),) * 3
    torch.manual_seed(0)
    config = config_for(variant, 1.0, peak)
    if config.source == "synthetic":
        data = make_training_data(config, targets=[clean_train])
    else:
        data = make_training_data(config, volumes=[noisy_test])
    model = train(config, data, output_dir=out_dir / spec.replace(":", "_"), overwrite=True)
    scores, times = {}, {}
    for flips in (False, True):
        start = time.perf_counter()
        out = restore(noisy_test, NetworkRestorer(model, flips=flips)).data
        times[flips] = time.perf_counter() - start
        scores[flips] = psnr(out[inner], truth[inner], 1.0)
    print(f"{name:<9} peak {peak:g} {variant:<50} steps {model.config.training['steps']:>5} "
          f"PSNR {scores[False]:6.2f} flips {scores[True]:6.2f} gain "
          f"{scores[True] - scores[False]:+.2f} dB  restore {times[False]:.1f} s, flips "
          f"{times[True]:.1f} s (x{times[True] / times[False]:.1f})", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="comma-separated volume:variant")
    parser.add_argument("--peak", type=float, default=30.0)
    parser.add_argument("--crop", type=int, default=None, help="crop volumes (quick runs)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/volsr-tta-gain"))
    args = parser.parse_args(argv)
    for spec in args.runs.split(","):
        run(spec, args.peak, args.out, args.crop)


if __name__ == "__main__":
    main()
