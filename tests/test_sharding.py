"""Data parallelism: 8 CPU devices and 2 processes give the single-device result, in training
and in sampling (``sample(..., mesh=...)``).

The multi-device runs need ``XLA_FLAGS`` / ``jax.distributed`` set before JAX starts, so they run
in subprocesses (tests/_two_process_worker.py), launched together by one module fixture while
this process computes the single-device reference. That works when the whole suite shares one
pytest process: nothing here changes this process's JAX configuration.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdiff import sharding
from jaxdiff.schedules import make_schedule
from jaxdiff.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_two_process_worker.py")
TIMEOUT_S = 480  # generous: the CPU may be shared; a normal run takes seconds

_spec = importlib.util.spec_from_file_location("_two_process_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = ""  # the worker adds its own device count
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # no compilation cache (conftest.py passes one on): on CPUs, processes of one multi-process
    # run that load a collective program from it and compile it afresh deadlock
    for name in (
        "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
        "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    ):  # fmt: skip
        env.pop(name, None)
    return env


def _launch(args: list[str], out: Path, tag: str) -> subprocess.Popen:
    log = open(out / f"{tag}.log", "w")  # closed in _wait
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), *args, "--out", str(out)],
        env=_env(),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log = log
    proc.log_path = out / f"{tag}.log"
    return proc


def _wait(procs: list[subprocess.Popen], deadline: float) -> list[tuple[int | None, str]]:
    """Wait for every process until ``deadline``; kill the ones still running. Returns
    ``(returncode or None if killed, log text)`` per process."""
    results = []
    for proc in procs:
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        proc.log.close()
        results.append((rc, proc.log_path.read_text()[-4000:]))
    return results


def _start_two_process(out: Path) -> list[subprocess.Popen]:
    port = _free_port()
    common = ["multihost", "--num-processes", "2", "--port", str(port)]
    common += ["--devices-per-process", "2"]
    return [_launch([*common, "--process-id", str(i)], out, f"multihost_{i}") for i in range(2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start the 8-device and the 2-process runs, compute the single-device reference here."""
    eight_dir = tmp_path_factory.mktemp("eight")
    multi_dir = tmp_path_factory.mktemp("multihost")
    deadline = time.monotonic() + TIMEOUT_S
    eight = _launch(["eight", "--devices-per-process", "8"], eight_dir, "eight")
    multi = _start_two_process(multi_dir)

    params, apply = worker.tiny_model()
    schedule = make_schedule("linear", num_steps=50)
    trainer = Trainer(
        apply,
        schedule,
        worker.sequence_config(),
        mesh=sharding.make_mesh(jax.devices()[:1]),
    )
    state, losses = worker.run_sequence(trainer, params)
    reference = {
        "params": worker.local_leaves(state.params),
        "losses": losses,
        "samples": worker.sample_all(apply, state.params, schedule),  # one device
    }

    multi_results = _wait(multi, deadline)
    if any(rc not in (0, worker.GLOO_UNAVAILABLE) for rc, _ in multi_results) and any(
        "address already in use" in log.lower() for _, log in multi_results
    ):  # the free port was taken between probing and binding: try once more
        multi_results = _wait(_start_two_process(multi_dir), deadline)
    return {
        "reference": reference,
        "eight": (_wait([eight], deadline)[0], eight_dir),
        "multihost": (multi_results, multi_dir),
    }


def _load_params(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def _assert_params_close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_eight_devices_equal_single_device(runs):
    (rc, log), out = runs["eight"]
    assert rc == 0, f"8-device worker failed (rc={rc}):\n{log}"
    result = json.loads((out / "result_0.json").read_text())
    assert result["num_devices"] == 8
    assert result["step"] == 6
    _assert_params_close(_load_params(out / "params_0.npz"), runs["reference"]["params"])
    np.testing.assert_allclose(result["losses"], runs["reference"]["losses"], rtol=1e-5)


def _assert_samples_close(path: Path, reference: dict) -> None:
    # Each device runs the unsplit computation on its share of the examples with the same keys;
    # only XLA's rounding for the smaller batch shape may differ (float32, values of order 1).
    with np.load(path) as got:
        assert sorted(got.files) == sorted(reference)
        for name, want in reference.items():
            assert got[name].shape == want.shape, name
            np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-5, err_msg=name)


