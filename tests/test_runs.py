"""jaxdiff.runs: a run folder's model spec round-trips and load_run restores its EMA weights."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxdiff.checkpoint import Checkpointer
from jaxdiff.runs import SPEC_KEY, ModelSpec, load_run, read_config
from jaxdiff.train import TrainConfig, init_train_state, make_optimizer

SPEC = ModelSpec(
    model="unet_tiny_8x8",
    image_size=8,
    num_classes=3,
    seed=5,
    rng_impl="rbg",
    schedule="cosine",
    num_timesteps=50,
    train=TrainConfig(optimizer="adamw", weight_decay=0.01, prediction="v", num_classes=3),
)


def _write_run(run, spec: ModelSpec, step: int = 7):
    """A run folder as an experiment leaves it: config.json with the spec, one checkpoint whose
    EMA parameters are the initial ones plus 1 (so a restore of the raw ones would show)."""
    run.mkdir()
    config = {"seed": spec.seed, "model": "tiny", SPEC_KEY: spec.to_json()}
    (run / "config.json").write_text(json.dumps(config))
    _apply, params, _schedule = spec.build()
    state = init_train_state(params, make_optimizer(spec.train), 0)
    state = state._replace(
        step=state.step + step, ema_params=jax.tree_util.tree_map(lambda p: p + 1.0, params)
    )
    with Checkpointer(run / "checkpoints") as ckpt:
        ckpt.save(step, state, force=True)
    return params


def test_spec_round_trips_through_json():
    again = ModelSpec.from_json(json.loads(json.dumps(SPEC.to_json())))
    assert again == SPEC
    assert again.image_shape == (8, 8, 1)


def test_load_run_restores_the_ema_weights_and_the_model(tmp_path):
    params = _write_run(tmp_path / "run", SPEC)
    run = load_run(tmp_path / "run")
    assert run.step == 7 and run.num_classes == 3 and run.config["model"] == "tiny"
    assert run.schedule.num_steps == 50 and run.schedule.kind == "cosine"
    for got, init in zip(jax.tree.leaves(run.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(init) + 1.0)
    x = np.zeros((2, 8, 8, 1), np.float32)
    assert run.apply(run.params, x, np.array([1, 2]), np.array([0, 3])).shape == x.shape


def test_bad_run_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json there"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(ValueError, match="no 'model_spec' entry"):
        read_config(tmp_path / "old")
    (tmp_path / "bad").mkdir()
    bad = {**SPEC.to_json(), "model": "unet_huge"}
    (tmp_path / "bad" / "config.json").write_text(json.dumps({SPEC_KEY: bad}))
    with pytest.raises(ValueError, match="unknown model preset 'unet_huge'; choose one of"):
        read_config(tmp_path / "bad")
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "config.json").write_text(json.dumps({SPEC_KEY: SPEC.to_json()}))
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_run(tmp_path / "untrained")
