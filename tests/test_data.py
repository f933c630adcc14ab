"""Tests for jaxdiff.data: MNIST (tfds array_record), digits, point clouds, mixtures, batching.

MNIST tests need a prepared tensorflow-datasets folder named by ``TFDS_DATA_DIR``; without it they
are skipped. Nothing here touches the network (tests/test_mnist_download.py covers downloads).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import data

# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_test(mnist_data_dir):
    return data.load_mnist("test", data_dir=mnist_data_dir)


# --------------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------------


def test_mnist_test_split(mnist_test):
    images, labels = mnist_test
    assert images.shape == (10_000, 28, 28, 1)
    assert images.dtype == np.float32
    assert labels.shape == (10_000,)
    assert labels.dtype == np.int32
    assert images.min() == -1.0 and images.max() == 1.0
    assert set(np.unique(labels)) == set(range(10))
    # pixel / 127.5 - 1: every value is one of the 256 grey levels
    levels = (images + 1.0) * 127.5
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    data.check_images(images)


def test_mnist_matches_tfds_decoding(mnist_test, mnist_data_dir):
    """The decoded (and cached) arrays give the same pixels and labels as TFDS's own decoding."""
    import tensorflow_datasets as tfds

    source = tfds.data_source("mnist", split="test", data_dir=mnist_data_dir, download=False)
    idx = list(range(0, 10_000, 37))
    records = source.__getitems__(idx)
    ref_images = np.stack([r["image"] for r in records])
    ref_labels = np.array([r["label"] for r in records])
    images, labels = mnist_test
    got = np.round((images[idx] + 1.0) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(got, ref_images)
    np.testing.assert_array_equal(labels[idx], ref_labels)


def test_mnist_limit_and_slices(mnist_test, mnist_data_dir):
    images, labels = data.load_mnist("test", data_dir=mnist_data_dir, limit=64)
    assert images.shape == (64, 28, 28, 1) and labels.shape == (64,)
    np.testing.assert_array_equal(images, mnist_test[0][:64])
    np.testing.assert_array_equal(labels, mnist_test[1][:64])
    # a TFDS slice works too, and a limit past the end returns what there is
    images, labels = data.load_mnist("test[9990:]", data_dir=mnist_data_dir, limit=100)
    assert images.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(labels, mnist_test[1][9990:])


@pytest.mark.parametrize(
    "spec", ["test[:90%]", "test[33.3%:66.6%]", "test[-10%:]", "test[100:-100]", "test[-5:]"]
)
def test_mnist_slices_follow_tfds(spec, mnist_data_dir):
    import tensorflow_datasets as tfds

    source = tfds.data_source("mnist", split=spec, data_dir=mnist_data_dir, download=False)
    images, labels = data.load_mnist(spec, data_dir=mnist_data_dir)
    assert len(labels) == len(source)
    for i in (0, len(source) - 1):
        assert labels[i] == source[i]["label"]
        got = np.round((images[i, ..., 0] + 1.0) * 127.5).astype(np.uint8)
        np.testing.assert_array_equal(got, source[i]["image"][..., 0])


@pytest.mark.parametrize("spec", ["test[1%:5]", "test[200%:]", "test[1.5:]", "test[:", "all"])
def test_mnist_bad_slices_raise_before_reading(spec, tmp_path):
    with pytest.raises(ValueError, match="split must be"):
        data.load_mnist(spec, data_dir=tmp_path)


def test_mnist_train_limit(mnist_data_dir):
    images, labels = data.load_mnist("train", data_dir=mnist_data_dir, limit=500)
    assert images.shape == (500, 28, 28, 1) and images.dtype == np.float32
    assert labels.dtype == np.int32 and 0 <= labels.min() and labels.max() <= 9
    assert -1.0 <= images.min() and images.max() <= 1.0


MNIST_TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.mark.slow
def test_mnist_full_train_split(mnist_data_dir):
    images, labels = data.load_mnist("train", data_dir=mnist_data_dir)
    assert images.shape == (60_000, 28, 28, 1)
    assert np.bincount(labels).tolist() == MNIST_TRAIN_CLASS_COUNTS


def test_mnist_resize_to_32(mnist_test, mnist_data_dir):
    images, labels = data.load_mnist("test", data_dir=mnist_data_dir, image_size=32, limit=200)
    assert images.shape == (200, 32, 32, 1) and images.dtype == np.float32
    assert -1.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(labels, mnist_test[1][:200])
    expected = jax.image.resize(mnist_test[0][:200], (200, 32, 32, 1), method="bilinear")
    np.testing.assert_allclose(images, np.clip(expected, -1, 1), atol=1e-5)


def test_mnist_uses_env_var(mnist_data_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(mnist_data_dir))
    images, _ = data.load_mnist("test", limit=3)
    assert images.shape == (3, 28, 28, 1)


def test_mnist_missing_data_dir_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_mnist("train", data_dir=missing)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(missing) in message
    assert "--data-dir" in message and "TFDS_DATA_DIR" in message
    assert not missing.exists()  # nothing was created or downloaded there


def test_mnist_dataset_folder_instead_of_root_is_explained(mnist_data_dir):
    with pytest.raises(data.DataNotFoundError, match="pass its parent"):
        data.load_mnist("test", data_dir=Path(mnist_data_dir) / "mnist")


def test_mnist_wrong_version_or_format_is_a_clear_error(mnist_data_dir, tmp_path):
    import json
    import shutil

    info = json.loads(next(Path(mnist_data_dir).glob("mnist/*/dataset_info.json")).read_text())
    # only some other version on disk: TFDS's current version is not prepared there
    other = tmp_path / "other" / "mnist" / "0.0.1"
    other.mkdir(parents=True)
    (other / "dataset_info.json").write_text(json.dumps({**info, "version": "0.0.1"}))
    with pytest.raises(data.DataNotFoundError, match="No prepared MNIST") as err:
        data.load_mnist("test", data_dir=tmp_path / "other")
    assert str(tmp_path / "other") in str(err.value)
    # the current version, but prepared as tfrecord (which needs TensorFlow to read)
    version_dir = next(Path(mnist_data_dir).glob("mnist/*/dataset_info.json")).parent
    tfrecord = tmp_path / "tfrecord" / "mnist" / version_dir.name
    tfrecord.mkdir(parents=True)
    (tfrecord / "dataset_info.json").write_text(json.dumps({**info, "fileFormat": "tfrecord"}))
    shutil.copy(version_dir / "features.json", tfrecord / "features.json")
    with pytest.raises(data.DataNotFoundError, match="prepared in the tfrecord format"):
        data.load_mnist("test", data_dir=tmp_path / "tfrecord")


def test_mnist_missing_env_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match="TFDS_DATA_DIR") as info:
        data.load_mnist("test")
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "validation"}, "split must be"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 32.0}, "image_size"),
        ({"limit": 0}, "limit"),
    ],
)
def test_mnist_bad_arguments_raise_before_reading(kwargs, match, tmp_path):
    # tmp_path holds no data: the argument error must come first
    with pytest.raises(ValueError, match=match):
        data.load_mnist(data_dir=tmp_path, **kwargs)


