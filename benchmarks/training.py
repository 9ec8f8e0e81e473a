"""Training throughput per family: steps per second and the share of time waiting for data.

Trains each family's preset in 3D through the public engine (``train.iter_train``) on
synthetic pairs degraded from a random smooth volume (the ``synthetic`` source, default
degradation), with the config's defaults for batch size (4), patch shape ((32, 64, 64)
on the input grid, (8, 64, 64) for z-factor 4), prefetching (2 batches ahead, one
thread) and precision; validation and checkpoints are pushed past the run. Prints,
after ``--warmup`` steps:

- steps per second (median of the step intervals) and training voxels per second
  (output voxels of a batch x steps per second);
- the training GFLOP/s: 3 x the forward FLOPs of a batch (forward, and a backward of
  twice its cost) x steps per second, with the forward FLOPs counted as in
  ``benchmarks/inference.py``; for GANs the generator only, without the discriminator;
- ``data wait``: the share of the training time the loop waited for batches
  (``TrainProgress.data_wait``); ``cores``: CPU seconds per wall second (the machine may
  be shared).

Usage::

    python benchmarks/training.py                       # small presets, z-factors 1 and 4
    python benchmarks/training.py --presets small,default --steps 10
"""

# napari_volsr first: it sets torch's CPU allocator option before torch loads.
import napari_volsr  # noqa: F401, I001

import argparse
import math
import statistics
import tempfile
import time

import torch

from inference import make_volume, network_pass, trace_layers  # this folder
from napari_volsr.engine.degrade import DegradationConfig
from napari_volsr.engine.config import ModelConfig, TrainingConfig
from napari_volsr.engine.registry import Family, build_network, network_config
from napari_volsr.engine.restorers import NetworkRestorer
from napari_volsr.engine.models import LoadedModel
from napari_volsr.engine.train import iter_train, make_training_data


def forward_flops(config: ModelConfig, batch: int, patch: tuple[int, ...]) -> float:
    """FLOPs of one forward pass of the network on a batch of ``patch`` inputs."""
    restorer = NetworkRestorer(LoadedModel(config, build_network(config)))
    net, shapes, extra, _ = network_pass(restorer, patch)
    return batch * sum(layer.flops for layer in trace_layers(net, *shapes, extra=extra))


def measure(fam: str, preset: str, z_factor: int, args) -> dict:
    task = "restore" if z_factor == 1 else "upsample"
    model = ModelConfig(name=f"bench-{fam}", task=task, z_factor=z_factor,
                        network=network_config(fam, preset))
    # Same-shape restoration needs some degradation to learn from: a fixed z blur.
    degradation = DegradationConfig(blur_sigma=(1.0, 1.0)) if z_factor == 1 else DegradationConfig()
    config = TrainingConfig(model=model, source="synthetic", steps=args.warmup + args.steps,
                            validate_every=10**6, checkpoint_every=10**6, device=args.device,
                            degradation=degradation)
    volume = make_volume(tuple(int(v) for v in args.shape.split(",")))
    data = make_training_data(config, targets=[volume])
    stamps = []
    cpu_start = wall_start = 0.0
    last = None
    with tempfile.TemporaryDirectory() as folder:
        for progress in iter_train(config, data, output_dir=f"{folder}/model"):
            if progress.step == 0:
                continue  # warnings about the data
            stamps.append(time.perf_counter())
            if progress.step == args.warmup:
                wall_start, cpu_start = time.perf_counter(), time.process_time()
            last = progress
        wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    intervals = [b - a for a, b in zip(stamps[args.warmup - 1 :], stamps[args.warmup :],
                                       strict=False)]
    steps_per_s = 1.0 / statistics.median(intervals)
    patch = config.resolved_patch_shape()
    out_voxels = config.batch_size * math.prod(patch) * z_factor
    flops = 3 * forward_flops(model, config.batch_size, patch)
    return {
        "label": f"{fam:<10} {preset:<8} {z_factor:>2}",
        "batch": f"{config.batch_size} x {'x'.join(map(str, patch))}",
        "steps_per_s": steps_per_s,
        "voxels_per_s": out_voxels * steps_per_s,
        "gflops": flops * steps_per_s / 1e9,
        "data_wait": last.data_wait,
        "cores": cpu / wall,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(f.value for f in Family))
    parser.add_argument("--presets", default="small")
    parser.add_argument("--z-factors", default="1,4")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--shape", default="64,256,256", help="clean volume to train on")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
          f"{args.device}; {args.steps} timed steps after {args.warmup}")
    rows = []
    for fam in args.families.split(","):
        for preset in args.presets.split(","):
            for z in (int(v) for v in args.z_factors.split(",")):
                rows.append(measure(fam, preset, z, args))
                print(f"  {rows[-1]['label']}: {rows[-1]['steps_per_s']:.3f} steps/s", flush=True)
    print(f"\n{'family':<10} {'preset':<8} {'z':>2} {'batch (input)':>16} {'steps/s':>8} "
          f"{'voxels/s':>10} {'GFLOP/s':>8} {'data wait':>9} {'cores':>5}")
    for r in rows:
        print(f"{r['label']} {r['batch']:>16} {r['steps_per_s']:>8.3f} {r['voxels_per_s']:>10,.0f} "
              f"{r['gflops']:>8.1f} {r['data_wait']:>9.1%} {r['cores']:>5.2f}")
    print("GFLOP/s = 3 x forward FLOPs of a batch x steps/s (generator only for GANs); "
          "data wait = share of the time spent waiting for batches.")


if __name__ == "__main__":
    main()
