"""Speed paths of network restoration give the plain path's results (or bounded errors)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_volsr.engine import predict
from napari_volsr.engine.config import ModelConfig
from napari_volsr.engine.models import LoadedModel
from napari_volsr.engine.predict import restore
from napari_volsr.engine.registry import build_network, network_config
from napari_volsr.engine.restorers import NetworkRestorer


@pytest.fixture
def volume():
    rng = np.random.default_rng(2)
    return ndimage.gaussian_filter(rng.random((12, 40, 40)), 2).astype(np.float32)


def restorer_for(fam, z_factor=2, preset="tiny", **options):
    torch.manual_seed(0)
    extra = {"sample_steps": 2, "n_samples": 2} if fam == "diffusion" else {}
    config = ModelConfig(task="upsample" if z_factor > 1 else "restore", z_factor=z_factor,
                         network=network_config(fam, preset, **extra))
    return NetworkRestorer(LoadedModel(config, build_network(config).eval()), **options)


@pytest.mark.parametrize("fam", ["rcan", "srunet", "gan"])
def test_channels_last_changes_only_rounding_and_leaves_the_model_alone(volume, fam):
    fast = restorer_for(fam)
    plain = restorer_for(fam, channels_last=False)
    a = restore(volume, fast, device="cpu").data
    b = restore(volume, plain, device="cpu").data
    assert fast._runner is not fast.net  # the default on the CPU for 3D networks
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    # The loaded network keeps its layout: it may be training, or be saved next.
    assert all(p.is_contiguous() for p in fast.net.parameters())


def test_channels_last_default_leaves_wide_rcan_contiguous():
    # Measured slower for RCAN at 32 channels (0.85x on the default preset).
    def rcan(channels):
        config = ModelConfig(task="restore", network=network_config(
            "rcan", "tiny", channels=channels))
        restorer = NetworkRestorer(LoadedModel(config, build_network(config).eval()))
        restorer.prepare("cpu", None)
        return restorer

    wide, narrow = rcan(32), rcan(16)
    assert wide._runner is wide.net
    assert narrow._runner is not narrow.net


@pytest.mark.parametrize("fam", ["rcan", "srunet", "gan"])
def test_small_blocks_share_network_calls_with_the_same_result(volume, fam, monkeypatch):
    restorer = restorer_for(fam)
    calls = []
    inner = restorer._apply
    monkeypatch.setattr(restorer, "_apply", lambda x: calls.append(x.shape[0]) or inner(x))
    monkeypatch.setattr(predict, "MAX_BATCH", 1)
    single = restore(volume, restorer, block_shape=(6, 20, 20), percentiles=(0, 100)).data
    n_blocks = len(calls)
    assert n_blocks >= 8 and calls == [1] * n_blocks
    calls.clear()
    monkeypatch.setattr(predict, "MAX_BATCH", 16)
    batched = restore(volume, restorer, block_shape=(6, 20, 20), percentiles=(0, 100)).data
    assert max(calls) > 1 and sum(calls) == n_blocks  # the same blocks, in fewer calls
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5 * np.abs(single).max())


def test_diffusion_blocks_are_never_batched(volume, monkeypatch):
    restorer = restorer_for("diffusion", z_factor=1)
    calls = []
    inner = restorer._apply
    monkeypatch.setattr(restorer, "_apply", lambda x: calls.append(x.shape[0]) or inner(x))
    restore(volume[:8, :32, :32], restorer, block_shape=(8, 16, 16))
    assert calls == [1] * 4  # each block draws its own noise stream


@pytest.mark.parametrize("fam", ["rcan", "srunet", "gan"])
@pytest.mark.parametrize("z_factor", [1, 2])
def test_bf16_on_the_cpu_stays_close_to_fp32(volume, fam, z_factor):
    restorer = restorer_for(fam, z_factor)
    fp32 = restore(volume, restorer, device="cpu", precision="fp32")
    bf16 = restore(volume, restorer, device="cpu", precision="bf16")
    assert bf16.settings["precision"] == "bfloat16"
    error = bf16.data - fp32.data
    span = np.ptp(fp32.data)
    # Measured on these random tiny networks: RMS 0.02-0.5 %, max 0.1-4 % of the range
    # (8-bit mantissas through a dozen layers). fp32 stays the CPU default.
    assert np.sqrt(np.mean(error**2)) <= 1e-2 * span
    assert np.abs(error).max() <= 6e-2 * span


def _transparent_huge_pages() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _transparent_huge_pages(), reason="needs Linux transparent huge pages")
@pytest.mark.parametrize("opt_out", [False, True])
def test_importing_the_package_first_puts_torch_buffers_on_huge_pages(opt_out):
    import os
    import subprocess
    import sys

    code = (
        "import napari_volsr, resource, torch\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "torch.ones(2**26)\n"  # 256 MiB: 65536 pages of 4 KiB
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if opt_out:
        env["THP_MEM_ALLOC_ENABLE"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    faults = int(out.stdout.split()[-1])
    assert (faults > 60_000) if opt_out else (faults < 10_000)


@pytest.mark.slow
def test_compiled_network_gives_the_eager_result(volume):
    compiled = restore(volume, restorer_for("gan", compile=True), device="cpu").data
    eager = restore(volume, restorer_for("gan"), device="cpu").data
    assert np.abs(compiled - eager).max() <= 1e-5 * np.abs(eager).max()


def test_a_failed_compile_falls_back_to_the_network(volume, monkeypatch):
    def broken(module, **kwargs):
        def call(*args):
            raise RuntimeError("InductorError: no working C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    restorer = restorer_for("srunet", compile=True)
    with pytest.warns(RuntimeWarning, match="uncompiled.*C\\+\\+ compiler"):
        out = restore(volume, restorer, device="cpu").data
    np.testing.assert_array_equal(out, restore(volume, restorer_for("srunet"), device="cpu").data)


def test_sub_pixel_rcan_plans_memory_on_the_input_grid():
    # RCAN's sub-pixel z-upsampling keeps its features on the input grid: a x4 model
    # needs per input voxel what a x1 model of the same width needs.
    up = restorer_for("rcan", z_factor=4, preset="small")
    same = restorer_for("rcan", z_factor=1, preset="small")
    assert up.net.shuffle
    assert up.bytes_per_voxel * up.z_factor == same.bytes_per_voxel
