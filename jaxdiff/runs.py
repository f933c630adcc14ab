"""Trained runs on disk: the spec that rebuilds a run's model, and :func:`load_run`.

A training run writes its folder as ``config.json`` (the run's settings), ``checkpoints/``
(orbax steps of the whole :class:`~jaxdiff.train.TrainState`) and more. ``config.json`` carries,
under the key ``"model_spec"``, a :class:`ModelSpec`: the model preset, its input shape and
labels, the noise schedule and the training settings. That is all :func:`load_run` needs to
rebuild the model and restore its EMA parameters, whichever experiment wrote the run::

    run = load_run("runs/mnist")
    out = sample(run.apply, run.params, run.schedule, (16, *run.spec.image_shape), key,
                 solver=DDIM(prediction=run.spec.train.prediction),
                 guidance=Guidance(num_classes=run.num_classes) if run.num_classes else None)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdiff.checkpoint import Checkpointer, CorruptCheckpointError
from jaxdiff.models import PRESETS, split_model
from jaxdiff.schedules import Schedule, make_schedule
from jaxdiff.train import TrainConfig, eval_params, init_train_state, make_optimizer

__all__ = ["SPEC_KEY", "ModelSpec", "TrainedRun", "load_run", "read_config"]

#: The key of config.json that holds the :class:`ModelSpec`.
SPEC_KEY = "model_spec"
_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # None: the inputs' dtype (float32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What rebuilds a trained model: architecture, input, labels, schedule, training settings.

    Attributes:
      model: a name of :data:`jaxdiff.models.PRESETS`.
      image_size: input side (square images).
      channels: image channels.
      num_classes: K for a class-conditional model (null label K), else None.
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (parameters are float32 either way).
      seed: the seed of the parameter initialisation; ``rng_impl`` its PRNG implementation
        (None: JAX's default; e.g. ``"rbg"``).
      schedule, num_timesteps, schedule_kwargs: ``make_schedule(schedule, num_timesteps,
        **schedule_kwargs)``.
      train: the :class:`~jaxdiff.train.TrainConfig` of the run (its optimiser shapes the
        checkpoint; its ``prediction`` says what the network predicts).
    """

    model: str
    image_size: int
    channels: int = 1
    num_classes: int | None = None
    dtype: str = "float32"
    seed: int = 0
    rng_impl: str | None = None
    schedule: str = "linear"
    num_timesteps: int = 1000
    schedule_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.model not in PRESETS:
            raise ValueError(
                f"unknown model preset {self.model!r}; choose one of {', '.join(PRESETS)}"
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """One example's shape ``(H, W, C)``."""
        return (self.image_size, self.image_size, self.channels)

    def to_json(self) -> dict:
        """A JSON-ready dict (:meth:`from_json` reads it back)."""
        d = dataclasses.asdict(self)
        d["schedule_kwargs"] = dict(self.schedule_kwargs)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelSpec:
        """The spec of a dict written by :meth:`to_json`; ValueError on unknown keys or values."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown model_spec keys {sorted(unknown)}")
        d = dict(d)
        d["train"] = TrainConfig(**d.get("train", {}))
        return cls(**d)

    def build(self, *, abstract: bool = False) -> tuple[Callable, Any, Schedule]:
        """``(apply, params, schedule)``: the freshly initialised model and its schedule.

        ``abstract=True`` returns ``jax.ShapeDtypeStruct`` params (``nnx.eval_shape``): a
        restore target that skips the initialisers and their compilation.
        """

        def make():
            key = jax.random.key(self.seed, impl=self.rng_impl) if self.rng_impl else self.seed
            return PRESETS[self.model](
                self.channels,
                self.image_size,
                self.num_classes,
                dtype=_DTYPES[self.dtype],
                num_steps=self.num_timesteps,
                rngs=nnx.Rngs(key),
            )

        _graphdef, params, apply = split_model(nnx.eval_shape(make) if abstract else make())
        schedule = make_schedule(self.schedule, self.num_timesteps, **self.schedule_kwargs)
        return apply, params, schedule


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A trained run restored from disk, ready to sample from.

    Attributes:
      spec: the :class:`ModelSpec` it was built from.
      config: its whole config.json (the experiment's settings) as a dict.
      apply: the pure model function ``apply(params, x, t, labels=None)``.
      params: the EMA parameters of the restored checkpoint (what sampling uses).
      schedule: the noise schedule the model was trained with.
      step: the training step of the restored checkpoint.
    """

    spec: ModelSpec
    config: dict
    apply: Callable
    params: Any
    schedule: Schedule
    step: int

    @property
    def num_classes(self) -> int | None:
        """K for a class-conditional model (the null label is K), else None."""
        return self.spec.num_classes


def read_config(run_dir: str | Path) -> tuple[dict, ModelSpec]:
    """``(config, spec)`` of a run folder: its config.json and the :class:`ModelSpec` in it.

    Raises:
      FileNotFoundError: ``run_dir`` holds no config.json (not a run folder).
      ValueError: config.json is unreadable or has no valid model spec.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained run in {run_dir} (no config.json there): train one there, e.g. with "
            f"`python -m experiments.mnist --out {run_dir}`, or name the output folder of one"
        )
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
        if SPEC_KEY not in config:
            raise ValueError(
                f"no {SPEC_KEY!r} entry (written by an older version, or not a model run); "
                "train the model again"
            )
        spec = ModelSpec.from_json(config[SPEC_KEY])
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path} does not describe a trained model: {e}") from e
    return config, spec


def load_run(run_dir: str | Path, step: int | None = None) -> TrainedRun:
    """Rebuild the model of a run folder and restore its EMA parameters.

    Args:
      run_dir: the run's output folder (config.json and checkpoints/).
      step: the checkpoint step to restore; None: the newest intact one.

    Raises:
      FileNotFoundError: no config.json, or no checkpoint in ``run_dir/checkpoints``.
      ValueError: config.json is invalid, the checkpoint does not fit the model it describes,
        or no checkpoint step could be read (all corrupt).
    """
    run_dir = Path(run_dir)
    config, spec = read_config(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    hint = (
        f"no checkpoint in {ckpt_dir}: train one with the command that wrote {run_dir} (finish "
        "an interrupted run with that command and --resume)"
    )
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(hint)
    apply, params, schedule = spec.build(abstract=True)
    tx = make_optimizer(spec.train)
    # Only shapes and dtypes are needed as the restore target: nothing is computed here.
    target = jax.eval_shape(lambda p: init_train_state(p, tx, 0), params)
    with Checkpointer(ckpt_dir, read_only=True) as ckpt:
        if ckpt.latest_step() is None:
            raise FileNotFoundError(hint)
        try:
            state, _meta = ckpt.restore(target, step=step)
        except CorruptCheckpointError as e:
            raise ValueError(str(e)) from e
        restored = ckpt.last_restored_step
    return TrainedRun(
        spec=spec,
        config=config,
        apply=apply,
        params=eval_params(state),
        schedule=schedule,
        step=int(restored),
    )
