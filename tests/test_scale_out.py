"""Streaming zarr output and dask.distributed restoration (DESIGN 10)."""

import dask
import numpy as np
import pytest
import torch

from napari_volsr.cli import main
from napari_volsr.engine import dask_restore
from napari_volsr.engine.config import ModelConfig
from napari_volsr.engine.io import Volume, read_volume, write_volume
from napari_volsr.engine.models import save_model
from napari_volsr.engine.predict import drain, restore
from napari_volsr.engine.registry import build_network, network_config
from napari_volsr.engine.restorers import get_restorer
from napari_volsr.engine.tiling import BlockPlan

BLOCKS = (6, 24, 24)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny RCAN x2 (random weights, seed 0): overlapping blocks are blended."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("lib") / "rcan2"
    config = ModelConfig(name="rcan2", task="upsample", z_factor=2,
                         network=network_config("rcan", "tiny"))
    save_model(folder, config, build_network(config))
    return folder


@pytest.fixture(scope="module")
def volume_files(tmp_path_factory):
    rng = np.random.default_rng(0)
    data = (rng.random((12, 40, 36)) * 1000).astype(np.uint16)
    folder = tmp_path_factory.mktemp("data")
    volume = Volume(data, (0.8, 0.2, 0.2), "ZYX", "µm")
    write_volume(folder / "in.zarr", volume)
    write_volume(folder / "in.tif", volume)
    return folder, data


