"""Data-parallel training under torchrun: real DDP replicas on gloo (CPU)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from napari_volsr.engine import ddp
from napari_volsr.engine.config import ModelConfig
from napari_volsr.engine.methods.supervised import SupervisedMethod
from napari_volsr.engine.registry import build_network, network_config

STEPS = 3
CONFIG = ModelConfig(name="d", task="upsample", z_factor=2, network=network_config("rcan", "tiny"))

# Runs under torchrun: every rank trains its replica on its own batches, then saves it.
REPLICA_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from safetensors.torch import save_file
    from napari_volsr.engine import ddp
    from test_ddp import CONFIG, STEPS, batch, fresh_method

    replica = ddp.from_environment()
    device = ddp.start(replica, torch.device("cpu"))
    method = fresh_method()
    method.distribute(lambda net: ddp.wrap(net, device))
    for step in range(STEPS):
        method.training_step(batch(step, replica.rank))
    save_file({k: v.contiguous() for k, v in method.state_dict().items()},
              f"{sys.argv[1]}/rank{replica.rank}.safetensors")
    ddp.finish()
""")


def fresh_method():
    torch.manual_seed(0)
    method = SupervisedMethod(build_network(CONFIG), loss="mse")
    method.configure_optimizers(1e-3)
    return method


def batch(step, rank):
    rng = np.random.default_rng([step, rank])
    x = rng.random((2, 1, 6, 12, 12), dtype=np.float32)
    y = rng.random((2, 1, 12, 12, 12), dtype=np.float32)
    return {"input": torch.from_numpy(x), "target": torch.from_numpy(y)}


def torchrun(args, cwd, env_extra=None, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_outside_torchrun_there_is_no_replica(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ddp.from_environment() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert ddp.from_environment() is None


def test_two_replicas_equal_one_process_on_the_combined_batch(tmp_path):
    script = tmp_path / "replica.py"
    script.write_text(REPLICA_SCRIPT)
    here = os.path.dirname(__file__)
    result = torchrun([str(script), str(tmp_path)], tmp_path,
                      {"PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = load_file(tmp_path / "rank0.safetensors")
    rank1 = load_file(tmp_path / "rank1.safetensors")
    for key in rank0:  # gradients were all-reduced: the replicas never diverge
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)

    reference = fresh_method()
    for step in range(STEPS):
        b0, b1 = batch(step, 0), batch(step, 1)
        reference.training_step({k: torch.cat([b0[k], b1[k]]) for k in b0})
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(rank0[key], value, rtol=1e-4, atol=1e-6)
    start = fresh_method().state_dict()
    assert any(not torch.equal(rank0[k], start[k]) for k in start)  # it did train


def smooth_tiff(path):
    import tifffile
    from scipy import ndimage

    vol = ndimage.gaussian_filter(np.random.default_rng(0).random((16, 40, 40)), 1.5)
    vol = ((vol - vol.min()) / np.ptp(vol) * 1000 + 50).astype(np.float32)
    tifffile.imwrite(path, vol, imagej=True, resolution=(5.0, 5.0),
                     metadata={"spacing": 0.2, "unit": "um", "axes": "ZYX"})


def test_cli_train_under_torchrun_saves_once_and_resumes(tmp_path):
    from napari_volsr.engine.models import load_model
    from napari_volsr.engine.predict import restore
    from napari_volsr.engine.restorers import get_restorer

    smooth_tiff(tmp_path / "clean.tif")
    lib = tmp_path / "lib"
    train = ["-m", "napari_volsr.cli", "train", "--source", "synthetic", "--target", "clean.tif",
             "--family", "rcan", "--preset", "tiny", "-z", "2", "--patch", "8,16,16",
             "--batch-size", "2", "-n", "ddp", "-q"]
    env = {"NAPARI_VOLSR_MODELS": str(lib)}
    first = torchrun([*train, "--steps", "4"], tmp_path, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("model 'ddp' saved") == 1  # rank 0 reports, rank 1 is quiet
    model = load_model(lib / "ddp")
    assert model.config.training["replicas"] == 2
    assert model.config.training["steps"] == 4

    resumed = torchrun([*train, "--steps", "6", "--resume"], tmp_path, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    model = load_model(lib / "ddp")
    assert model.config.training["steps"] == 6
    rows = (lib / "ddp" / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 6  # header + one row per step, the first 4 kept from run one
    out = restore(np.ones((4, 16, 16), np.float32), get_restorer(model)).data
    assert out.shape == (8, 16, 16) and np.isfinite(out).all()
