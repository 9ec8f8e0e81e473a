"""Peak memory of streamed (zarr -> zarr) restoration: does it follow the block plan?

Restores a zarr volume and one 4x larger with the same network and the same block
plan, each in a fresh process through the CLI (`volsr restore ... -o out.zarr`), and
prints each run's peak resident memory. Streaming works when the larger run needs
little more. For contrast, the larger volume is also restored with glibc's default
malloc settings (see engine/allocator.py) and to a TIFF, which holds the whole result
in memory.

    python benchmarks/memory.py                      # 64x256x256 vs 256x256x256
    python benchmarks/memory.py --shape 32,128,128   # quicker
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_volume(path: Path, shape: tuple[int, ...], seed: int) -> None:
    """A smooth-ish uint16 volume written as OME-Zarr chunk by chunk (never whole in memory)."""
    import dask.array as da

    from napari_volsr.engine.io import Volume, write_volume

    rng = da.random.default_rng(seed)
    noise = rng.random(shape, chunks=(32, 128, 128)) * 300
    z = da.arange(shape[0], chunks=32)[:, None, None]
    y = da.arange(shape[1], chunks=128)[None, :, None]
    x = da.arange(shape[2], chunks=128)[None, None, :]
    base = 1000 + 800 * da.sin(z / 7.0) * da.cos(y / 11.0) * da.sin(x / 13.0)
    data = (base + noise).astype(np.uint16)
    write_volume(path, Volume(data, (1.0, 1.0, 1.0), "ZYX", "µm"))


def make_model(folder: Path, family: str, preset: str) -> None:
    import torch

    from napari_volsr.engine.config import ModelConfig
    from napari_volsr.engine.models import save_model
    from napari_volsr.engine.registry import build_network, network_config

    torch.manual_seed(0)  # random weights: memory does not depend on what was learned
    config = ModelConfig(name=folder.name, task="restore", network=network_config(family, preset))
    save_model(folder, config, build_network(config))


def child(args: list[str]) -> None:
    """Run one CLI restore in this process and print its peak RSS (MiB) and time."""
    from napari_volsr.cli import main

    if args[0] == "--glibc-default":  # contrast: leave malloc's dynamic mmap threshold on
        from napari_volsr.engine import allocator

        allocator.bound_heap_growth = lambda: False
        args = args[1:]

    start = time.perf_counter()
    try:
        main(args)
    except SystemExit as exc:
        if exc.code:
            raise
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"RESULT {peak:.1f} {seconds:.2f}")


def measure(args: list[str]) -> tuple[float, float]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    if out.returncode or not lines:
        raise SystemExit(f"restore failed:\n{out.stderr[-2000:]}")
    peak, seconds = (float(v) for v in lines[-1].split()[1:])
    return peak, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,256,256", help="Z,Y,X of the smaller volume")
    parser.add_argument("--block-shape", default="32,128,128")
    parser.add_argument("--family", default="gan")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-contrast", action="store_true",
                        help="skip the contrast runs (glibc's default malloc; TIFF output)")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child is not None:
        child(opts.child)
        return
    small = tuple(int(v) for v in opts.shape.split(","))
    large = (small[0] * 4, *small[1:])
    with tempfile.TemporaryDirectory(prefix="volsr-memory-") as tmp:
        tmp = Path(tmp)
        model = tmp / "model"
        make_model(model, opts.family, opts.preset)
        common = ["-m", str(model), "--block-shape", opts.block_shape, "-q", "--overwrite"]
        shapes = {"small": small, "large": large}
        for name, shape in shapes.items():
            make_volume(tmp / f"{name}.zarr", shape, seed=1)
        runs = {"small zarr -> zarr": ("small", ".zarr", []),
                "large zarr -> zarr": ("large", ".zarr", [])}
        if not opts.no_contrast:
            runs["large, glibc default malloc"] = ("large", ".zarr", ["--glibc-default"])
            runs["large zarr -> tif (in memory)"] = ("large", ".tif", [])
        samples = {label: [] for label in runs}
        # Interleaved repeats: the peak is one block's transient activations, which vary
        # by tens of MiB from process to process; medians compare fairly.
        for _ in range(opts.repeats):
            for label, (name, suffix, flags) in runs.items():
                samples[label].append(measure([
                    *flags, "restore", "-i", str(tmp / f"{name}.zarr"), "-o", str(tmp / f"out{suffix}"),
                    *common]))
        rows = [(label, shapes[runs[label][0]], float(np.median([p for p, _ in got])),
                 float(np.median([t for _, t in got])), got)
                for label, got in samples.items()]
    print(f"model {opts.family}/{opts.preset} (random weights), block core {opts.block_shape}, "
          f"float32 output, one fresh process per run, medians of {opts.repeats}")
    print(f"{'run':30s} {'shape':>12s} {'voxels':>11s} {'peak RSS MiB':>13s} {'seconds':>8s}  "
          "all peaks (MiB) / all times (s)")
    for name, shape, peak, seconds, got in rows:
        voxels = int(np.prod(shape))
        print(f"{name:30s} {'x'.join(map(str, shape)):>12s} {voxels:>11,d} {peak:>13.1f} "
              f"{seconds:>8.1f}  {', '.join(f'{p:.0f}' for p, _ in got)} / "
              f"{', '.join(f'{t:.1f}' for _, t in got)}")
    ratio = rows[1][2] / rows[0][2]
    print(f"peak RSS large / small (zarr -> zarr): {ratio:.3f} ({(ratio - 1) * 100:+.1f}%) "
          "for 4x the voxels")


if __name__ == "__main__":
    main()
