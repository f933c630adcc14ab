"""Shared pytest fixtures.

- ``x64``: run a test with 64-bit JAX types (for float64 references of the numerical checks).
- ``mnist_data_dir``: the prepared tensorflow-datasets folder named by ``TFDS_DATA_DIR``; tests
  that need MNIST skip with a reason when it is not configured (CI always sets it).

Compilation dominates the suite's run time on a CPU, and several tests compile the same
computation again (a resumed run, a second ``Trainer``): a persistent XLA compilation cache in a
fresh temporary folder per session lets those hits skip the compiler. It never outlives the
session, so results cannot depend on an earlier run.
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


def pytest_unconfigure(config):
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)


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
