"""A wrong file given as samples (or labels) to the evaluation: one line that says what the file
is and what is expected (:func:`jaxdiff.evaluation.evaluate.load_sample_file`)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from jaxdiff.evaluation.evaluate import load_sample_file

EXPECTED = "pass the samples.npy that an experiment wrote, float32 (N, H, W, C) in [0, 1]"


def _text(path):
    path.write_text("0.1 0.2 0.3\n0.4 0.5 0.6\n")


def _npz(path):
    with path.open("wb") as f:
        np.savez(f, samples=np.zeros((4, 2), np.float32), labels=np.zeros(4, np.int32))


def _truncated(path):
    np.save(path, np.zeros((64, 8, 8, 1), np.float32))
    path.write_bytes(path.read_bytes()[:1000])


def _objects(path):
    np.save(path, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)


BAD_FILES = {
    "text": (_text, "is not a NumPy .npy file (it looks like text)"),
    "npz": (_npz, "is not a NumPy .npy file (it looks like a .npz archive (arrays: samples, lab"),
    "empty": (lambda path: path.write_bytes(b""), "is empty (0 bytes)"),
    "truncated": (_truncated, "is a damaged or truncated .npy file"),
    "objects": (_objects, "holds Python objects"),
    "pickle": (lambda path: path.write_bytes(pickle.dumps([1.0])), "it looks like a Python pickle"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_a_wrong_samples_file_says_what_it_is_and_what_is_expected(tmp_path, kind):
    write, fragment = BAD_FILES[kind]
    path = tmp_path / "samples.npy"
    write(path)
    with pytest.raises(ValueError) as info:
        load_sample_file(path)
    message = str(info.value)
    assert str(path) in message and fragment in message and EXPECTED in message, message
    assert "\n" not in message and "pickled (object) data" not in message and "<U1" not in message


def test_labels_name_what_labels_should_be(tmp_path):
    path = tmp_path / "labels.npy"
    _text(path)
    with pytest.raises(ValueError, match=r"pass the labels\.npy .* int \(N,\) class labels"):
        load_sample_file(path, "labels")


def test_a_missing_file_and_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"samples file .*missing\.npy does not exist"):
        load_sample_file(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match=r"cannot read samples file .* \(Is a directory\)"):
        load_sample_file(tmp_path)


def test_a_good_file_loads_as_saved(tmp_path):
    samples = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "samples.npy", samples)
    out = load_sample_file(tmp_path / "samples.npy")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, samples)
