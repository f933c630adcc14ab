"""Sample-quality metrics (jaxdiff.metrics), feature classifiers (jaxdiff.evaluation), the CLI.

The pure metrics are checked against closed forms, hand-computed values and float64 SciPy
references. The feature classifiers are trained with tiny specs (a few hundred images, a few dozen
steps) so the file stays fast on a 2-core CPU; the full >= 99% bar is checked by the command (see
README), not here.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import jaxdiff
from experiments import evaluate as evaluate_cli
from jaxdiff import evaluation as E
from jaxdiff import metrics as M
from jaxdiff.evaluation import cache as clf_cache
from jaxdiff.evaluation import features as clf_features
from jaxdiff.evaluation import training as clf_training

REPO = Path(__file__).resolve().parents[1]


def _random_spd(rng: np.random.Generator, d: int, cond: float = 100.0) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eig = np.exp(rng.uniform(0.0, math.log(cond), d))
    return (q * eig) @ q.T


# --------------------------------------------------------------------------------------------------
# Frechet distance and feature statistics
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu1,s1,mu2,s2", [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -0.5, 0.5),
                                           (3.0, 0.1, 3.0, 4.0)])  # fmt: skip
def test_frechet_distance_1d_closed_form(mu1, s1, mu2, s2):
    got = M.frechet_distance([mu1], [[s1**2]], [mu2], [[s2**2]])
    assert got == pytest.approx((mu1 - mu2) ** 2 + (s1 - s2) ** 2, abs=1e-12)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(7), rng.standard_normal(7)
    s1, s2 = rng.uniform(0.1, 3.0, 7), rng.uniform(0.1, 3.0, 7)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    got = M.frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2))
    assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("seed,d", [(0, 2), (1, 16), (2, 64)])
def test_frechet_distance_matches_scipy_sqrtm_float64(seed, d):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    c1, c2 = _random_spd(rng, d), _random_spd(rng, d)
    covmean = scipy.linalg.sqrtm(c1 @ c2)
    want = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean).real
    got = M.frechet_distance(mu1, c1, mu2, c2)
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_frechet_distance_symmetric_zero_and_singular():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
    c1, c2 = _random_spd(rng, 10), _random_spd(rng, 10)
    assert M.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(
        M.frechet_distance(mu2, c2, mu1, c1), rel=1e-10
    )
    assert M.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)
    # Fewer samples than dimensions: singular covariances are fine, and the value is a real float.
    f = rng.standard_normal((5, 20))
    stats = M.FeatureStats.from_features(f)
    assert np.linalg.matrix_rank(stats.cov) < 20
    got = M.frechet_distance(stats.mean, stats.cov, stats.mean, stats.cov)
    assert isinstance(got, float) and got == pytest.approx(0.0, abs=1e-9)
    assert M.frechet_distance_from_features(f, f) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_bad_input():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="mu2 must have shape"):
        M.frechet_distance(np.zeros(3), eye, np.zeros(4), eye)
    with pytest.raises(ValueError, match="cov2 must have shape"):
        M.frechet_distance(np.zeros(3), eye, np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="symmetric"):
        M.frechet_distance(np.zeros(3), np.triu(np.ones((3, 3))), np.zeros(3), eye)
    with pytest.raises(ValueError, match="non-finite"):
        M.frechet_distance(np.array([0.0, np.nan, 0.0]), eye, np.zeros(3), eye)


def test_feature_stats_streaming_equals_batch():
    rng = np.random.default_rng(4)
    # A large common offset: the shifted sums keep the covariance accurate anyway.
    f = 1e4 + rng.standard_normal((203, 6)) @ rng.standard_normal((6, 6))
    stats = M.FeatureStats.zeros(6)
    for lo, hi in [(0, 1), (1, 1), (1, 50), (50, 64), (64, 203)]:  # uneven, and an empty batch
        stats = stats.update(f[lo:hi])
    assert stats.n == 203
    np.testing.assert_allclose(stats.mean, f.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.cov, np.cov(f, rowvar=False), rtol=1e-8, atol=1e-10)
    whole = M.FeatureStats.from_features(f, batch_size=17)
    np.testing.assert_allclose(whole.cov, np.cov(f, rowvar=False), rtol=1e-8, atol=1e-10)


def test_feature_stats_errors():
    with pytest.raises(ValueError, match="dimension 3 but"):
        M.FeatureStats.zeros(4).update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        _ = M.FeatureStats.zeros(2).update(np.zeros((1, 2))).cov
    with pytest.raises(ValueError, match="no features"):
        _ = M.FeatureStats.zeros(2).mean


# --------------------------------------------------------------------------------------------------
# Classifier-based scores
# --------------------------------------------------------------------------------------------------


def test_classifier_score_bounds_and_hand_value():
    # Every sample gets the same prediction: p(y|x) = p(y), KL = 0, score 1.
    assert M.classifier_score(np.tile([0.2, 0.3, 0.5], (9, 1))) == pytest.approx(1.0)
    # Perfectly confident and uniform over K classes: score K.
    for k in (2, 10):
        assert M.classifier_score(np.eye(k)[np.arange(5 * k) % k]) == pytest.approx(k)
    # Hand value: rows (1, 0) and (1/2, 1/2); p(y) = (3/4, 1/4);
    # KL_1 = log(4/3), KL_2 = 1/2 log(2/3) + 1/2 log 2 = 1/2 log(4/3); score = (4/3)^(3/4).
    assert M.classifier_score([[1.0, 0.0], [0.5, 0.5]]) == pytest.approx((4 / 3) ** 0.75)
    logits = 3 * np.random.default_rng(0).standard_normal((200, 10))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert 1.0 <= M.classifier_score(p) <= 10.0


def test_histogram_confidence_and_label_accuracy():
    balanced = np.eye(4)[np.arange(8) % 4]
    assert M.class_histogram_kl(balanced) == pytest.approx(0.0)
    collapsed = np.tile([0.1, 0.7, 0.1, 0.1], (6, 1))
    assert M.class_histogram_kl(collapsed) == pytest.approx(math.log(4))
    np.testing.assert_allclose(M.class_histogram(collapsed), [0, 1, 0, 0])
    assert M.mean_max_probability(collapsed) == pytest.approx(0.7)
    assert M.mean_max_probability(np.full((3, 5), 0.2)) == pytest.approx(0.2)
    assert M.label_accuracy(balanced, np.array([0, 1, 2, 0, 0, 1, 2, 3])) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="softmax"):
        M.classifier_score(np.ones((3, 4)))
    with pytest.raises(ValueError, match="integer array of shape"):
        M.label_accuracy(balanced, np.zeros(8))


# --------------------------------------------------------------------------------------------------
# Point clouds: MMD and (sliced) Wasserstein
# --------------------------------------------------------------------------------------------------


def test_mmd_hand_computed():
    # x = {0}, y = {1}, h = 1, one scale: MMD^2 = k(0,0) + k(1,1) - 2 k(0,1) = 2 - 2 exp(-1/2).
    assert M.mmd_rbf([[0.0]], [[1.0]], bandwidth=1.0, scales=(1.0,)) == pytest.approx(
        2 - 2 * math.exp(-0.5)
    )

    # x = {0, 1}, y = {3}, h = 1, scales (1, 2): k(d) = (exp(-d^2/2) + exp(-d^2/8)) / 2.
    def k(d):
        return 0.5 * (math.exp(-(d**2) / 2) + math.exp(-(d**2) / 8))

    kxx = (2 * k(0) + 2 * k(1)) / 4
    kyy = k(0)
    kxy = (k(3) + k(2)) / 2
    got = M.mmd_rbf(np.array([[0.0], [1.0]]), np.array([[3.0]]), bandwidth=1.0, scales=(1, 2))
    assert got == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-12)
    # Unbiased: x = {0, 1}, y = {3, 5}: the i == j terms are dropped.
    got = M.mmd_rbf(np.array([[0.0], [1.0]]), np.array([[3.0], [5.0]]), bandwidth=1.0,
                    scales=(1, 2), unbiased=True)  # fmt: skip
    want = k(1) + k(2) - 2 * (k(3) + k(5) + k(2) + k(4)) / 4
    assert got == pytest.approx(want, rel=1e-12)


def test_mmd_identical_shifted_and_blocked():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 2))
    assert M.mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12)
    y = rng.standard_normal((300, 2))
    same = M.mmd_rbf(x, y)
    shifted = [M.mmd_rbf(x, y + np.array([s, 0.0]), bandwidth=1.0) for s in (0.5, 1.0, 2.0)]
    assert same < 0.01 < shifted[0] < shifted[1] < shifted[2]
    assert M.mmd_rbf(x, y + 1.0, block=7) == pytest.approx(M.mmd_rbf(x, y + 1.0), rel=1e-10)


def test_median_heuristic():
    # Pairwise distances of {0, 1, 3}: 1, 3, 2 -> median 2.
    assert M.median_heuristic([[0.0], [1.0], [3.0]]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="coincide"):
        M.median_heuristic(np.ones((4, 2)))


@pytest.mark.parametrize("n,m", [(50, 50), (37, 91), (1, 5)])
def test_wasserstein_1d_matches_scipy(n, m):
    rng = np.random.default_rng(n + m)
    u, v = rng.standard_normal(n), 2.0 + 3.0 * rng.standard_normal(m)
    assert M.wasserstein_1d(u, v) == pytest.approx(
        scipy.stats.wasserstein_distance(u, v), rel=1e-10
    )


def test_sliced_wasserstein():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((400, 2))
    assert M.sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    # Duplicating every point keeps the empirical distribution: 0 (unequal-size path).
    assert M.sliced_wasserstein(x, np.concatenate([x, x])) == pytest.approx(0.0, abs=1e-12)
    # In 1-D every direction is +-1: the exact 1-D distance.
    u, v = rng.standard_normal(60), rng.standard_normal(80) + 1.0
    assert M.sliced_wasserstein(u[:, None], v[:, None]) == pytest.approx(
        scipy.stats.wasserstein_distance(u, v), rel=1e-10
    )
    # A translation by s: each projection moves by |<s, theta>|, whose mean over the circle is
    # 2 |s| / pi.
    s = np.array([1.5, -2.0])
    got = M.sliced_wasserstein(x, x + s, num_projections=2000)
    assert got == pytest.approx(2 * np.linalg.norm(s) / np.pi, rel=0.02)
    # Fixed projections: deterministic and symmetric.
    y = rng.standard_normal((400, 2)) * 2
    assert M.sliced_wasserstein(x, y) == M.sliced_wasserstein(x, y)
    assert M.sliced_wasserstein(x, y) == pytest.approx(M.sliced_wasserstein(y, x), rel=1e-12)
    with pytest.raises(ValueError, match="same dimension"):
        M.sliced_wasserstein(x, np.zeros((3, 3)))


# --------------------------------------------------------------------------------------------------
# bits/dim
# --------------------------------------------------------------------------------------------------


def test_images_bits_per_dim_batches_like_losses_bits_per_dim(monkeypatch):
    """The wrapper's batching, padding, keys, labels and 8-bit snapping, with a cheap stand-in.

    The stand-in takes exactly the arguments of jaxdiff.losses.bits_per_dim (checked with
    inspect) and returns a value that depends on every one of them, so the test compiles in
    milliseconds instead of the seconds the real variational bound takes.
    """
    import inspect

    import jaxdiff.losses

    real_signature = inspect.signature(jaxdiff.losses.bits_per_dim)
    calls = []

    def fake_bits_per_dim(*args, **kwargs):
        bound = real_signature.bind(*args, **kwargs)
        denoise_fn, s, x0, key = (bound.arguments[k] for k in ("denoise_fn", "s", "x0", "key"))
        calls.append(dict(bound.kwargs))
        t = jnp.full((x0.shape[0],), 3, jnp.int32)
        out = denoise_fn(x0, t)  # the model is called with the batch's labels
        noise = jax.random.uniform(key, (x0.shape[0],))
        total = jnp.mean(out, axis=(1, 2, 3)) + noise + s.betas[0]
        return total, jnp.zeros((x0.shape[0], s.num_steps))

    monkeypatch.setattr(jaxdiff.losses, "bits_per_dim", fake_bits_per_dim)
    schedule = jaxdiff.make_schedule("linear", num_steps=8)
    images = np.random.default_rng(7).uniform(-1.0, 1.0, (5, 4, 4, 1)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4], np.int32)
    params = {"w": jnp.float32(0.5)}

    def apply(p, x, t, y):
        return p["w"] * x + (t + 10 * y).astype(x.dtype).reshape(-1, 1, 1, 1)

    got = M.images_bits_per_dim(apply, params, schedule, images, labels=labels, batch_size=2,
                                seed=3, prediction="v", variance="beta")  # fmt: skip
    assert got.shape == (5,) and got.dtype == np.float64
    assert calls and all(c == {"prediction": "v", "variance": "beta"} for c in calls)
    # By hand: batches of 2 with keys fold_in(key(seed), b), the last one padded.
    x = M.quantize_8bit(images)
    key = jax.random.key(3)
    want = []
    for b, i in enumerate(range(0, 5, 2)):
        noise = np.asarray(jax.random.uniform(jax.random.fold_in(key, b), (2,)))
        n = min(2, 5 - i)
        model = 0.5 * x[i : i + n].mean(axis=(1, 2, 3)) + 3 + 10 * labels[i : i + n]
        want.append(model + noise[:n] + float(schedule.betas[0]))
    np.testing.assert_allclose(got, np.concatenate(want), rtol=1e-5)


def test_images_bits_per_dim_real_bound():
    """One real run of the variational bound: finite, positive, deterministic in the seed."""
    schedule = jaxdiff.make_schedule("linear", num_steps=4)
    images = np.random.default_rng(8).uniform(-1.0, 1.0, (3, 2, 2, 1)).astype(np.float32)

    def apply(p, x, t, y):
        return p * x

    got = M.images_bits_per_dim(apply, jnp.float32(0.1), schedule, images, batch_size=3)
    assert got.shape == (3,) and np.all(np.isfinite(got)) and np.all(got > 0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        M.images_bits_per_dim(apply, jnp.float32(0.1), schedule, images + 1.5)


def test_images_bits_per_dim_compiles_once_across_calls():
    """A second call with the same model function and batch shape reuses the compiled bound.

    ``apply`` counts its traces (a Python side effect runs only while tracing): the batches of
    one call, a second call, and a call with another schedule of the same length trace it once.
    """
    traces = []

    def apply(p, x, t, y):
        traces.append(x.shape)
        return p * x

    schedule = jaxdiff.make_schedule("linear", num_steps=4)
    images = np.random.default_rng(9).uniform(-1.0, 1.0, (4, 2, 2, 1)).astype(np.float32)
    first = M.images_bits_per_dim(apply, jnp.float32(0.1), schedule, images, batch_size=2)
    assert len(traces) == 1  # two batches, one trace
    again = M.images_bits_per_dim(apply, jnp.float32(0.1), schedule, images, batch_size=2)
    np.testing.assert_array_equal(again, first)
    other = jaxdiff.make_schedule("linear", num_steps=4, beta_end=0.5)
    M.images_bits_per_dim(apply, jnp.float32(0.2), other, images[::-1], batch_size=2)
    assert len(traces) == 1


def test_quantize_8bit():
    q = M.quantize_8bit(np.array([-1.2, -1.0, 0.0, 0.3, 1.0, 1.5]))
    np.testing.assert_allclose((q + 1) * 127.5, np.round((q + 1) * 127.5), atol=1e-4)
    assert q.min() == -1.0 and q.max() == 1.0 and q.dtype == np.float32


# --------------------------------------------------------------------------------------------------
# evaluate_samples: input validation (all before any classifier is loaded or trained)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("input validation must fail before a classifier is loaded")

    monkeypatch.setattr(clf_cache, "load_classifier", fail)


def _mnist_like(n=200, shape=(28, 28, 1), dtype=np.float32):
    return np.random.default_rng(0).uniform(0, 1, (n, *shape)).astype(dtype)


@pytest.mark.parametrize(
    "samples,kind,match",
    [
        (_mnist_like(shape=(28, 28)), "mnist", r"channels last.*\[\.\.\., None\]"),
        (_mnist_like(shape=(27, 27, 1)), "mnist", r"\(N, 28, 28, 1\) or \(N, 32, 32, 1\)"),
        (_mnist_like(shape=(1, 28, 28)), "mnist", r"channels first.*moveaxis"),
        (_mnist_like(shape=(28, 28, 1)), "digits", r"\(N, 8, 8, 1\)"),
        (_mnist_like() * 2 - 1, "mnist", r"\[0(\.0)?, 1(\.0)?\]"),
        (_mnist_like(dtype=np.float32) * 255, "mnist", r"outside"),
        ((_mnist_like() * 255).astype(np.uint8), "mnist", r"float.*divide by 255"),
        (_mnist_like().astype(np.complex64), "mnist", r"float"),
        (np.where(np.arange(200)[:, None, None, None] == 3, np.nan, _mnist_like()), "mnist",
         r"non-finite|NaN"),
        (_mnist_like(n=100), "mnist", r"100 samples.*at least .*129"),
        (_mnist_like(n=40, shape=(8, 8, 1)), "digits", r"40 samples.*65"),
        (_mnist_like(), "cifar", r"kind must be one of"),
    ],
)  # fmt: skip
def test_evaluate_samples_rejects_bad_images(no_training, samples, kind, match):
    with pytest.raises(ValueError, match=match):
        E.evaluate_samples(samples, kind)


def test_evaluate_samples_rejects_bad_labels_and_points(no_training):
    x = _mnist_like()
    with pytest.raises(ValueError, match=r"0\.\.9"):
        E.evaluate_samples(x, "mnist", labels=np.full(200, 10))
    with pytest.raises(ValueError, match=r"shape \(200,\)"):
        E.evaluate_samples(x, "mnist", labels=np.zeros(199, np.int32))
    with pytest.raises(ValueError, match="only used with kind='points'"):
        E.evaluate_samples(x, "mnist", dataset="moons")
    pts = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="pass dataset="):
        E.evaluate_samples(pts, "points")
    with pytest.raises(ValueError, match="unknown point dataset"):
        E.evaluate_samples(pts, "points", dataset="spiral")
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        E.evaluate_samples(pts, "points", dataset="swiss_roll_3d")
    with pytest.raises(ValueError, match="float"):
        E.evaluate_samples(pts.astype(np.int64), "points", dataset="moons")
    bad = pts.copy()
    bad[4, 1] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        E.evaluate_samples(bad, "points", dataset="moons")


def test_evaluate_points_end_to_end(tmp_path):
    good = jaxdiff.data.make_points("moons", 600, seed=123)
    with pytest.warns(UserWarning, match="only 600 samples"):
        out = E.evaluate_samples(good, "points", dataset="moons", cache_dir=tmp_path)
    json.dumps(out)  # JSON-serialisable
    for name in ("mmd2_rbf", "sliced_wasserstein"):
        m = out["metrics"][name]
        assert m["samples"] < 3 * m["real"] + 1e-3 < m["noise"]
    assert (tmp_path / "points-references.json").exists()
    # Second call: the references come from the cache.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = E.evaluate_samples(good * 1.5, "points", dataset="moons", cache_dir=tmp_path)
    assert again["metrics"]["mmd2_rbf"]["real"] == out["metrics"]["mmd2_rbf"]["real"]
    assert again["metrics"]["mmd2_rbf"]["samples"] > out["metrics"]["mmd2_rbf"]["samples"]


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    for argv in (["--bogus"], ["--kind", "mnist"], ["--samples", "x.npy", "--kind", "cifar"],
                 ["--samples", "x.npy", "--kind", "points"]):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            evaluate_cli.cli(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "usage:" in err and "error:" in err and "Traceback" not in err
    # Input problems found after parsing: one error line, exit code 2.
    missing = str(tmp_path / "missing.npy")
    assert evaluate_cli.cli(["--samples", missing, "--kind", "mnist"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 5), np.float32))
    assert evaluate_cli.cli(["--samples", str(bad), "--kind", "mnist"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "(N, 28, 28, 1)" in err.splitlines()[-1]
    assert "usage:" in err and "Traceback" not in err


def test_cli_points_writes_json(tmp_path, capsys):
    path = tmp_path / "samples.npy"
    np.save(path, jaxdiff.data.make_points("moons", 300, seed=5))
    argv = ["--samples", str(path), "--kind", "points", "--dataset", "moons",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path)]  # fmt: skip
    with pytest.warns(UserWarning, match="only 300 samples"):
        assert evaluate_cli.cli(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / evaluate_cli.EVALUATION_FILE).read_text())
    assert not (tmp_path / "metrics.json").exists()
    assert printed["dataset"] == "moons"
    assert set(printed["metrics"]["mmd2_rbf"]) == {"samples", "real", "noise"}


def test_cli_subprocess_unknown_flag():
    proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert "unrecognized arguments: --nope" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------------
# Feature classifiers (tiny specs; MNIST needs TFDS_DATA_DIR)
# --------------------------------------------------------------------------------------------------

TINY_MNIST = dataclasses.replace(
    clf_features.CLASSIFIER_SPECS["mnist"], version="test-tiny", train_limit=1024, epochs=2,
    batch_size=64, warmup_steps=4, min_test_accuracy=0.0,
)  # fmt: skip
TINY_DIGITS = dataclasses.replace(
    clf_features.CLASSIFIER_SPECS["digits"], version="test-tiny", epochs=3, min_test_accuracy=0.0
)


@pytest.fixture(scope="module")
def tiny_specs():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(clf_features.CLASSIFIER_SPECS, "mnist", TINY_MNIST)
        mp.setitem(clf_features.CLASSIFIER_SPECS, "digits", TINY_DIGITS)
        mp.setattr(clf_cache, "_REFERENCE_POOL", 2000)
        yield


@pytest.fixture(scope="module")
def mnist_cache(tiny_specs, mnist_data_dir, tmp_path_factory):
    """A tiny MNIST classifier trained once into a temporary cache: (cache_dir, classifier)."""
    cache = tmp_path_factory.mktemp("jaxdiff-cache")
    clf = clf_cache.load_classifier("mnist", cache_dir=cache, data_dir=mnist_data_dir,
                                  progress=False)  # fmt: skip
    return cache, clf


def test_mnist_classifier_trains_and_caches(mnist_cache, mnist_data_dir, monkeypatch):
    cache, clf = mnist_cache
    assert clf.meta["train_examples"] == 1024 and clf.meta["test_examples"] == 10_000
    assert clf.meta["test_accuracy"] > 0.75  # chance is 0.1; 32 steps on 1,024 images
    path = clf_cache.classifier_dir("mnist", cache)
    assert path == cache / "classifiers" / "mnist-test-tiny"
    assert (path / "meta.json").exists() and (path / "params").is_dir()

    def no_retrain(*args, **kwargs):
        raise AssertionError("a cached classifier must not be retrained")

    monkeypatch.setattr(clf_training, "train_classifier", no_retrain)
    assert clf_cache.load_classifier("mnist", cache_dir=cache, progress=False) is clf  # in memory
    monkeypatch.setattr(clf_cache, "_LOADED", {})  # a new process: restored from the checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = clf_cache.load_classifier("mnist", cache_dir=cache, progress=False)
    assert again is not clf and again.meta["cache_id"] == clf.meta["cache_id"]
    jax.tree.map(np.testing.assert_array_equal, again.params, clf.params)
    x, y = clf_training.classifier_data("mnist", "test", data_dir=mnist_data_dir, limit=300)
    f1, p1 = clf.features_and_probs(x)
    f2, _ = again.features_and_probs(x, batch_size=128)  # padded last batch
    assert f1.shape == (300, 128) and p1.shape == (300, 10)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=1e-12)
    assert again.accuracy(x, y) > 0.75


def _copy_cache(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


def test_corrupt_or_stale_cache_is_rebuilt_with_warning(mnist_cache, tmp_path, monkeypatch):
    cache, clf = mnist_cache
    work = tmp_path / "cache"
    _copy_cache(cache, work)
    calls = []

    def fake_train(kind, **kwargs):  # retraining is what the real code does; skip its cost
        calls.append(kind)
        return dataclasses.replace(clf, meta={**clf.meta, "cache_id": f"new-{len(calls)}"})

    monkeypatch.setattr(clf_training, "train_classifier", fake_train)
    path = clf_cache.classifier_dir("mnist", work)
    # Corrupt: truncate every array file of the orbax checkpoint.
    damaged = 0
    for f in (path / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 1000:
            f.write_bytes(f.read_bytes()[:100])
            damaged += 1
    assert damaged
    with pytest.warns(clf_cache.ClassifierCacheWarning, match="corrupt or stale"):
        fresh = clf_cache.load_classifier("mnist", cache_dir=work, progress=False)
    assert calls == ["mnist"] and fresh.meta["cache_id"] == "new-1"
    # The rebuilt cache loads without retraining.
    assert clf_cache.load_classifier("mnist", cache_dir=work, progress=False).meta["cache_id"] == (
        "new-1"
    )
    # Stale: the code's spec changed under the same version tag.
    monkeypatch.setitem(clf_features.CLASSIFIER_SPECS, "mnist",
                        dataclasses.replace(TINY_MNIST, learning_rate=1e-3))  # fmt: skip
    with pytest.warns(clf_cache.ClassifierCacheWarning, match="different spec"):
        clf_cache.load_classifier("mnist", cache_dir=work, progress=False)
    assert calls == ["mnist", "mnist"]


def test_cache_of_another_fingerprint_format_is_rebuilt(mnist_cache, tmp_path, monkeypatch):
    """A classifier whose checkpoint records fingerprints of another format (the pre-0.1.0
    splitmix64 one included) is not trusted: one warning, then it is trained again."""
    cache, clf = mnist_cache
    work = tmp_path / "cache"
    _copy_cache(cache, work)
    (meta,) = (clf_cache.classifier_dir("mnist", work) / "params").glob("*/checksums/metadata")
    item = json.loads(meta.read_text())
    meta.write_text(json.dumps({**item, "format": "jaxdiff-splitmix64-sum-v1"}))
    calls = []

    def fake_train(kind, **kwargs):  # retraining is what the real code does; skip its cost
        calls.append(kind)
        return dataclasses.replace(clf, meta={**clf.meta, "cache_id": "rebuilt"})

    monkeypatch.setattr(clf_training, "train_classifier", fake_train)
    monkeypatch.setattr(clf_cache, "_LOADED", {})
    with pytest.warns(clf_cache.ClassifierCacheWarning, match="unknown format"):
        again = clf_cache.load_classifier("mnist", cache_dir=work, progress=False)
    assert calls == ["mnist"] and again.meta["cache_id"] == "rebuilt"


def test_cache_save_is_orbax_commit_then_meta_json(mnist_cache, tmp_path, monkeypatch):
    """An interrupted save (an orbax temporary folder, nothing committed) is neither corrupt nor
    a cache: training goes ahead without a warning. A second writer of the same classifier keeps
    the first one's checkpoint and meta.json. No temporary file is left behind."""
    _, clf = mnist_cache
    path = clf_cache.classifier_dir("mnist", tmp_path)
    step = clf.meta["train_steps"]
    (path / "params" / f"{step}.orbax-checkpoint-tmp-1234567890").mkdir(parents=True)
    monkeypatch.setattr(clf_cache, "_LOADED", {})

    def fake_train(kind, **kwargs):
        return dataclasses.replace(clf, meta={**clf.meta, "cache_id": "first"})

    monkeypatch.setattr(clf_training, "train_classifier", fake_train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = clf_cache.load_classifier("mnist", cache_dir=tmp_path, progress=False)
    assert first.meta["cache_id"] == "first"
    assert json.loads((path / "meta.json").read_text())["cache_id"] == "first"
    second = dataclasses.replace(clf, meta={**clf.meta, "cache_id": "second"})
    clf_cache._save_classifier(second, path)  # the step is committed already: kept
    assert json.loads((path / "meta.json").read_text())["cache_id"] == "first"
    monkeypatch.setattr(clf_cache, "_LOADED", {})
    restored = clf_cache.load_classifier("mnist", cache_dir=tmp_path, progress=False)
    assert restored.meta["cache_id"] == "first"
    leftovers = [p.name for p in path.rglob("*") if "tmp" in p.name]
    assert not leftovers, leftovers


def test_fid_mnist_increases_with_noise(mnist_cache, mnist_data_dir):
    cache, _ = mnist_cache
    x, y = clf_training.classifier_data("mnist", "train", data_dir=mnist_data_dir, limit=2400)
    x, y = x[2000:], y[2000:]  # images neither the tiny classifier nor the floor saw
    rng = np.random.default_rng(0)
    fids, results = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "only 400 samples"
        for sigma in (0.0, 0.15, 0.5):
            noisy = np.clip(x + sigma * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
            res = E.evaluate_samples(noisy, "mnist", labels=y, cache_dir=cache,
                                     data_dir=mnist_data_dir, progress=False)  # fmt: skip
            results.append(res)
            fids.append(res["metrics"]["fid"]["samples"])
    assert all(a < b for a, b in itertools.pairwise(fids)), fids
    clean = results[0]
    json.dumps(clean)
    fid = clean["metrics"]["fid"]
    assert fid["real"] < fid["noise"] and fid["samples"] < 0.5 * fid["noise"]
    acc = clean["metrics"]["label_accuracy"]
    assert acc["samples"] > 0.6 and acc["real"] > 0.6 and acc["noise"] < 0.5
    assert len(clean["class_histogram"]) == 10 and clean["num_samples"] == 400
    assert (clf_cache.classifier_dir("mnist", cache) / "reference-28.npz").exists()
    # 32x32 samples (the U-Net's size) are mapped back to 28x28 by the inverse of load_mnist's
    # bilinear upsampling: real images reach the classifier unchanged.
    r = np.asarray(jax.image.resize(jnp.eye(28), (32, 28), "bilinear"), np.float64)
    np.testing.assert_allclose(clf_features._unresize_matrix(28, 32) @ r, np.eye(28), atol=1e-5)
    x28, _ = clf_training.classifier_data("mnist", "test", data_dir=mnist_data_dir, limit=200)
    x32, _ = clf_training.classifier_data("mnist", "test", data_dir=mnist_data_dir, limit=200,
                                     image_size=32)  # fmt: skip
    np.testing.assert_allclose(clf_features._resize_to(jnp.asarray(x32), (28, 28)), x28, atol=2e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res32 = E.evaluate_samples(x32, "mnist", cache_dir=cache, data_dir=mnist_data_dir,
                                   progress=False)  # fmt: skip
        res28 = E.evaluate_samples(x28, "mnist", cache_dir=cache, data_dir=mnist_data_dir,
                                   progress=False)  # fmt: skip
    assert res32["image_size"] == 32
    for ref in ("samples", "real"):  # the floor too, built at 32x32 (same number of images)
        assert res32["metrics"]["fid"][ref] == pytest.approx(res28["metrics"]["fid"][ref], rel=1e-3)
    assert res32["metrics"]["fid"]["samples"] < res32["metrics"]["fid"]["noise"]


def test_digits_classifier_deterministic_and_evaluates(tiny_specs, tmp_path):
    x, _ = clf_training.classifier_data("digits", "test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = E.evaluate_samples(x, "digits", cache_dir=tmp_path, progress=False)
    clf = clf_cache.load_classifier("digits", cache_dir=tmp_path, progress=False)  # the cached one
    assert clf.meta["test_accuracy"] > 0.8
    # Deterministic in the seed: training again gives bitwise the same parameters.
    again = clf_training.train_classifier("digits", progress=False)
    jax.tree.map(np.testing.assert_array_equal, again.params, clf.params)
    fid = res["metrics"]["fid"]
    # The samples are the held-out target set itself: ~0, well below the floor and the ceiling.
    assert fid["samples"] < 1e-6 < fid["real"] < fid["noise"]
    assert res["metrics"]["classifier_score"]["samples"] > 5
