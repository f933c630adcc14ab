"""IDX ``.gz`` mirrors for the download tests, built from arrays (no network, no official files).

The fixtures ``mnist_arrays`` and ``mnist_mirror`` (in conftest.py) build one from the prepared
tensorflow-datasets copy, in its record order, with a checksum table for ``JAXDIFF_MNIST_SHA256``.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from jaxdiff.data.idx import encode_idx

NAMES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def u8(images: np.ndarray) -> np.ndarray:
    """float32 ``(N, H, W, 1)`` in [-1, 1] -> the uint8 pixels ``(N, H, W)`` they came from."""
    return np.round((images[..., 0] + 1.0) * 127.5).astype(np.uint8)


def write_mirror(folder: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write IDX .gz files for ``{split: (uint8 images, labels)}`` and their checksum table
    (``<name>\\t<size>\\t<sha256>`` lines); returns the table's path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for split, (images, labels) in splits.items():
        for name, arr in zip(NAMES[split], (images, labels.astype(np.uint8)), strict=True):
            body = gzip.compress(encode_idx(arr), compresslevel=1, mtime=0)
            (folder / name).write_bytes(body)
            lines.append(f"{name}\t{len(body)}\t{hashlib.sha256(body).hexdigest()}")
    table = folder / "checksums.tsv"
    table.write_text("\n".join(lines) + "\n")
    return table
