"""The training loop: records, checkpoints on their multiples, hooks, resume, non-finite stop."""

from __future__ import annotations

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdiff.checkpoint import Checkpointer
from jaxdiff.loop import DivergenceError, DivergenceRule, TrainingInterrupted, fit, steps_per_second
from jaxdiff.loop.health import Health, check_health
from jaxdiff.models import SinusoidalMLP, split_model
from jaxdiff.outputs import MetricsLog, read_metrics
from jaxdiff.schedules import make_schedule
from jaxdiff.train import TrainConfig, Trainer

BATCH = 8


@pytest.fixture(scope="module")
def setup():
    model = SinusoidalMLP(2, hidden=16, depth=1, time_dim=8, rngs=nnx.Rngs(0))
    _, params, apply = split_model(model)
    schedule = make_schedule("linear", num_steps=20)
    config = TrainConfig(learning_rate=1e-3, ema_decay=0.9, steps_per_call=3, unroll=1)
    trainer = Trainer(apply, schedule, config)
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    return trainer, params, x


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def test_fit_records_checkpoints_and_hooks(setup, tmp_path):
    trainer, params, x = setup
    data = trainer.put_data({"x": x})
    seen = []
    with (
        Checkpointer(tmp_path / "ckpt", save_every=4, async_save=False) as ckpt,
        MetricsLog(tmp_path / "metrics.jsonl") as log,
    ):
        state, records = fit(
            trainer,
            trainer.init_state(params, 0),
            data,
            num_steps=10,
            batch_size=BATCH,
            checkpointer=ckpt,
            metrics_log=log,
            hooks=[(5, lambda s, st: seen.append(s))],
            progress=False,
        )
        # Calls are cut at the event multiples (4, 5, 8), the final step is always saved.
        assert ckpt.all_steps() == [4, 8, 10]
    assert seen == [5, 10]
    assert int(state.step) == 10
    assert [r["step"] for r in records] == list(range(1, 11))
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    assert read_metrics(tmp_path / "metrics.jsonl") == records
    assert set(records[0]) >= {"step", "loss", "grad_norm", "learning_rate", "ema_decay", "time"}


