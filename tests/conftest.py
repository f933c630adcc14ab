"""Shared pytest fixtures.

- ``x64``: run a test with 64-bit JAX types (for float64 references of the numerical checks).
- ``mnist_data_dir``: the prepared tensorflow-datasets folder named by ``TFDS_DATA_DIR``; tests
  that need MNIST skip with a reason when it is not configured (CI always sets it).
- ``mnist_arrays`` / ``mnist_mirror``: its uint8 arrays, and a folder of IDX ``.gz`` files made
  from them (with ``checksums.tsv``) that the download tests serve over 127.0.0.1 or ``file://``.

Compilation dominates the suite's run time on a CPU, and several tests compile the same
computation again (a resumed run, a second ``Trainer``, the experiments' subprocesses that train
with the same settings): a persistent XLA compilation cache in a fresh temporary folder per
pytest process lets those hits skip the compiler. ``JAX_COMPILATION_CACHE_DIR`` hands it to the
subprocesses the tests start (the multi-process runs drop it: on CPUs a process that loads a
collective program from the cache and one that compiles it deadlock, see
``jaxdiff.xla_options.enable_compilation_cache``). It never outlives the session, so results
cannot depend on an earlier run; the executables are the same either way.

Parallel workers (pytest-xdist, ``--numprocesses=2 --dist=loadfile`` in pyproject.toml's
addopts): all tests of a file run on one worker, one after another, so a module-scoped fixture
(a trained checkpoint, a compiled program) is computed once. ``-n 0`` (or ``-p no:xdist``) runs
everything in this process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

_XLA_CACHE = tempfile.mkdtemp(prefix="jaxdiff-test-xla-cache-")
jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"

# jaxdiff's own cache (decoded MNIST, feature classifiers) lives in a fresh folder per session too,
# inherited by the experiments' subprocesses: no test reads what an earlier run or the user left.
_JAXDIFF_CACHE = tempfile.mkdtemp(prefix="jaxdiff-test-cache-")
os.environ["JAXDIFF_CACHE_DIR"] = _JAXDIFF_CACHE


def pytest_unconfigure(config):
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)
    shutil.rmtree(_JAXDIFF_CACHE, ignore_errors=True)


def pytest_addoption(parser, pluginmanager):
    """Without pytest-xdist (``-p no:xdist``) accept its options from pyproject.toml's addopts
    and run every test in this process."""
    if not pluginmanager.has_plugin("xdist"):
        group = parser.getgroup("xdist (not loaded)")
        group.addoption("--numprocesses", dest="numprocesses", default=None,
                        help="ignored: pytest-xdist is not loaded")  # fmt: skip
        group.addoption("--dist", dest="dist", default=None,
                        help="ignored: pytest-xdist is not loaded")  # fmt: skip


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def mnist_data_dir() -> Path:
    value = os.environ.get("TFDS_DATA_DIR")
    if not value:
        pytest.skip(
            "MNIST tests need a prepared tensorflow_datasets folder: set TFDS_DATA_DIR "
            "(e.g. TFDS_DATA_DIR=../shared/tensorflow_datasets)"
        )
    path = Path(value)
    if not list(path.glob("mnist/*/dataset_info.json")):
        pytest.skip(f"TFDS_DATA_DIR={value} holds no prepared mnist/<version>/ folder")
    return path


@pytest.fixture(scope="session")
def mnist_arrays(mnist_data_dir):
    """``{split: (uint8 images (N, 28, 28), int32 labels)}`` of the prepared copy, record order."""
    from _mnist_mirror import u8

    from jaxdiff.data import load_mnist

    out = {}
    for split in ("train", "test"):
        x, y = load_mnist(split, data_dir=mnist_data_dir)
        out[split] = (u8(x), y)
    return out


@pytest.fixture(scope="session")
def mnist_mirror(mnist_arrays, tmp_path_factory) -> Path:
    from _mnist_mirror import write_mirror

    folder = tmp_path_factory.mktemp("mnist-mirror")
    write_mirror(folder, mnist_arrays)
    return folder
