"""Soak check: hundreds of small restores in one process, resident memory before and after.

Usage: python benchmarks/soak.py [--count 300] [--shape 16,64,64] [--family gan]
       [--preset tiny] [--z-factor 2] [--warmup 10] [--keep-model]

A tiny untrained model is saved to a temporary library; each restore then loads it by
name (as ``volsr restore -m`` does; ``--keep-model`` loads it once, as the panel's cache
does) and restores the same smooth volume through the public engine API. Prints the
resident set size (RSS) after the first ``--warmup`` restores, every so often, and at the
end, with the ratio end / warm-up: a leak shows as a ratio that keeps growing with
``--count``. No assertions: figures only.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_volsr.engine.config import ModelConfig
from napari_volsr.engine.models import save_model
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import build_network, network_config
from napari_volsr.engine.restorers import get_restorer


def rss_bytes() -> tuple[int, str]:
    """Resident set size of this process now, and how it was measured."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return psutil.Process().memory_info().rss, "psutil"
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"), "/proc/self/statm"
    except OSError:
        import resource

        # Peak, not current, and KiB on Linux: only an upper bound where /proc is missing.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss (peak)"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="restores in a row")
    parser.add_argument("--shape", default="16,64,64", help="Z,Y,X of the volume")
    parser.add_argument("--family", default="gan", help="rcan, srunet, gan or diffusion")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--z-factor", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10, help="restores before the baseline")
    parser.add_argument("--keep-model", action="store_true",
                        help="load the model once instead of before every restore")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    every = max(1, args.count // 6)

    rng = np.random.default_rng(0)
    volume = (ndimage.gaussian_filter(rng.random(shape), 2.0) * 1000).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NAPARI_VOLSR_MODELS"] = tmp
        task = "restore" if args.z_factor == 1 else "upsample"
        extra = {"sample_steps": 2, "n_samples": 1} if args.family == "diffusion" else {}
        config = ModelConfig(name="soak", task=task, z_factor=args.z_factor,
                             network=network_config(args.family, args.preset, **extra))
        torch.manual_seed(0)
        save_model(Path(tmp) / "soak", config, build_network(config))
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu")
        print(f"{args.count} restores of {shape} with {args.family} ({args.preset}, "
              f"x{args.z_factor}), model loaded {'once' if args.keep_model else 'every time'}")

        kept = get_restorer("soak") if args.keep_model else None
        baseline, how = None, ""
        start = time.perf_counter()
        for i in range(1, args.count + 1):
            restorer = kept if kept is not None else get_restorer("soak")
            result = restore(volume, restorer, device="cpu")
            del result, restorer
            if i == args.warmup or i % every == 0 or i == args.count:
                gc.collect()
                rss, how = rss_bytes()
                if i == args.warmup:
                    baseline = rss
                ratio = f", x{rss / baseline:.3f} of warm-up" if baseline else ""
                print(f"  after {i:4d} restores: RSS {mib(rss)}{ratio}")
        elapsed = time.perf_counter() - start
    final = rss  # measured after the last restore
    print(f"RSS ({how}) after {args.warmup} restores: {mib(baseline)}")
    print(f"RSS after {args.count} restores: {mib(final)}")
    print(f"ratio end / warm-up: {final / baseline:.3f} ({(final / baseline - 1) * 100:+.1f} %)")
    print(f"time per restore: {elapsed / args.count * 1000:.0f} ms")


if __name__ == "__main__":
    main()