def test_fit_resume_is_bitwise_identical(setup, tmp_path):
    """6 steps straight == 3 steps, checkpoint, restore, 3 more steps (different call splits)."""
    trainer, params, x = setup
    data = trainer.put_data({"x": x})
    straight, _ = fit(
        trainer,
        trainer.init_state(params, 1),
        data,
        num_steps=6,
        batch_size=BATCH,
        progress=False,
    )
    with Checkpointer(tmp_path / "c", async_save=False) as ckpt:
        fit(
            trainer,
            trainer.init_state(params, 1),
            data,
            num_steps=3,
            batch_size=BATCH,
            checkpointer=ckpt,
            progress=False,
        )
    with Checkpointer(tmp_path / "c", async_save=False) as ckpt:
        restored, _ = ckpt.restore(trainer.init_state(params, 1))
        assert int(restored.step) == 3
        resumed, records = fit(
            trainer,
            restored,
            data,
            num_steps=6,
            batch_size=BATCH,
            checkpointer=ckpt,
            progress=False,
        )
    assert [r["step"] for r in records] == [4, 5, 6]
    for a, b in zip(_leaves(straight), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(setup, tmp_path):
    trainer, params, x = setup
    with Checkpointer(tmp_path / "c", save_every=3, async_save=False) as ckpt:
        state, _ = fit(
            trainer,
            trainer.init_state(params, 2),
            trainer.put_data({"x": x}),
            num_steps=3,
            batch_size=BATCH,
            checkpointer=ckpt,
            progress=False,
        )
        # put_data refuses NaN host data; a poisoned array already on the device gets through
        bad = trainer.put_data({"x": jnp.full(x.shape, jnp.nan, x.dtype)})
        with pytest.raises(
            DivergenceError, match=r"diverged at step 4: the loss is nan.*step 3"
        ) as e:
            fit(
                trainer,
                state,
                bad,
                num_steps=9,
                batch_size=BATCH,
                checkpointer=ckpt,
                progress=False,
            )
        assert e.value.step == 4 and e.value.last_checkpoint == 3
        assert ckpt.all_steps() == [3]  # the bad state was never saved


def test_streaming_batches_give_the_same_loop(setup):
    trainer, params, _ = setup
    k = trainer.steps_per_call
    rng = np.random.default_rng(3)

    def batches():
        while True:
            yield {"x": rng.normal(size=(k, BATCH, 2)).astype(np.float32)}

    state, records = fit(
        trainer,
        trainer.init_state(params, 0),
        batches(),
        num_steps=2 * k,
        batch_size=BATCH,
        progress=False,
    )
    assert int(state.step) == 2 * k and len(records) == 2 * k
    with pytest.raises(ValueError, match="ran out at step 0"):
        fit(
            trainer,
            trainer.init_state(params, 0),
            iter([]),
            num_steps=3,
            batch_size=BATCH,
            progress=False,
        )


def test_bad_arguments(setup):
    trainer, params, x = setup
    data = trainer.put_data({"x": x})
    state = trainer.init_state(params, 0)
    with pytest.raises(ValueError, match="must be >= 1, got 0, 8, "):
        fit(trainer, state, data, num_steps=0, batch_size=BATCH)
    with pytest.raises(ValueError, match=r"hook intervals must be >= 1, got 2, 8, \[0\]"):
        fit(trainer, state, data, num_steps=2, batch_size=BATCH, hooks=[(0, print)])
    state, _ = fit(trainer, state, data, num_steps=3, batch_size=BATCH, progress=False)
    with pytest.raises(ValueError, match="already at step 3, beyond num_steps=2"):
        fit(trainer, state, data, num_steps=2, batch_size=BATCH)


def test_steps_per_second_skips_the_compile_call():
    records = [{"time": 10.0}] * 3 + [{"time": 11.0}] * 3 + [{"time": 12.0}] * 3
    assert steps_per_second(records) == pytest.approx(6 / 2.0)
    assert np.isnan(steps_per_second(records[:3]))


def test_fit_uses_no_host_batches_for_on_device_data(setup):
    """The on-device path takes device arrays only (host arrays would be copied every call)."""
    trainer, params, x = setup
    with pytest.raises(TypeError, match="put_data"):
        fit(
            trainer,
            trainer.init_state(params, 0),
            {"x": jnp.asarray(x).__array__()},
            num_steps=3,
            batch_size=BATCH,
        )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_call_and_saves_its_state(setup, tmp_path, signum):
    """A real SIGINT or SIGTERM (sent from a hook after step 4) is honoured after the next call:
    the state at step 6 is checked, saved and the loop raises TrainingInterrupted; the handlers
    are put back afterwards. Subprocess tests (tests/test_interrupts.py) send it from outside."""
    trainer, params, x = setup
    before = signal.getsignal(signum)

    def send(step, state):
        if step == 4:
            os.kill(os.getpid(), signum)

    with Checkpointer(tmp_path / "c", save_every=100, async_save=False) as ckpt:
        with pytest.raises(TrainingInterrupted, match="at step 6 is saved") as e:
            fit(
                trainer, trainer.init_state(params, 0), trainer.put_data({"x": x}),
                num_steps=9, batch_size=BATCH, checkpointer=ckpt, hooks=[(2, send)],
                progress=False,
            )  # fmt: skip
        assert (e.value.signum, e.value.step, e.value.exit_code) == (signum, 6, 128 + signum)
        assert ckpt.all_steps() == [6]
        restored, _ = ckpt.restore(trainer.init_state(params, 0))
        assert int(restored.step) == 6
    assert signal.getsignal(signum) is before


def test_health_rule_on_hand_made_losses():
    rule = DivergenceRule(factor=10.0, decay=0.5, warmup=2)
    # the running mean: 1, then 0.5 * 1 + 0.5 * 3 = 2; 25 > 10 * 2 is divergence at index 2
    health, bad, why = check_health(rule, Health(), np.array([1.0, 3.0, 25.0, 1.0]), None)
    assert (bad, health) == (2, Health(2.0, 2)) and "over 10 times its running mean 2" in why
    # 19 < 10 * 2 is not; and a spike during the warm-up never counts
    assert check_health(rule, Health(), np.array([1.0, 3.0, 19.0]), None)[1] is None
    assert check_health(rule, Health(), np.array([1.0, 1e9]), None)[1] is None
    # non-finite values count from the first step, the gradient norm too
    assert check_health(rule, Health(), np.array([np.inf]), None)[1:] == (0, "the loss is inf")
    bad_grad = check_health(rule, Health(), np.array([1.0, 1.0]), np.array([1.0, np.nan]))
    assert bad_grad[1:] == (1, "the gradient norm is nan")


def test_an_exploding_loss_stops_training_before_it_is_saved(setup, tmp_path):
    """A learning rate of 1 makes the loss jump from ~1.5 to ~4e4 at step 2, still finite; the
    rule stops there (over 100x its running mean) and no later state is checkpointed."""
    _, params, x = setup
    _, _, apply = split_model(SinusoidalMLP(2, hidden=16, depth=1, time_dim=8, rngs=nnx.Rngs(0)))
    config = TrainConfig(learning_rate=1.0, grad_clip_norm=None, steps_per_call=3, unroll=1)
    trainer = Trainer(apply, make_schedule("linear", num_steps=20), config)
    with Checkpointer(tmp_path / "c", save_every=1, async_save=False) as ckpt:
        with pytest.raises(DivergenceError, match="over 100 times its running mean") as e:
            fit(
                trainer, trainer.init_state(params, 0), trainer.put_data({"x": x}),
                num_steps=200, batch_size=BATCH, checkpointer=ckpt, progress=False,
            )  # fmt: skip
        assert ckpt.all_steps()[-1] == e.value.step - 1 == e.value.last_checkpoint


def test_the_gpu_style_loop_reads_metrics_once_per_call_one_call_behind(setup, monkeypatch):
    """A rolled K=10 scan with batch indices drawn without control flow (the GPU/TPU defaults,
    forced on the CPU), under ``jax.transfer_guard("disallow")``: no implicit transfer anywhere,
    one explicit device-to-host fetch per compiled call, and each call's metrics read only after
    the next call has been dispatched, so the devices never wait for the host's logging."""
    _, params, data = setup
    _, _, apply = split_model(SinusoidalMLP(2, hidden=16, depth=1, time_dim=8, rngs=nnx.Rngs(0)))
    config = TrainConfig(learning_rate=1e-3, steps_per_call=10, unroll=1, batch_draw="table")
    trainer = Trainer(apply, make_schedule("linear", num_steps=20), config)
    assert (trainer.steps_per_call, trainer.unroll, trainer.batch_draw) == (10, 1, "table")
    on_device = trainer.put_data({"x": data})
    state = trainer.init_state(params, 0)

    events: list[str] = []
    real_get, real_call = jax.device_get, trainer.steps_on_data
    monkeypatch.setattr(jax, "device_get", lambda x: (events.append("get"), real_get(x))[1])
    monkeypatch.setattr(
        trainer, "steps_on_data", lambda *a: (events.append("call"), real_call(*a))[1]
    )
    with jax.transfer_guard("disallow"):
        state, records = fit(trainer, state, on_device, num_steps=50, batch_size=16, progress=False)
    assert [r["step"] for r in records] == list(range(1, 51))
    assert int(real_get(state.step)) == 50
    # The start step; then call 1, call 2 before call 1's metrics, ...; the last call is read
    # at the end (before the final save).
    assert events == ["get", "call"] + ["call", "get"] * 4 + ["get"]
