"""Derived caches heal themselves: a truncated, bit-flipped or empty cache file is rebuilt from its
source with one warning line that names it, and the next run reads the rebuilt file quietly.

Covered: the decoded MNIST arrays (from the IDX download and from a prepared tensorflow-datasets
copy), the feature classifier's checkpoint and ``meta.json``, its reference features and the JSON
tables of :func:`jaxdiff.evaluation.cache.cached_json`. All offline (a ``file://`` mirror).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from _mnist_mirror import u8, write_mirror

from jaxdiff import data
from jaxdiff.data.mnist import DataCacheWarning
from jaxdiff.evaluation import cache as clf_cache
from jaxdiff.evaluation import features as clf_features
from jaxdiff.evaluation import training as clf_training


def _truncate(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def _flip(raw: bytes) -> bytes:
    middle = len(raw) // 2
    return raw[:middle] + bytes([raw[middle] ^ 0x01]) + raw[middle + 1 :]


DAMAGE = {"truncated": _truncate, "bit-flipped": _flip, "empty": lambda raw: b""}


def _damage(path: Path, how: str) -> None:
    path.write_bytes(DAMAGE[how](path.read_bytes()))


def _one_warning(record, category) -> str:
    """The single warning of ``category`` in ``record``: one line."""
    messages = [str(w.message) for w in record if issubclass(w.category, category)]
    assert len(messages) == 1, messages
    assert "\n" not in messages[0]
    return messages[0]


def _quiet(load):
    """``load()`` with every warning an error: a healed cache reads without one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load()


# --------------------------------------------------------------------------------------------------
# The decoded MNIST arrays
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def idx_mirror(tmp_path, monkeypatch):
    """A 12-image MNIST test split on a ``file://`` mirror: (cache root, images, labels)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 12)
    table = write_mirror(tmp_path / "mirror", {"test": (images, labels)})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setenv("JAXDIFF_MNIST_URL", (tmp_path / "mirror").as_uri())
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(table))
    monkeypatch.setenv("JAXDIFF_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache", images, labels


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_mnist_cache_is_downloaded_again(idx_mirror, how):
    cache, images, labels = idx_mirror
    data.load_mnist("test", progress=False)
    path = cache / "datasets" / "mnist" / "idx" / "test.npz"
    _damage(path, how)
    with pytest.warns(DataCacheWarning) as record:
        x, y, source = data.load_mnist("test", progress=False, return_source=True)
    message = _one_warning(record, DataCacheWarning)
    assert str(path) in message and "rebuilding it from the MNIST IDX files" in message
    assert "downloaded now" in source
    np.testing.assert_array_equal(u8(x), images)
    np.testing.assert_array_equal(y, labels)
    x, _, source = _quiet(lambda: data.load_mnist("test", return_source=True))
    assert "cached in" in source and "downloaded now" not in source
    np.testing.assert_array_equal(u8(x), images)
    assert sorted(p.name for p in path.parent.iterdir()) == ["test.npz"]


def test_a_damaged_mnist_cache_of_a_prepared_copy_is_decoded_again(mnist_data_dir, tmp_path):
    load = lambda: data.load_mnist(
        "test", data_dir=mnist_data_dir, cache_dir=tmp_path, limit=50, return_source=True
    )
    x_ref, y_ref, _ = load()
    (path,) = (tmp_path / "datasets" / "mnist").glob("tfds-*/test.npz")
    _damage(path, "bit-flipped")
    with pytest.warns(DataCacheWarning) as record:
        x, y, source = load()
    message = _one_warning(record, DataCacheWarning)
    assert str(path) in message and "rebuilding it from the tensorflow-datasets copy" in message
    assert "decoded once" in source
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert "decoded copy cached" in _quiet(load)[2]


# --------------------------------------------------------------------------------------------------
# The evaluation cache
# --------------------------------------------------------------------------------------------------

TINY_DIGITS = dataclasses.replace(
    clf_features.CLASSIFIER_SPECS["digits"], version="test-heal", epochs=1, min_test_accuracy=0.0
)


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    """A one-epoch digits classifier cached once, with its 8x8 references: (cache, classifier)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(clf_features.CLASSIFIER_SPECS, "digits", TINY_DIGITS)
        cache = tmp_path_factory.mktemp("eval-cache")
        clf = clf_cache.load_classifier("digits", cache_dir=cache, progress=False)
        clf_cache.reference_features(clf, cache_dir=cache)
        yield cache, clf