def test_sampling_over_eight_devices_equals_one_device(runs):
    (rc, log), out = runs["eight"]
    assert rc == 0, f"8-device worker failed (rc={rc}):\n{log}"
    _assert_samples_close(out / "samples_0.npz", runs["reference"]["samples"])
    # Each device samples its own examples: the compiled loop has no cross-device traffic.
    result = json.loads((out / "result_0.json").read_text())
    collectives = result["sampling_collectives"]
    assert collectives and not any(collectives.values()), collectives
    assert sum(result["control_collectives"].values()) > 0  # the count sees a collective


def test_indivisible_batch_names_both_numbers(runs):
    (rc, log), out = runs["eight"]
    assert rc == 0, f"8-device worker failed (rc={rc}):\n{log}"
    message = json.loads((out / "result_0.json").read_text())["indivisible_error"]
    assert message is not None, "a batch of 12 on 8 devices did not raise"
    assert "12" in message and "8" in message and "multiple of 8" in message


def test_two_processes_equal_single_process(runs):
    results, out = runs["multihost"]
    if all(rc == worker.GLOO_UNAVAILABLE for rc, _ in results):
        pytest.skip(f"this jaxlib has no gloo CPU collectives:\n{results[0][1]}")
    for i, (rc, log) in enumerate(results):
        assert rc == 0, f"process {i} failed (rc={rc}, None = killed after timeout):\n{log}"
    reference = runs["reference"]
    leaves = [_load_params(out / f"params_{i}.npz") for i in range(2)]
    for i in range(2):
        result = json.loads((out / f"result_{i}.json").read_text())
        assert result["process_index"] == i
        assert result["process_count"] == 2
        assert result["num_devices"] == 4 and result["num_local_devices"] == 2
        assert result["step"] == 6
        np.testing.assert_allclose(result["losses"], reference["losses"], rtol=1e-5)
        _assert_params_close(leaves[i], reference["params"])
    for a, b in zip(*leaves, strict=True):  # the replicas agree bit for bit
        np.testing.assert_array_equal(a, b)
    # Sampling split over both processes' devices: each process gathers the same whole result.
    for i in range(2):
        _assert_samples_close(out / f"samples_{i}.npz", reference["samples"])
    with np.load(out / "samples_0.npz") as a, np.load(out / "samples_1.npz") as b:
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # Only the main process writes files.
    assert (out / "main_only.txt").read_text().startswith("written by process 0 of 2")


def test_single_process_helpers():
    assert sharding.is_main_process()
    assert sharding.process_index() == 0 and sharding.process_count() == 1
    mesh = sharding.make_mesh(jax.devices()[:1])
    assert mesh.axis_names == (sharding.DATA_AXIS,)
    assert sharding.batch_sharding(mesh).spec == jax.sharding.PartitionSpec("data")
    assert sharding.batch_sharding(mesh, stacked=True).spec == jax.sharding.PartitionSpec(
        None, "data"
    )
    assert sharding.replicated_sharding(mesh).spec == jax.sharding.PartitionSpec()
    batch = {"x": np.ones((4, 3), np.float32), "labels": np.arange(4, dtype=np.int32)}
    placed = sharding.shard_batch(batch, mesh)
    assert isinstance(placed["x"], jax.Array) and placed["x"].shape == (4, 3)
    np.testing.assert_array_equal(placed["labels"], batch["labels"])
    with pytest.raises(ValueError, match="share the example axis"):
        sharding.shard_batch({"x": np.ones((4, 3)), "labels": np.ones(5)}, mesh)
    with pytest.raises(ValueError, match="empty"):
        sharding.make_mesh([])
    # place: whole values onto a sharding; a leaf already there is kept, not copied.
    rep = sharding.replicated_sharding(mesh)
    placed = sharding.place({"a": np.arange(3.0), "b": placed["x"]}, rep)
    assert placed["a"].sharding.is_equivalent_to(rep, 1)
    assert sharding.place(placed, rep)["a"] is placed["a"]
    whole = sharding.gather(placed)
    assert isinstance(whole["a"], np.ndarray) and whole["a"].tolist() == [0.0, 1.0, 2.0]


def test_initialize_distributed_validates_ids():
    with pytest.raises(ValueError, match=r"process_id must lie in \[0, num_processes\)"):
        sharding.initialize_distributed("127.0.0.1:1", 2, 5, cpu_collectives=None)
