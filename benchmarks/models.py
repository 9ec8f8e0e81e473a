"""Parameter counts of each family's presets and CPU restore throughput.

Usage: python benchmarks/models.py [--shape 64,256,256] [--repeats 3] [--families rcan,...]

Prints, per family: parameters of the `default` preset in 3D (z-factor 1 and 4), and
the voxels per second of a whole tiled restore of a random smooth volume with the
`small` preset (3D, z-factor 1), median over repeats. Diffusion is timed for one
sampling step and one sample (a restore with S steps and N samples costs about S*N
times more).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy import ndimage

from napari_volsr.engine.config import ModelConfig
from napari_volsr.engine.models import LoadedModel
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import Family, build_network, network_config
from napari_volsr.engine.restorers import NetworkRestorer


def n_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


def config_for(family: str, preset: str, z_factor: int, **overrides) -> ModelConfig:
    task = "restore" if z_factor == 1 else "upsample"
    return ModelConfig(task=task, z_factor=z_factor, network=network_config(family, preset, **overrides))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,256,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--families", default=",".join(f.value for f in Family))
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    families = args.families.split(",")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu")
    print("\nParameters, default preset, 3D")
    print(f"{'family':<10} {'z=1':>12} {'z=4':>12}")
    for fam in families:
        counts = [n_params(build_network(config_for(fam, "default", z))) for z in (1, 4)]
        print(f"{fam:<10} {counts[0]:>12,} {counts[1]:>12,}")

    rng = np.random.default_rng(0)
    volume = ndimage.gaussian_filter(rng.random(shape, dtype=np.float32), 2.0)
    print(f"\nCPU restore throughput, small preset, 3D, z-factor 1, volume {shape}")
    print(f"{'family':<10} {'params':>10} {'median s':>10} {'voxels/s':>12}  plan")
    for fam in families:
        extra = {"sample_steps": 1, "n_samples": 1} if fam == "diffusion" else {}
        config = config_for(fam, "small", 1, **extra)
        torch.manual_seed(0)
        restorer = NetworkRestorer(LoadedModel(config, build_network(config).eval()))
        times, plan = [], ""
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = restore(volume, restorer, device="cpu")
            times.append(time.perf_counter() - start)
            plan = result.plan
        median = statistics.median(times)
        label = fam + (" (1 step)" if fam == "diffusion" else "")
        print(f"{label:<10} {n_params(restorer.net):>10,} {median:>10.2f} "
              f"{np.prod(shape) / median:>12,.0f}  {plan}", flush=True)


if __name__ == "__main__":
    main()