@pytest.fixture(scope="module")
def reference(model_dir, volume_files):
    """Single-process, in-memory restoration with the same block plan."""
    _, data = volume_files
    return restore(data, get_restorer(str(model_dir)), block_shape=BLOCKS,
                   output_dtype="float32").data


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes on loopback, one thread each."""
    client = dask_restore.local_cluster_client(2)
    yield client
    cluster = client.cluster
    client.close()
    cluster.close()


def run(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cells_partition_the_output_and_name_their_blocks():
    plan = BlockPlan((12, 40, 36), BLOCKS, halo=2, z_factor=2, overlap=(3, 8, 8))
    for axis, cells in enumerate(dask_restore._cells(plan)):
        assert cells[0][0] == 0 and cells[-1][1] == plan.out_shape[axis]
        assert all(a[1] == b[0] for a, b in zip(cells, cells[1:]))
        assert all(ids == sorted(ids) and ids for _, _, ids in cells)  # plan order, covered


def test_graph_on_the_threaded_scheduler_equals_restore(model_dir, volume_files, reference):
    folder, data = volume_files
    restorer = get_restorer(str(model_dir))
    plan = BlockPlan(data.shape, BLOCKS, restorer.halo, 2, restorer.divisor, restorer.overlap)
    result = restore(data, restorer, block_shape=BLOCKS, output_dtype="float32")
    spec = dask_restore.RestorerSpec(str(model_dir))
    for source in (folder / "in.tif", data[None]):
        merged = dask_restore.restore_graph(source, spec, result.normalization, plan, 1, 1)
        with dask.config.set(scheduler="threads"):
            values = result.normalization[0].inverse(merged.compute()[0])
        np.testing.assert_allclose(values, reference, rtol=0, atol=1e-3)


def test_local_cluster_equals_single_process_and_loads_the_model_once(
        tmp_path, cluster, model_dir, volume_files, reference):
    folder, _ = volume_files
    spec = dask_restore.model_spec(str(model_dir), None)
    out = tmp_path / "out.zarr"
    result = drain(dask_restore.iter_restore_to_zarr(folder / "in.tif", spec, out, cluster,
                                                     block_shape=BLOCKS, output_dtype="float32"))
    written = read_volume(out)
    np.testing.assert_allclose(written.data, reference, rtol=0, atol=1e-3)
    assert written.spacing == pytest.approx((0.4, 0.2, 0.2))
    assert result.settings["workers"] == 2
    loads = cluster.run(lambda: dask_restore.worker_restorer.cache_info().misses)
    assert sorted(loads.values()) == [1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no temporaries


def test_cli_scheduler_address_and_zarr_input(capsys, tmp_path, cluster, model_dir, volume_files,
                                              reference):
    folder, _ = volume_files
    address = cluster.scheduler.address
    out = tmp_path / "out.zarr"
    code, stdout, stderr = run(capsys, "restore", "-i", str(folder / "in.zarr"), "-o", str(out),
                               "-m", str(model_dir), "--block-shape", "6,24,24",
                               "--scheduler", address, "--output-dtype", "uint16")
    assert code == 0, stderr
    assert "on 2 dask workers" in stdout
    written = read_volume(out)
    assert written.data.dtype == np.uint16
    expected = np.clip(np.rint(reference), 0, 65535)
    assert np.abs(written.data.astype(np.float64) - expected).max() <= 1


def test_cli_workers_starts_and_stops_a_local_cluster(capsys, tmp_path, volume_files):
    folder, data = volume_files
    out = tmp_path / "out.zarr"
    code, _, stderr = run(capsys, "restore", "-i", str(folder / "in.tif"), "-o", str(out),
                          "-m", "cubic", "--workers", "2", "--output-dtype", "float32", "-q")
    assert code == 0, stderr
    expected = restore(data, get_restorer("cubic", 4), output_dtype="float32").data
    np.testing.assert_allclose(read_volume(out).data, expected, rtol=0, atol=1e-3)


def test_streamed_zarr_output_equals_the_in_memory_result(capsys, tmp_path, model_dir,
                                                          volume_files, reference):
    folder, _ = volume_files
    out = tmp_path / "out.zarr"
    code, _, stderr = run(capsys, "restore", "-i", str(folder / "in.zarr"), "-o", str(out),
                          "-m", str(model_dir), "--block-shape", "6,24,24", "--output-dtype",
                          "float32", "-q")
    assert code == 0, stderr
    written = read_volume(out, lazy=True)
    assert written.metadata["source_format"] == "zarr"
    np.testing.assert_allclose(np.asarray(written.data), reference, rtol=0, atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # scratch merge removed


@pytest.mark.parametrize(
    ("extra", "output", "message"),
    [
        (["--workers", "2"], "out.tif", "name the output *.zarr"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "out.zarr", "not both"),
        (["--workers", "2", "--rescale", "REF"], "out.zarr", "--rescale needs the whole result"),
    ],
    ids=["tiff-output", "both-cluster-options", "rescale"],
)
def test_distributed_misuse_is_one_line_before_any_work(capsys, tmp_path, volume_files, extra,
                                                        output, message):
    folder, _ = volume_files
    extra = [str(folder / "in.tif") if e == "REF" else e for e in extra]
    code, _, stderr = run(capsys, "restore", "-i", str(folder / "in.tif"),
                          "-o", str(tmp_path / output), *extra)
    assert code == 1
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_workers_are_capped_by_cores_and_memory(capsys, tmp_path, volume_files, monkeypatch):
    import os

    started = []

    def local_cluster_client(n_workers):
        started.append(n_workers)
        raise RuntimeError("no cluster in this test")

    monkeypatch.setattr(dask_restore, "local_cluster_client", local_cluster_client)
    monkeypatch.setattr("napari_volsr.engine.devices.host_memory", lambda: 3.5 * 2**30)
    folder, _ = volume_files
    code, _, stderr = run(capsys, "restore", "-i", str(folder / "in.tif"), "-o",
                          str(tmp_path / "out.zarr"), "--workers", "1000")
    cap = min(os.cpu_count(), 3)  # about 1 GiB each
    assert started == [cap]
    assert stderr.splitlines()[0] == (
        f"volsr: warning: --workers: 1000 local workers are more than this machine can run "
        f"({os.cpu_count()} cores, 3.5 GiB of memory available, about 1 GiB per worker): "
        f"starting {cap}")
    assert dask_restore.cap_local_workers(cap) == (cap, None)