def test_import_is_lazy():
    code = "import sys, jaxdiff.data; print('tensorflow_datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # TFDS is imported only inside load_mnist


# --------------------------------------------------------------------------------------------------
# Digits and point clouds
# --------------------------------------------------------------------------------------------------


def test_digits():
    images, labels = data.load_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int32
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(np.unique(labels)) == set(range(10))
    sym, _ = data.load_digits(scale="symmetric")
    assert sym.min() == -1.0 and sym.max() == 1.0
    np.testing.assert_allclose(data.to_unit_interval(sym), images, atol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        data.load_digits(scale="0-255")


@pytest.mark.parametrize(
    ("name", "dim"), [("moons", 2), ("swiss_roll", 2), ("s_curve", 2), ("swiss_roll_3d", 3)]
)
def test_points_shapes_and_determinism(name, dim):
    x = data.make_points(name, 1000, seed=3)
    assert x.shape == (1000, dim) and x.dtype == np.float32
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x, data.make_points(name, 1000, seed=3))
    assert not np.array_equal(x, data.make_points(name, 1000, seed=4))
    assert np.abs(x).max() < 3.0  # tutorial scaling keeps the clouds O(1)


def test_points_swiss_roll_2d_is_a_projection_of_3d():
    x2 = data.make_points("swiss_roll", 500, seed=1)
    x3 = data.make_points("swiss_roll_3d", 500, seed=1)
    np.testing.assert_array_equal(x2, x3[:, [0, 2]])
    clean = data.make_points("swiss_roll", 500, seed=1, noise=0.0)
    radius = np.linalg.norm(clean, axis=1)  # t / 10 with t in [1.5 pi, 4.5 pi]
    assert radius.min() >= 1.5 * np.pi / 10 - 1e-5 and radius.max() <= 4.5 * np.pi / 10 + 1e-5


def test_points_errors():
    with pytest.raises(ValueError, match="moons, s_curve, swiss_roll, swiss_roll_3d"):
        data.make_points("spirals")
    with pytest.raises(ValueError, match="n"):
        data.make_points("moons", 0)
    with pytest.raises(ValueError, match="noise"):
        data.make_points("moons", 10, noise=-1.0)


# --------------------------------------------------------------------------------------------------
# 1-D Gaussian mixture
# --------------------------------------------------------------------------------------------------


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)  # np.trapezoid needs NumPy >= 2


