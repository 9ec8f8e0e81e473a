"""Plain helpers the test modules and conftest.py share: volumes, tiny models, the CLI."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

TINY_NETWORK = "tiny-x2"  # the untrained tiny GAN generator (z x2, halo 5) `tiny_library` holds


def smooth(rng, shape=(8, 32, 32), scale=1000.0, offset=10.0, sigma=1.5) -> np.ndarray:
    """Gaussian-filtered noise rescaled to ``offset .. offset + scale``, float32."""
    vol = ndimage.gaussian_filter(rng.random(shape), sigma)
    return ((vol - vol.min()) / np.ptp(vol) * scale + offset).astype(np.float32)


def noisy_pair(rng, shape=(16, 48, 48), noise=15.0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy raw, clean target): a smooth volume in 20..220 plus Gaussian noise, float32."""
    clean = smooth(rng, shape, scale=200.0, offset=20.0)
    noisy = (clean + rng.normal(0, noise, clean.shape)).astype(np.float32)
    return noisy, clean


def save_tiny(folder: Path, family="gan", z_factor=2, *, seed=0, network=None, history=None,
              **fields) -> Path:
    """Save an untrained tiny model of ``family`` in ``folder``; returns the folder.

    ``network`` overrides preset fields, ``fields`` go to ``ModelConfig`` (the task follows
    the z-factor unless given). Seeded, so two calls save the same weights.
    """
    import torch

    from napari_volsr.engine.config import ModelConfig
    from napari_volsr.engine.models import save_model
    from napari_volsr.engine.registry import build_network, network_config

    torch.manual_seed(seed)
    task = fields.pop("task", "restore" if z_factor == 1 else "upsample")
    config = ModelConfig(name=folder.name, task=task, z_factor=z_factor,
                         network=network_config(family, "tiny", **(network or {})), **fields)
    net = build_network(config)
    ema = net if family == "diffusion" else None  # diffusion models restore with their EMA
    return save_model(folder, config, net, ema_net=ema, history=history)


def records_and_result(generator) -> tuple[list, object]:
    """Run a progress generator to the end: (every record it yielded, the value it returned)."""
    records = []
    while True:
        try:
            records.append(next(generator))
        except StopIteration as stop:
            return records, stop.value


def zoo_test(package: Path):
    """Run ``bioimageio.core.test_model`` on ``package`` and assert that it passes.

    bioimageio.core calls ``gc.collect()`` each time it unloads a model (twice per weight
    format and check) to hand back GPU memory. In a test process holding napari, Qt and
    torch each of those full collections costs about a second, most of the check's time,
    and frees nothing the check looks at, so it is skipped here.
    """
    from unittest import mock

    from bioimageio.core import test_model

    with mock.patch("gc.collect", return_value=0):
        summary = test_model(package)
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    return summary


def digest(path: Path) -> str:
    """Content hash of a file or a folder tree (a zarr store)."""
    h = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``volsr`` in this process: (exit status, stdout, stderr)."""
    from napari_volsr.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(stderr: str) -> str:
    """The one ``volsr: error:`` line a failure prints (never a traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("volsr: error:"), stderr
    return lines[0]


class ProcessOutput:
    """The lines a subprocess prints, read on a thread as they come.

    Start the process with ``stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True``.
    ``wait_for`` blocks on the next line instead of sleeping and polling, so a test sends
    its signal as soon as the progress line it needs is out.
    """

    def __init__(self, proc):
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)  # end of output: the process has exited

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, found: Callable[[str], object], timeout=120.0) -> str:
        """The first new line for which ``found`` is true; fails if output ends or time is up."""
        deadline = time.monotonic() + timeout  # a guard against a hang, not a speed check
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s:\n{self.text}") from None
            if line is None:
                raise AssertionError(f"the process exited first:\n{self.text}")
            if found(line):
                return line

    def join(self, timeout=10.0):
        self._thread.join(timeout=timeout)


def output_reach(net, x, centres, must_change: bool = False):
    """Largest distance (input voxels, per axis) of an output ``net`` changes for one input voxel.

    Each output voxel is owned by the input voxel ``index // factor`` on every axis (the
    slab grid); ``must_change``: every bump must change some output.
    """
    import itertools

    import torch

    factors = torch.tensor(net.factors)
    reach = torch.zeros(x.ndim - 2, dtype=torch.long)
    with torch.no_grad():
        base = net(x)
        # Both signs: a ReLU or a max that ignores a rise may pass a fall.
        for centre, bump in itertools.product(centres, (5.0, -5.0)):
            bumped = x.clone()
            bumped[(0, 0, *centre)] += bump
            changed = (net(bumped) != base)[0, 0].nonzero()
            if must_change:
                assert len(changed) > 0
            owners = changed // factors
            reach = torch.maximum(reach, (owners - torch.tensor(centre)).abs().amax(dim=0))
    return reach
