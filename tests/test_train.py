"""Training state and step: K-step scans, EMA closed forms, label dropout, loss, errors.

Single device, a tiny NNX MLP (tests/_two_process_worker.py); multi-device and multi-process
equivalence lives in tests/test_sharding.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdiff import sharding
from jaxdiff.data import take_batch
from jaxdiff.schedules import make_schedule
from jaxdiff.train import (
    TrainConfig,
    Trainer,
    TrainState,
    default_scan_options,
    drop_labels,
    ema_decay_at,
    ema_update,
    eval_params,
    init_train_state,
    make_data_multi_step,
    make_lr_schedule,
    make_optimizer,
    make_train_step,
)

_path = Path(__file__).with_name("_two_process_worker.py")
_spec = importlib.util.spec_from_file_location("_two_process_worker", _path)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


@pytest.fixture(scope="module")
def model():
    return worker.tiny_model()


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", num_steps=50)


@pytest.fixture(scope="module")
def mesh1():
    return sharding.make_mesh(jax.devices()[:1])


@pytest.fixture(scope="module")
def trainer(model, schedule, mesh1):
    """One Trainer (default unroll for this backend) shared by tests, so it compiles once."""
    return Trainer(model[1], schedule, worker.sequence_config(unroll=None), mesh=mesh1)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _assert_trees_close(a, b, atol=1e-6):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


def _batches(n):
    data = worker.toy_data()
    return [{k: v[8 * (i % 3) :][:8] for k, v in data.items()} for i in range(n)]


def _stacked(batches):
    return {k: np.stack([b[k] for b in batches]) for k in ("x", "labels")}


def test_k_steps_in_one_scan_equal_single_steps(model, schedule, mesh1, trainer):
    params, apply = model
    assert trainer.unroll == default_scan_options()[1]
    batches = _batches(4)

    single = trainer.init_state(params, 7)
    single_losses = []
    for batch in batches:
        single, m = trainer.step(single, batch)
        single_losses.append(float(m["loss"]))

    # K = 2 twice with this backend's default unroll; K = 4 in one rolled scan.
    two, m2a = trainer.steps(trainer.init_state(params, 7), _stacked(batches[:2]))
    two, m2b = trainer.steps(two, _stacked(batches[2:]))
    rolled = Trainer(apply, schedule, worker.sequence_config(unroll=1), mesh=mesh1)
    four, m4 = rolled.steps(rolled.init_state(params, 7), _stacked(batches))

    assert int(single.step) == int(four.step) == int(two.step) == 4
    assert m4["loss"].shape == (4,)
    assert set(m4) == {"loss", "grad_norm", "learning_rate", "ema_decay"}
    for state in (four, two):
        _assert_trees_close(state.params, single.params)
        _assert_trees_close(state.ema_params, single.ema_params)
        _assert_trees_close(state.opt_state, single.opt_state)
    np.testing.assert_allclose(m4["loss"], single_losses, rtol=1e-5)
    np.testing.assert_allclose(np.concatenate([m2a["loss"], m2b["loss"]]), m4["loss"], rtol=1e-5)
    # The caller's params are copied, not donated.
    assert all(np.isfinite(x).all() for x in _leaves(params))


def test_steps_on_data_draw_the_documented_batches(model, trainer):
    params, _ = model
    data = worker.toy_data()
    state0 = trainer.init_state(params, 3)
    key = np.asarray(state0.key)
    on_device, metrics = trainer.steps_on_data(state0, trainer.put_data(data), 8, 2)
    assert metrics["loss"].shape == (2,)

    # The same steps, batches drawn on the host with jaxdiff.data.take_batch(fold_in(key, 1)).
    state = trainer.init_state(params, 3)
    data_key = jax.random.fold_in(key, 1)
    for n in range(2):
        state, _ = trainer.step(state, take_batch(data, data_key, n, 8))
    _assert_trees_close(on_device.params, state.params)
    _assert_trees_close(on_device.ema_params, state.ema_params)


def test_batch_draw_table_equals_cond_bitwise(model, schedule, mesh1):
    """The GPU/TPU way of drawing on-device batches (all indices up front, no ``lax.cond``) and
    the CPU way give the same training, bit for bit, across epoch boundaries (24 examples,
    batch 8: an epoch is 3 steps; 5 calls of K=4 cross it often)."""
    params, apply = model
    data = worker.toy_data()
    states = {}
    for draw in ("cond", "table"):
        config = worker.sequence_config(steps_per_call=4, unroll=1, batch_draw=draw)
        trainer = Trainer(apply, schedule, config, mesh=mesh1)
        assert trainer.batch_draw == draw
        on_device = trainer.put_data(data)
        state = trainer.init_state(params, 5)
        for _ in range(5):
            state, _ = trainer.steps_on_data(state, on_device, 8)
        states[draw] = state
        # One compile for every call: the fresh state has the same type as a step's output.
        assert trainer._data_steps[(8, 4)]._cache_size() == 1
    assert int(states["table"].step) == 20
    for a, b in zip(_leaves(states["cond"]), _leaves(states["table"]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert default_scan_options("gpu")[2] == default_scan_options("tpu")[2] == "table"
    assert default_scan_options("cpu")[2] == "cond"
    with pytest.raises(ValueError, match="batch_draw"):
        worker.sequence_config(batch_draw="while")


def test_ema_closed_form_hand_fed():
    d, n = 0.9, 25
    ema0, p = np.float32(2.0), np.float32(-1.0)
    ema, prod = {"w": jnp.full((3,), ema0)}, 1.0
    for t in range(n):
        decay = ema_decay_at(t, d, warmup=False)
        assert float(decay) == pytest.approx(d)
        ema = ema_update(ema, {"w": jnp.full((3,), p)}, decay)
    np.testing.assert_allclose(ema["w"], d**n * ema0 + (1 - d**n) * p, rtol=1e-5)

    ema = {"w": jnp.full((3,), ema0)}
    for t in range(n):
        decay = float(ema_decay_at(t, d, warmup=True))
        assert decay == pytest.approx(min(d, (1 + t) / (10 + t)))
        prod *= decay
        ema = ema_update(ema, {"w": jnp.full((3,), p)}, decay)
    np.testing.assert_allclose(ema["w"], prod * ema0 + (1 - prod) * p, rtol=1e-5)


def test_ema_inside_the_step_matches_closed_form(model, schedule, mesh1):
    """lr = 0 keeps the params fixed at p; starting the EMA at 0 gives (1 - prod d_t) p, with
    the warm-up decays d_t = min(d, (1 + t) / (10 + t))."""
    params, apply = model
    d, n = 0.25, 4  # warm-up decays 0.1, 0.18, then d from t = 2 on
    config = worker.sequence_config(learning_rate=0.0, ema_decay=d, steps_per_call=n, unroll=1)
    trainer = Trainer(apply, schedule, config, mesh=mesh1)
    state = init_train_state(params, trainer.tx, 0)
    state = state._replace(ema_params=jax.tree_util.tree_map(jnp.zeros_like, state.params))
    data = trainer.put_data(worker.toy_data())
    state, metrics = trainer.steps_on_data(sharding.replicate(state, mesh1), data, 8)
    decays = [min(d, (1 + t) / (10 + t)) for t in range(n)]
    assert decays[0] < d and decays[-1] == d  # both branches of the min
    np.testing.assert_allclose(metrics["ema_decay"], decays, rtol=1e-6)
    np.testing.assert_array_equal(metrics["learning_rate"], np.zeros(n))
    _assert_trees_close(state.params, params, atol=0)
    weight = 1.0 - np.prod(decays)
    for e, p in zip(_leaves(state.ema_params), _leaves(params), strict=True):
        np.testing.assert_allclose(e, weight * p, rtol=1e-5, atol=1e-7)
    assert eval_params(state) is state.ema_params
    assert eval_params(state, ema=False) is state.params


def test_label_dropout_rate():
    labels = jnp.arange(40_000, dtype=jnp.int32) % 10
    for p in (0.0, 0.1, 0.5, 1.0):
        out = np.asarray(drop_labels(jax.random.PRNGKey(1), labels, p, 10))
        dropped = out == 10
        assert abs(dropped.mean() - p) < 0.01
        np.testing.assert_array_equal(out[~dropped], np.asarray(labels)[~dropped])


def test_label_dropout_reaches_the_model(schedule):
    """The model sees the null label for about p of the examples inside the step."""
    seen = []

    def apply(params, x, t, labels=None, *, dropout_key=None):
        jax.debug.callback(lambda lab: seen.append(np.asarray(lab)), labels)
        return params["w"] * x

    config = TrainConfig(num_classes=5, label_dropout=0.3)
    step = jax.jit(make_train_step(apply, schedule, config))
    state = init_train_state({"w": jnp.ones(())}, make_optimizer(config), 0)
    batch = {"x": jnp.ones((4000, 2)), "labels": jnp.arange(4000, dtype=jnp.int32) % 5}
    jax.block_until_ready(step(state, batch))
    labels = np.concatenate(seen)
    assert abs((labels == 5).mean() - 0.3) < 0.03


def test_loss_decreases_on_a_toy_problem(model, schedule, mesh1):
    params, apply = model
    x = worker.toy_data(n=512)["x"]  # three tight clusters in 4-D
    config = TrainConfig(
        learning_rate=1e-2, ema_decay=0.99, antithetic=True, steps_per_call=10, unroll=1
    )
    trainer = Trainer(apply, schedule, config, mesh=mesh1)
    state, data = trainer.init_state(params, 0), trainer.put_data({"x": x})
    losses = []
    for _ in range(5):
        state, metrics = trainer.steps_on_data(state, data, 128)
        losses.extend(np.asarray(metrics["loss"]).tolist())
    assert len(losses) == 50 and np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_prediction_targets_trace(model, schedule, prediction):
    """Every target traces to a scalar loss (the targets themselves: tests/test_losses.py)."""
    params, apply = model
    config = TrainConfig(prediction=prediction, antithetic=True)
    state = init_train_state(params, make_optimizer(config), 0)
    out_state, metrics = jax.eval_shape(
        make_train_step(apply, schedule, config), state, {"x": jnp.zeros((8, worker.DIM))}
    )
    assert isinstance(out_state, TrainState)
    assert all(m.shape == () for m in metrics.values())


def test_another_loss_drives_the_step(model, schedule):
    """``loss=``: the step minimises the given objective (here ``sum(w^2) / 2`` over the
    parameters, whose gradient is the parameters themselves), not DDPM's."""
    params, apply = model
    config = TrainConfig(learning_rate=0.1, grad_clip_norm=None, ema_decay=0.0)
    seen = []

    def loss(p, x0, labels, key, dropout_key):
        seen.append((x0.shape, labels, key.shape, dropout_key.shape))
        return 0.5 * sum(jnp.sum(w**2) for w in jax.tree_util.tree_leaves(p))

    tx = make_optimizer(config)
    state = init_train_state(params, tx, 0)
    new, metrics = jax.jit(make_train_step(apply, schedule, config, tx, loss=loss))(
        state, {"x": jnp.ones((8, worker.DIM))}
    )
    assert seen == [((8, worker.DIM), None, state.key.shape, state.key.shape)]
    updates, _ = tx.update(params, state.opt_state, params)  # the gradient is the parameters
    _assert_trees_close(new.params, optax.apply_updates(params, updates))
    np.testing.assert_allclose(metrics["loss"], loss(params, jnp.ones((8, 1)), None,
                                                     state.key, state.key), rtol=1e-6)  # fmt: skip