MIX = {"weights": (0.2, 0.5, 0.3), "means": (-3.0, 0.0, 2.5), "stds": (0.5, 1.0, 0.3)}


N_MIX = 200_000  # one sample size for all sampler tests: one compilation


def test_mixture_moments_match_closed_form():
    x = np.asarray(data.gaussian_mixture_1d(0, N_MIX, **MIX), dtype=np.float64)
    assert x.shape == (N_MIX,)
    w, mu, s = (np.asarray(MIX[k]) for k in ("weights", "means", "stds"))
    mean, var = data.gaussian_mixture_moments(**MIX)
    assert mean == pytest.approx(np.sum(w * mu))
    # fourth central moment for the standard error of the sample variance
    d = mu - mean
    m4 = np.sum(w * (d**4 + 6 * d**2 * s**2 + 3 * s**4))
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / N_MIX)
    assert abs(x.var() - var) < 5 * np.sqrt((m4 - var**2) / N_MIX)
    # the histogram matches the exact density: bin counts within 5 standard errors
    edges = np.linspace(-6.0, 6.0, 49)
    fine = np.linspace(-6.0, 6.0, 48 * 200 + 1)
    dens = np.asarray(data.gaussian_mixture_pdf(fine, **MIX), dtype=np.float64)
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(fine))])
    expected = N_MIX * np.diff(cdf[::200])
    observed = np.histogram(x, bins=edges)[0]
    assert np.all(np.abs(observed - expected) < 5 * np.sqrt(expected) + 1)


def test_mixture_sampler_keys_and_jit():
    key = jax.random.key(7)
    a = data.gaussian_mixture_1d(key, N_MIX, **MIX)
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(a, data.gaussian_mixture_1d(7, N_MIX, **MIX))
    jitted = jax.jit(lambda k: data.gaussian_mixture_1d(k, N_MIX, **MIX))(key)
    np.testing.assert_allclose(jitted, a, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(a, data.gaussian_mixture_1d(8, N_MIX, **MIX))
    default = data.gaussian_mixture_1d(0, N_MIX)  # the documented default mixture
    assert default.shape == (N_MIX,) and np.isfinite(default).all()


def test_mixture_pdf():
    grid = np.linspace(-12.0, 12.0, 48_001)
    p = np.asarray(data.gaussian_mixture_pdf(grid, **MIX), dtype=np.float64)
    assert p.shape == grid.shape and (p >= 0).all()
    assert _trapezoid(p, grid) == pytest.approx(1.0, abs=1e-5)
    # one component: the normal density
    single = data.gaussian_mixture_pdf(jnp.array([0.0, 1.0]), [1.0], [0.0], [1.0])
    np.testing.assert_allclose(
        single, np.exp(-0.5 * np.array([0.0, 1.0])) / np.sqrt(2 * np.pi), rtol=1e-6
    )
    # mean and variance from the density agree with the closed form
    mean, var = data.gaussian_mixture_moments(**MIX)
    assert _trapezoid(grid * p, grid) == pytest.approx(mean, abs=1e-4)
    assert _trapezoid((grid - mean) ** 2 * p, grid) == pytest.approx(var, abs=1e-4)
    # shape-preserving and jittable
    x2 = jnp.zeros((3, 4))
    assert jax.jit(lambda x: data.gaussian_mixture_pdf(x, **MIX))(x2).shape == (3, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": (0.5, 0.6, 0.1)}, "sum to 1"),
        ({"weights": (1.2, -0.2, 0.0)}, "non-negative"),
        ({"stds": (1.0, 0.0, 1.0)}, "stds"),
        ({"means": (0.0, 1.0)}, "equal length"),
    ],
)
def test_mixture_bad_parameters(kwargs, match):
    params = {**MIX, **kwargs}
    with pytest.raises(ValueError, match=match):
        data.gaussian_mixture_1d(0, 10, **params)
    with pytest.raises(ValueError, match=match):
        data.gaussian_mixture_pdf(0.0, **params)


# --------------------------------------------------------------------------------------------------
# On-device batching
# --------------------------------------------------------------------------------------------------

N, BATCH = 103, 10  # 10 full batches per epoch, 3 examples dropped


def test_epoch_permutation():
    perm = data.epoch_permutation(jax.random.key(0), N)
    assert perm.shape == (N,) and perm.dtype == jnp.int32
    assert sorted(np.asarray(perm).tolist()) == list(range(N))


