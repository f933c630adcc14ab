"""MNIST on a fresh machine: the IDX files downloaded, verified and cached, with no TensorFlow.

All offline. The "network" is a local HTTP server on 127.0.0.1 (or a ``file://`` URL) serving IDX
``.gz`` files built from the prepared tensorflow-datasets copy (in its record order, so the loader
must return exactly the same arrays), with their checksums given through ``JAXDIFF_MNIST_SHA256``.
The server can answer with errors, truncated bodies, stalls and a body that stops half-way until
the test releases it, to reproduce every failure mode; after each failure the cache must hold
nothing, and a run that was killed leaves only a temporary file that the next run removes.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _mnist_mirror import NAMES, u8, write_mirror

from jaxdiff import data
from jaxdiff.accelerator import nvidia_gpu_visible, unused_gpu_message
from jaxdiff.data.download import FileSpec, fetch, parse_checksums
from jaxdiff.data.idx import decode_idx, encode_idx, gunzip_idx

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """A local HTTP server over a folder; ``faults[name]`` lists what the next requests get."""

    def __init__(self, folder: Path):
        self.folder, self.faults, self.requests = folder, {}, []
        self.hanging, self.release = threading.Event(), threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append(name)
                fault = server.faults.get(name, []).pop(0) if server.faults.get(name) else None
                if isinstance(fault, int):
                    self.send_error(fault)
                    return
                path = server.folder / name
                if not path.is_file():
                    self.send_error(404)
                    return
                body = path.read_bytes()
                if fault == "stall":
                    time.sleep(1.5)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if fault == "hang":  # half the body, then nothing until the test releases it
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    server.hanging.set()
                    server.release.wait(60)
                    self.close_connection = True
                    return
                if fault == "slow":  # let concurrent downloads overlap
                    for i in range(0, len(body), len(body) // 4 + 1):
                        self.wfile.write(body[i : i + len(body) // 4 + 1])
                        time.sleep(0.1)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(mnist_mirror):
    s = Server(mnist_mirror)
    yield s
    s.close()


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A user's fresh machine: empty HOME and cache, no TFDS_DATA_DIR. Returns the cache root."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.delenv("JAXDIFF_MNIST_URL", raising=False)
    monkeypatch.delenv("JAXDIFF_MNIST_SHA256", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("JAXDIFF_CACHE_DIR", str(cache))
    return cache


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# The happy path
# --------------------------------------------------------------------------------------------------


def test_download_equals_the_prepared_copy_bit_for_bit(
    server, mnist_mirror, mnist_arrays, fresh, monkeypatch
):
    monkeypatch.setenv("JAXDIFF_MNIST_URL", server.url)
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(mnist_mirror / "checksums.tsv"))
    for split in ("test", "train"):
        images, labels, source = data.load_mnist(split, progress=False, return_source=True)
        ref_images, ref_labels = mnist_arrays[split]
        np.testing.assert_array_equal(u8(images), ref_images)
        np.testing.assert_array_equal(labels, ref_labels)
        assert labels.dtype == np.int32 and images.dtype == np.float32
        assert images.min() == -1.0 and images.max() == 1.0
        assert server.url in source and "downloaded now" in source
    assert sorted(server.requests) == sorted(NAMES["test"] + NAMES["train"])
    assert _files(fresh) == ["datasets/mnist/idx/test.npz", "datasets/mnist/idx/train.npz"]

    # Later runs read the cache: no request, well under a second, the same arrays.
    server.requests.clear()
    start = time.perf_counter()
    images, labels, source = data.load_mnist("train", return_source=True)
    assert time.perf_counter() - start < 1.0
    assert server.requests == [] and "cached in" in source
    np.testing.assert_array_equal(u8(images), mnist_arrays["train"][0])
    # Slices and limits apply to the cached split as to the prepared copy.
    sliced, _ = data.load_mnist("train[:90%]", limit=10)
    np.testing.assert_array_equal(u8(sliced), mnist_arrays["train"][0][:10])
    _, tail_labels = data.load_mnist("test[-25:]")
    np.testing.assert_array_equal(tail_labels, mnist_arrays["test"][1][-25:])


def test_file_urls_and_the_official_order_of_fashion_mnist(tmp_path, fresh, monkeypatch):
    rng = np.random.default_rng(0)
    splits = {
        s: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n))
        for s, n in (("train", 30), ("test", 12))
    }
    table = write_mirror(tmp_path / "fashion", splits)
    monkeypatch.setenv("JAXDIFF_FASHION_MNIST_URL", (tmp_path / "fashion").as_uri())
    monkeypatch.setenv("JAXDIFF_FASHION_MNIST_SHA256", str(table))
    images, labels, source = data.load_mnist(
        "train", dataset="fashion_mnist", image_size=32, progress=False, return_source=True
    )
    assert images.shape == (30, 32, 32, 1) and "Fashion-MNIST IDX files from file://" in source
    np.testing.assert_array_equal(labels, splits["train"][1])
    images28, _ = data.load_mnist("train", dataset="fashion_mnist")
    np.testing.assert_array_equal(u8(images28), splits["train"][0])  # file order, exactly
    assert _files(fresh) == ["datasets/fashion_mnist/idx/train.npz"]


def test_the_tfds_default_folder_is_used_when_it_holds_a_copy(mnist_data_dir, fresh, tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "tensorflow_datasets").symlink_to(Path(mnist_data_dir).absolute())
    _, labels, source = data.load_mnist("test", limit=5, return_source=True)
    assert source.startswith("tensorflow-datasets mnist") and labels.shape == (5,)


def test_two_runs_downloading_at_once_both_succeed(server, mnist_mirror, fresh, monkeypatch):
    monkeypatch.setenv("JAXDIFF_MNIST_URL", server.url)
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(mnist_mirror / "checksums.tsv"))
    server.faults = {name: ["slow", "slow"] for name in NAMES["test"]}
    results, errors = [], []

    def run():
        try:
            results.append(data.load_mnist("test", progress=False))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    assert server.requests.count(NAMES["test"][0]) == 2  # both really downloaded
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert _files(fresh) == ["datasets/mnist/idx/test.npz"]  # one whole file, no temporaries
    np.testing.assert_array_equal(data.load_mnist("test")[1], results[0][1])


# --------------------------------------------------------------------------------------------------
# Failure modes: one line naming the file and the fix, nothing left in the cache
# --------------------------------------------------------------------------------------------------


def _load_error(**kwargs) -> str:
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_mnist("test", progress=False, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert "shared" not in message and "workspace" not in message
    return message


def test_no_network(fresh, monkeypatch):
    monkeypatch.setenv("JAXDIFF_MNIST_URL", "http://127.0.0.1:9/")  # nothing listens there
    message = _load_error()
    assert "t10k-images-idx3-ubyte.gz" in message and "could not be reached" in message
    assert "JAXDIFF_MNIST_URL" in message and "--data-dir" in message
    assert _files(fresh) == []


def test_http_error_is_not_retried_but_a_server_error_is(server, mnist_mirror, fresh, monkeypatch):
    monkeypatch.setenv("JAXDIFF_MNIST_URL", server.url)
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(mnist_mirror / "checksums.tsv"))
    server.faults = {NAMES["test"][0]: [404]}
    message = _load_error()
    assert "HTTP 404" in message and NAMES["test"][0] in message
    assert server.requests == [NAMES["test"][0]] and _files(fresh) == []

    server.requests.clear()
    server.faults = {NAMES["test"][0]: [503]}
    data.load_mnist("test", progress=False)
    assert server.requests == [NAMES["test"][0], NAMES["test"][0], NAMES["test"][1]]


def test_wrong_checksum_discards_the_file(server, mnist_mirror, fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("JAXDIFF_MNIST_URL", server.url)
    table = parse_checksums((mnist_mirror / "checksums.tsv").read_text(), "table")
    spec = table[NAMES["test"][1]]
    bad = tmp_path / "bad.tsv"
    bad.write_text(
        "".join(f"{s.name}\t{s.size}\t{s.sha256}\n" for s in table.values() if s != spec)
        + f"{spec.name}\t{spec.size}\t{'0' * 64}\n"
    )
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(bad))
    message = _load_error()
    assert f"{spec.name} from {server.url}" in message and "SHA-256" in message
    assert "JAXDIFF_MNIST_SHA256" in message
    assert _files(fresh) == []


def test_the_official_checksums_apply_to_every_mirror(server, fresh, monkeypatch):
    monkeypatch.setenv("JAXDIFF_MNIST_URL", server.url)  # no JAXDIFF_MNIST_SHA256
    message = _load_error()
    assert "expected 1,648,877" in message  # the official size of t10k-images-idx3-ubyte.gz
    assert _files(fresh) == []


def test_a_truncated_download_is_retried_once_and_never_cached(
    server, mnist_mirror, fresh, monkeypatch
):
    monkeypatch.setenv("JAXDIFF_MNIST_URL", server.url)
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(mnist_mirror / "checksums.tsv"))
    name = NAMES["test"][0]
    server.faults = {name: ["truncate", "truncate"]}
    message = _load_error()
    assert "truncated twice" in message and name in message
    assert server.requests == [name, name] and _files(fresh) == []

    server.requests.clear()
    server.faults = {name: ["truncate"]}  # once: the retry succeeds
    data.load_mnist("test", progress=False)
    assert server.requests == [name, name, NAMES["test"][1]]


def test_an_interrupted_transfer_is_retried(server, mnist_mirror):
    name = NAMES["test"][1]
    spec = parse_checksums((mnist_mirror / "checksums.tsv").read_text(), "table")[name]
    server.faults = {name: ["stall"]}  # the first answer comes after the timeout
    body = fetch(server.url + name, spec, fix="", progress=False, timeout=0.5)
    assert hashlib.sha256(body).hexdigest() == spec.sha256
    server.faults = {name: ["stall", "stall"]}
    with pytest.raises(data.DownloadError, match="interrupted"):
        fetch(server.url + name, spec, fix="", progress=False, timeout=0.5)


def test_ctrl_c_during_a_download_leaves_nothing(server, mnist_mirror, fresh, monkeypatch):
    monkeypatch.setenv("JAXDIFF_MNIST_URL", server.url)
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(mnist_mirror / "checksums.tsv"))
    server.faults = {NAMES["test"][0]: ["hang"]}
    during = []

    def press_ctrl_c():  # once the body stops half-way, as a user's Ctrl-C would
        if server.hanging.wait(60):
            during.extend(_files(fresh))
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            data.load_mnist("test", progress=False)
    finally:
        presser.join()
        server.release.set()
    assert len(during) == 1 and during[0].endswith(".part")  # the cache file being prepared
    assert _files(fresh) == []


def test_the_next_run_removes_what_a_killed_download_left(server, mnist_mirror, fresh, monkeypatch):
    monkeypatch.setenv("JAXDIFF_MNIST_URL", server.url)
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(mnist_mirror / "checksums.tsv"))
    server.faults = {NAMES["test"][0]: ["hang"]}
    code = "from jaxdiff import data; data.load_mnist('test', progress=False)"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        assert server.hanging.wait(120), "the download never started"
    finally:
        run.kill()  # SIGKILL: no clean-up code runs
        run.wait()
        server.release.set()
    folder = fresh / "datasets" / "mnist" / "idx"
    (orphan,) = folder.glob(".*.part")
    assert orphan.stat().st_size == 0
    live = folder / ".test.npz.live.part"  # a concurrent run, still downloading: its lock is held
    fd = os.open(live, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for path in (orphan, live):  # the next run comes a minute later (a file touched in the
            os.utime(
                path, (time.time() - 60,) * 2
            )  # last seconds may be a writer's, not yet locked)
        server.faults = {}
        data.load_mnist("test", progress=False)
        assert _files(fresh) == [
            "datasets/mnist/idx/.test.npz.live.part",
            "datasets/mnist/idx/test.npz",
        ]
    finally:
        os.close(fd)


def test_an_unwritable_cache_fails_before_downloading(
    server, mnist_mirror, fresh, monkeypatch, tmp_path
):
    monkeypatch.setenv("JAXDIFF_MNIST_URL", server.url)
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(mnist_mirror / "checksums.tsv"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    message = _load_error(cache_dir=blocker / "cache")
    assert str(blocker / "cache") in message and "JAXDIFF_CACHE_DIR" in message
    assert server.requests == []


def test_bad_overrides_are_clear_errors(fresh, monkeypatch, tmp_path):
    table = tmp_path / "sums.tsv"
    table.write_text("t10k-images-idx3-ubyte.gz 1648877 abc\n")
    monkeypatch.setenv("JAXDIFF_MNIST_URL", "file:///nowhere/")
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(table))
    assert "line 1" in _load_error() and "<TAB>" in _load_error()
    table.write_text(f"t10k-images-idx3-ubyte.gz\t1\t{'a' * 64}\n")
    assert "no line for t10k-labels-idx1-ubyte.gz" in _load_error()
    monkeypatch.setenv("JAXDIFF_MNIST_URL", "ftp://example.invalid/mnist")
    assert "http://, https:// or file://" in _load_error()
    monkeypatch.delenv("JAXDIFF_MNIST_URL")
    assert "downloading is off" in _load_error(download=False)
    assert _files(fresh) == []


def test_a_named_folder_never_downloads(fresh, tmp_path):
    message = _load_error(data_dir=tmp_path / "nowhere")
    assert "No prepared MNIST" in message and "name no folder at all to download" in message
    assert _files(fresh) == []


def test_the_experiment_prints_data_errors_without_its_usage(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "JAXDIFF_CACHE_DIR": str(tmp_path / "cache"),
        "JAXDIFF_MNIST_URL": "http://127.0.0.1:9/",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-m", "experiments.mnist", "--out", str(tmp_path / "run")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "could not be reached" in lines[0], result.stderr
    assert "usage:" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# The IDX format
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(dtype):
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    raw = encode_idx(arr)
    assert raw[:4] == bytes([0, 0, raw[2], 3]) and len(raw) == 4 + 12 + arr.nbytes
    out = decode_idx(raw)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(gunzip_idx(gzip.compress(raw)), arr)


def test_idx_rejects_bad_files():
    raw = encode_idx(np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="not an IDX file"):
        decode_idx(b"\x1f\x8b" + raw[2:])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        decode_idx(raw[:-1])
    with pytest.raises(ValueError, match="not a valid gzip file"):
        gunzip_idx(raw)
    with pytest.raises(ValueError, match="IDX cannot store"):
        encode_idx(np.zeros(3, np.uint64))


def test_the_official_checksum_tables_are_complete():
    for ds in data.IDX_DATASETS.values():
        assert sorted(ds.files) == sorted(NAMES["train"] + NAMES["test"])
        assert all(isinstance(s, FileSpec) and s.size > 1000 for s in ds.files.values())


# --------------------------------------------------------------------------------------------------
# The install reaches the accelerator
# --------------------------------------------------------------------------------------------------


def test_an_unused_gpu_is_named_with_the_install_command(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    probe = {"device_files": (), "smi": str(smi)}
    message = unused_gpu_message("cpu", **probe)
    assert message and 'pip install -e ".[cuda12]"' in message and "CPU" in message
    assert unused_gpu_message("gpu", **probe) is None
    assert unused_gpu_message("cpu", device_files=(), smi=str(tmp_path / "none")) is None
    assert nvidia_gpu_visible(device_files=(str(smi),), smi="no-such-program")
    broken = tmp_path / "broken-smi"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    broken.chmod(0o755)
    assert not nvidia_gpu_visible(device_files=(), smi=str(broken))


def test_bench_vs_torch_refuses_to_time_a_cpu_as_a_gpu():
    result = subprocess.run(
        [sys.executable, "benchmarks/pytorch/bench_vs_torch.py", "--worker", "jax",
         "--recipe", "moons", "--device", "cuda", "--steps", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "JAX has no GPU backend" in result.stderr


def test_no_tensorflow_in_any_dependency_list():
    text = (ROOT / "pyproject.toml").read_text()
    deps = [line for line in text.splitlines() if "tensorflow" in line.lower()]
    assert deps == ['    "tensorflow-datasets>=4.9.7",'], deps


def test_the_readme_data_snippet_runs_on_a_fresh_machine(mnist_mirror, fresh, monkeypatch, capsys):
    """README's ``py`` block on loading MNIST (not run by test_readme.py: it needs the data)."""
    import re

    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```py\n(.*?)```", readme, re.S) if "load_mnist" in b]
    monkeypatch.setenv("JAXDIFF_MNIST_URL", mnist_mirror.as_uri())
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(mnist_mirror / "checksums.tsv"))
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.startswith("MNIST IDX files from file://")