def test_learning_rate_schedules():
    lr = make_lr_schedule(TrainConfig(learning_rate=1.0, warmup_steps=4))
    np.testing.assert_allclose([lr(s) for s in range(6)], [0.25, 0.5, 0.75, 1, 1, 1])
    lr = make_lr_schedule(
        TrainConfig(
            learning_rate=2.0,
            warmup_steps=2,
            lr_schedule="cosine",
            total_steps=12,
            final_lr_fraction=0.1,
        )
    )
    assert float(lr(0)) == pytest.approx(1.0)
    assert float(lr(2)) == pytest.approx(2.0)
    assert float(lr(7)) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5), rel=1e-6)  # half-way
    assert float(lr(12)) == pytest.approx(0.2) and float(lr(100)) == pytest.approx(0.2)


def test_adamw_decays_and_clipping_bounds_the_update():
    params = {"w": jnp.full((4,), 10.0)}
    zero = {"w": jnp.zeros((4,))}
    tx = make_optimizer(TrainConfig(optimizer="adamw", learning_rate=0.1, weight_decay=0.5))
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * 10.0, rtol=1e-6)
    # With clipping to norm 1 the first Adam step is unchanged in direction, and the clipped
    # gradient is what Adam sees.
    tx = make_optimizer(TrainConfig(grad_clip_norm=1.0))
    clip_state = tx.init(params)[0]
    clipped, _ = optax.clip_by_global_norm(1.0).update({"w": jnp.full((4,), 100.0)}, clip_state)
    assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-6)