def test_batch_indices_cover_each_epoch_once():
    key = jax.random.key(42)
    spe = data.steps_per_epoch(N, BATCH)
    assert spe == 10
    epochs = []
    for epoch in range(3):
        batches = [
            np.asarray(data.batch_indices(key, epoch * spe + i, N, BATCH)) for i in range(spe)
        ]
        assert all(b.shape == (BATCH,) and b.dtype == np.int32 for b in batches)
        used = np.concatenate(batches)
        assert len(set(used.tolist())) == spe * BATCH  # every used index exactly once
        assert used.min() >= 0 and used.max() < N
        # the dropped remainder is the tail of that epoch's permutation
        perm = np.asarray(data.epoch_permutation(jax.random.fold_in(key, epoch), N))
        np.testing.assert_array_equal(used, perm[: spe * BATCH])
        epochs.append(used)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])


def test_batch_indices_deterministic_and_traceable():
    key = jax.random.key(1)
    a = data.batch_indices(key, 17, N, BATCH)
    np.testing.assert_array_equal(a, data.batch_indices(key, 17, N, BATCH))
    assert not np.array_equal(a, data.batch_indices(jax.random.key(2), 17, N, BATCH))

    # jitted, inside lax.scan (step traced), as in a multi-step compiled training call
    def body(carry, step):
        return carry, data.batch_indices(key, step, N, BATCH)

    _, scanned = jax.jit(lambda steps: jax.lax.scan(body, 0, steps))(jnp.arange(20))
    np.testing.assert_array_equal(scanned[17], a)
    raw_key = jax.random.PRNGKey(1)  # legacy uint32 keys work too
    assert data.batch_indices(raw_key, 0, N, BATCH).shape == (BATCH,)


def test_take_batch():
    images = jnp.arange(N * 4, dtype=jnp.float32).reshape(N, 2, 2, 1)
    labels = jnp.arange(N, dtype=jnp.int32)
    key = jax.random.key(0)
    xb, yb = jax.jit(lambda s: data.take_batch((images, labels), key, s, BATCH))(5)
    assert xb.shape == (BATCH, 2, 2, 1) and yb.shape == (BATCH,)
    np.testing.assert_array_equal(yb, data.batch_indices(key, 5, N, BATCH))
    np.testing.assert_array_equal(xb[:, 0, 0, 0], 4 * yb)
    with pytest.raises(ValueError, match="leading"):
        data.take_batch((images, labels[:5]), key, 0, BATCH)


def test_batching_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="larger than the dataset"):
        data.batch_indices(key, 0, 5, 10)
    with pytest.raises(ValueError, match="batch_size"):
        data.batch_indices(key, 0, 5, 0)


# --------------------------------------------------------------------------------------------------
# Validation and range helpers
# --------------------------------------------------------------------------------------------------


def test_unit_interval_round_trip():
    x = np.linspace(-1, 1, 11, dtype=np.float32)
    np.testing.assert_allclose(data.to_unit_interval(x), (x + 1) / 2)
    np.testing.assert_allclose(data.from_unit_interval(data.to_unit_interval(x)), x, atol=1e-7)
    assert isinstance(data.to_unit_interval(jnp.asarray(x)), jax.Array)


def test_check_images():
    good = np.zeros((2, 4, 4, 1), np.float32)
    assert data.check_images(good) is good
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        data.check_images(np.zeros((4, 4)))
    bad = good.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        data.check_images(bad, name="samples")
    with pytest.raises(ValueError, match="inf"):
        data.check_images(np.full((1, 2, 2, 1), np.inf, np.float32))
    with pytest.raises(ValueError, match=r"to_unit_interval"):
        data.check_images(good - 0.5, value_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\]"):
        data.check_images(good + 3.0)
    data.check_images(good + 3.0, value_range=None)
    data.check_images(np.full((1, 2, 2, 3), 255, np.uint8), value_range=(0, 255))


def test_take_batch_cached_equals_take_batch_across_epochs():
    images = jnp.arange(N * 4, dtype=jnp.float32).reshape(N, 2, 2, 1)
    labels = jnp.arange(N, dtype=jnp.int32)
    key = jax.random.key(3)
    start = 7  # a scan that starts mid-epoch and crosses two epoch boundaries (10 steps/epoch)

    def body(cache, step):
        batch, cache = data.take_batch_cached((images, labels), key, step, BATCH, cache)
        return cache, (batch, cache.epoch)

    @jax.jit
    def run(steps):
        cache = data.permutation_cache(key, steps[0], N, BATCH)
        return jax.lax.scan(body, cache, steps)

    cache, ((xb, yb), epochs) = run(jnp.arange(start, start + 25))
    for i, step in enumerate(range(start, start + 25)):
        x_ref, y_ref = data.take_batch((images, labels), key, step, BATCH)
        np.testing.assert_array_equal(yb[i], y_ref)
        np.testing.assert_array_equal(xb[i], x_ref)
    np.testing.assert_array_equal(epochs, np.arange(start, start + 25) // 10)
    assert int(cache.epoch) == (start + 24) // 10
    with pytest.raises(ValueError, match="leading"):
        data.take_batch_cached((images, labels[:5]), key, 0, BATCH, cache)
