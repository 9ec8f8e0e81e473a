"""Noisy and anisotropic at once: isotropic reconstruction with and without denoising first.

The FIB-SEM and serial-section case (issue 13, item 3). A near-isotropic volume of
``../shared/data`` is normalised to [0, 1] by its 0.1 / 99.9 percentiles (the truth),
slab-downsampled along z by ``--z-factor`` (DESIGN 3) and given Poisson-Gaussian noise
(``--peak`` photons at 1, plus Gaussian ``--gaussian``): that noisy anisotropic volume is
all the methods see. Rows, each scored against the truth (PSNR / SSIM, data range 1,
border of 4 voxels ignored):

- ``spline``: the prefiltered cubic B-spline of the noisy volume (no denoising).
- ``gaussian+spline``: a Gaussian filter of the noisy volume at the sigma whose spline
  upsampling scores best against the truth (an oracle sigma), then the spline.
- ``bm4d+spline`` (with the ``bm4d`` package): BM4D on the variance-stabilised counts,
  then the spline.
- ``iso``: self-supervised isotropic training on the noisy volume itself (the whole
  budget); it learns to reproduce the noise it sees on the lateral planes.
- ``n2v+spline``: our Noise2Void on the noisy volume (half the budget), then the spline.
- ``n2v>iso``: the same Noise2Void model, then isotropic training on its denoised volume
  (the other half of the budget), restored as one job (``vs.restore(noisy,
  model=[n2v, iso])``, the Restore panel's "then apply", ``volsr restore -m n2v -m iso``).
  The note gives the largest difference to the two steps run as separate restores.

Every trained model takes the engine's defaults (family, preset, patch, schedule) through
``napari_volsr.api``; only the source, the budget and the z-factor are given.

Usage (2-core machine, otherwise idle; about 2 x budget + 3 minutes)::

    python benchmarks/noisy_isotropic.py --volume em --z-factor 4 --peak 30 --minutes 6
    python benchmarks/noisy_isotropic.py --quick       # CI-sized: a crop, seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_matrix import (  # noqa: E402  (a sibling script, not a package)
    DATA,
    VOLUMES,
    Clock,
    add_noise,
    normalise,
    run_bm4d,
    score,
)

QUICK_CROP = (32, 48, 48)


def load_truth(name: str, data_dir: Path, z_factor: int, quick: bool) -> np.ndarray:
    """The normalised volume, cropped to a whole number of slabs along z."""
    from napari_volsr.engine.io import read_volume

    volume = normalise(np.asarray(read_volume(data_dir / VOLUMES[name]).data))
    if quick:
        starts = [max(0, (n - c) // 2) for n, c in zip(volume.shape, QUICK_CROP, strict=True)]
        volume = volume[tuple(slice(s, s + c) for s, c in zip(starts, QUICK_CROP, strict=True))]
    depth = volume.shape[0] // z_factor * z_factor
    return np.ascontiguousarray(volume[:depth])


def spline(volume: np.ndarray, z_factor: int) -> np.ndarray:
    import napari_volsr.api as vs

    return vs.restore(volume, model="cubic", z_factor=z_factor)


def best_gaussian_then_spline(noisy: np.ndarray, truth: np.ndarray, z_factor: int):
    """The Gaussian sigma (0.3 .. 2.5, steps 0.1) whose spline upsampling scores best."""
    from scipy.ndimage import gaussian_filter

    best = (-np.inf, None, 0.0)
    for sigma in np.round(np.arange(0.3, 2.51, 0.1), 1):
        result = spline(gaussian_filter(noisy, float(sigma), mode="reflect"), z_factor)
        value = score(result, truth)[0]
        if value > best[0]:
            best = (value, result, float(sigma))
    return best[1], best[2]


def train(source: str, volume: np.ndarray, minutes: float, args, name: str, **options):
    import napari_volsr.api as vs

    with Clock() as clock:
        model = vs.train(volume=volume, source=source, minutes=minutes, name=name,
                         overwrite=True, output_dir=args.out / "models", **options)
    return model, clock


def describe(model, clock) -> str:
    config = model.config
    dims = "2D" if config.spatial_dims == 2 else "3D"
    return (f"{config.network.family} {dims}, {config.training.get('steps', 0)} steps, "
            f"train {clock.wall:.0f} s wall / {clock.cpu:.0f} s CPU")


def rows(args):
    """Yield (method, restored, note) for each row."""
    import napari_volsr.api as vs

    f = args.z_factor
    truth, noisy = args.truth, args.noisy
    yield "spline", spline(noisy, f), "prefiltered cubic B-spline of the noisy volume"
    smooth, sigma = best_gaussian_then_spline(noisy, truth, f)
    yield "gaussian+spline", smooth, f"oracle sigma {sigma:.1f}"
    if importlib.util.find_spec("bm4d") is not None and "bm4d" in args.methods:
        with Clock() as clock:
            denoised = run_bm4d(noisy, args.peak, args.gaussian, "np")
        yield "bm4d+spline", spline(denoised, f), f"BM4D {clock.wall:.0f} s wall"
    tag = f"{args.volume}-x{f}-p{args.peak:g}-{args.minutes:g}m".replace(".", "p")
    if "iso" in args.methods:
        iso, clock = train("isotropic", noisy, args.minutes, args, f"noisy-iso-{tag}",
                           z_factor=f)
        yield "iso", vs.restore(noisy, model=str(iso.folder)), describe(iso, clock)
    if "n2v" in args.methods:
        half = args.minutes / 2
        n2v, n2v_clock = train("noise2void", noisy, half, args, f"noisy-n2v-{tag}")
        denoised = vs.restore(noisy, model=str(n2v.folder))
        yield "n2v+spline", spline(denoised, f), describe(n2v, n2v_clock)
        iso, iso_clock = train("isotropic", denoised, half, args, f"denoised-iso-{tag}",
                               z_factor=f)
        chained = vs.restore(noisy, model=[str(n2v.folder), str(iso.folder)])
        separate = vs.restore(denoised, model=str(iso.folder))
        gap = float(np.max(np.abs(chained - separate)))
        yield "n2v>iso", chained, (f"n2v: {describe(n2v, n2v_clock)}; iso: "
                                   f"{describe(iso, iso_clock)}; one job vs two restores: "
                                   f"max |diff| {gap:.2e}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", default="em", choices=sorted(VOLUMES))
    parser.add_argument("--z-factor", type=int, default=4)
    parser.add_argument("--peak", type=float, default=30.0, help="photons at intensity 1")
    parser.add_argument("--gaussian", type=float, default=0.03, help="Gaussian noise sigma")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training budget per method (default 6; --quick 0.1)")
    parser.add_argument("--methods", default="bm4d,iso,n2v",
                        help="trained/optional rows: bm4d, iso, n2v (splines always run)")
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_CROP} crop (CI)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None, help="model folders (default: temp)")
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    if args.minutes is None:
        args.minutes = 0.1 if args.quick else 6.0
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="volsr-noisy-iso-"))
    return args


def main(argv=None) -> None:
    import torch

    args = parse_args(argv)
    args.truth = load_truth(args.volume, args.data, args.z_factor, args.quick)
    from napari_volsr.engine.degrade import slab_downsample

    aniso = slab_downsample(args.truth, args.z_factor, axis=0)
    args.noisy = add_noise(aniso, args.peak, args.gaussian, seed=0).astype(np.float32)
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    print(f"noisy + anisotropic: {args.volume} truth {args.truth.shape}, input "
          f"{args.noisy.shape} (slab x{args.z_factor}, Poisson peak {args.peak:g} + Gaussian "
          f"{args.gaussian}); budget {args.minutes:g} min per trained method; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs",
          flush=True)
    for method, restored, note in rows(args):
        value, structure = score(restored, args.truth)
        print(f"  {method:<16} PSNR {value:6.2f} dB  SSIM {structure:.4f}  {note}", flush=True)


if __name__ == "__main__":
    main()
