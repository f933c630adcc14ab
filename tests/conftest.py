"""Shared pytest fixtures.

- ``x64``: run a test with 64-bit JAX types (for float64 references of the numerical checks).
- ``mnist_data_dir``: the prepared tensorflow-datasets folder named by ``TFDS_DATA_DIR``; tests
  that need MNIST skip with a reason when it is not configured (CI always sets it).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest


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