def test_init_state_accepts_typed_keys_and_copies(model):
    params, _ = model
    tx = make_optimizer(TrainConfig())
    state = init_train_state(params, tx, jax.random.key(3))
    np.testing.assert_array_equal(state.key, jax.random.PRNGKey(3))
    assert int(state.step) == 0 and state.step.dtype == jnp.int32
    _assert_trees_close(state.ema_params, params, atol=0)
    a, b = jax.tree_util.tree_leaves(state.params)[0], jax.tree_util.tree_leaves(params)[0]
    assert a is not b


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "sgd"}, r"unknown optimizer 'sgd'.*'adam', 'adamw'"),
        ({"weight_decay": 0.1}, "needs optimizer='adamw'"),
        ({"lr_schedule": "linear"}, r"unknown lr_schedule 'linear'.*'constant', 'cosine'"),
        ({"lr_schedule": "cosine"}, "needs total_steps > warmup_steps"),
        ({"prediction": "score"}, r"unknown prediction 'score'.*'eps'"),
        ({"ema_decay": 1.0}, r"ema_decay must lie in \[0, 1\); got 1.0"),
        ({"ema_decay": -0.1}, r"ema_decay must lie in \[0, 1\)"),
        ({"label_dropout": 0.1}, "label_dropout=0.1 needs num_classes"),
        ({"label_dropout": 1.5, "num_classes": 3}, r"label_dropout must lie in \[0, 1\]"),
        ({"steps_per_call": 0}, r"steps_per_call \(K\) must be an int >= 1.*got 0"),
        ({"unroll": 0}, "unroll must be"),
        ({"grad_clip_norm": 0.0}, "grad_clip_norm must be > 0"),
        ({"learning_rate": -1.0}, "learning_rate must be"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_step_input_errors(model, schedule, mesh1):
    params, apply = model
    trainer = Trainer(apply, schedule, worker.sequence_config(), mesh=mesh1)
    state = init_train_state(params, trainer.tx, 0)
    x = jnp.zeros((8, worker.DIM))
    with pytest.raises(ValueError, match="has no 'labels'"):
        trainer.train_step(state, {"x": x})
    with pytest.raises(ValueError, match=r"unknown keys \['y'\]"):
        trainer.train_step(state, {"x": x, "labels": jnp.zeros(8, jnp.int32), "y": x})
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(8,\)"):
        trainer.train_step(state, {"x": x, "labels": jnp.zeros(5, jnp.int32)})
    with pytest.raises(TypeError, match="batch must be a dict"):
        trainer.train_step(state, x)
    with pytest.raises(ValueError, match="K must be an int >= 1; got 0"):
        trainer.steps_on_data(state, trainer.put_data(worker.toy_data()), 8, k=0)
    with pytest.raises(ValueError, match="K must be an int >= 1; got -2"):
        make_data_multi_step(trainer.train_step, 8, -2)
    with pytest.raises(TypeError, match="put_data"):
        trainer.steps_on_data(state, worker.toy_data(), 8, k=1)


def test_batch_not_divisible_message():
    class FakeMesh:  # the real 8-device check runs in tests/test_sharding.py
        devices = np.empty(8, dtype=object)

    with pytest.raises(ValueError) as info:
        sharding.check_batch_size(12, FakeMesh())
    message = str(info.value)
    assert "global batch size 12" in message and "number of devices 8" in message
    assert "e.g. 8 or 16" in message