@pytest.fixture
def work_cache(digits_cache, tmp_path, monkeypatch):
    """A copy of the digits cache to damage, in a fresh process (nothing loaded in memory);
    retraining returns the same classifier under the cache id ``"retrained"``."""
    import shutil

    cache, clf = digits_cache
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    monkeypatch.setitem(clf_features.CLASSIFIER_SPECS, "digits", TINY_DIGITS)
    monkeypatch.setattr(clf_cache, "_LOADED", {})
    retrained = dataclasses.replace(clf, meta={**clf.meta, "cache_id": "retrained"})
    monkeypatch.setattr(clf_training, "train_classifier", lambda kind, **kwargs: retrained)
    return work, clf


def _load(cache: Path):
    return clf_cache.load_classifier("digits", cache_dir=cache, progress=False)


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_classifier_checkpoint_is_retrained(work_cache, how):
    work, _ = work_cache
    path = clf_cache.classifier_dir("digits", work)
    params = max(
        (f for f in (path / "params").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size
    )
    _damage(params, how)  # the largest file: the parameters themselves
    with pytest.warns(clf_cache.ClassifierCacheWarning) as record:
        assert _load(work).meta["cache_id"] == "retrained"
    assert str(path) in _one_warning(record, clf_cache.ClassifierCacheWarning)
    clf_cache._LOADED.clear()
    assert _quiet(lambda: _load(work)).meta["cache_id"] == "retrained"


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_meta_json_is_rewritten_from_the_checkpoint(work_cache, how):
    work, clf = work_cache
    meta = clf_cache.classifier_dir("digits", work) / "meta.json"
    original = meta.read_text()
    _damage(meta, how)
    with pytest.warns(clf_cache.ClassifierCacheWarning) as record:
        restored = _load(work)  # the checkpoint is intact: restored, not retrained
    assert restored.meta["cache_id"] == clf.meta["cache_id"]
    assert str(meta) in _one_warning(record, clf_cache.ClassifierCacheWarning)
    assert json.loads(meta.read_text()) == json.loads(original)
    clf_cache._LOADED.clear()
    _quiet(lambda: _load(work))


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_reference_features_are_recomputed(work_cache, how):
    work, _ = work_cache
    clf = _quiet(lambda: _load(work))
    path = clf_cache.classifier_dir("digits", work) / "reference-8.npz"
    before = clf_cache.reference_features(clf, cache_dir=work)
    _damage(path, how)
    with pytest.warns(clf_cache.ClassifierCacheWarning) as record:
        after = clf_cache.reference_features(clf, cache_dir=work)
    assert str(path) in _one_warning(record, clf_cache.ClassifierCacheWarning)
    np.testing.assert_array_equal(after.target_cov, before.target_cov)
    np.testing.assert_array_equal(after.real_features, before.real_features)
    again = _quiet(lambda: clf_cache.reference_features(clf, cache_dir=work))
    np.testing.assert_array_equal(again.noise_probs, before.noise_probs)


def _table(tmp_path: Path, calls: list):
    value = {"real": {"mmd": 0.25}, "noise": {"mmd": 1.5}}

    def compute():
        calls.append(1)
        return value

    return value, lambda: clf_cache.cached_json("t.json", "k", compute, cache_dir=tmp_path)


@pytest.mark.parametrize("how", [*DAMAGE, "a digit flipped"])
def test_a_damaged_json_table_is_recomputed(tmp_path, how):
    calls = []
    value, cached = _table(tmp_path, calls)
    assert cached() == value and _quiet(cached) == value and len(calls) == 1
    path = tmp_path / "t.json"
    if how == "a digit flipped":  # still valid JSON ('2' -> '3' is one bit): only the hash knows
        path.write_text(path.read_text().replace("0.25", "0.35"))
    else:
        _damage(path, how)
    with pytest.warns(clf_cache.ClassifierCacheWarning) as record:
        assert cached() == value
    assert str(path) in _one_warning(record, clf_cache.ClassifierCacheWarning)
    assert len(calls) == 2 and _quiet(cached) == value and len(calls) == 2


def test_a_json_table_without_its_checksum_is_recomputed(tmp_path):
    calls = []
    value, cached = _table(tmp_path, calls)
    (tmp_path / "t.json").write_text(json.dumps({"k": {"real": {"mmd": 9.0}}}))  # unverifiable
    with pytest.warns(clf_cache.ClassifierCacheWarning, match="no SHA-256"):
        assert cached() == value
    assert calls == [1] and _quiet(cached) == value
