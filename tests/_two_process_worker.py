"""Helpers for the training tests: a tiny NNX denoiser, a fixed training sequence, and a worker.

Imported by tests/test_train.py and tests/test_sharding.py, and run as a script in
subprocesses (so that each can set ``XLA_FLAGS`` / start ``jax.distributed`` before JAX loads):

    # one of two processes on localhost, each with 2 CPU devices (4 devices in the mesh):
    python tests/_two_process_worker.py multihost --process-id 0 --num-processes 2 \
        --port 12345 --devices-per-process 2 --out DIR
    # one process with 8 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8):
    python tests/_two_process_worker.py eight --out DIR

Each writes ``DIR/params_<process>.npz`` (the parameter leaves after :func:`run_sequence`),
``DIR/samples_<process>.npz`` (:func:`sample_all` over all devices) and
``DIR/result_<process>.json``; only the main process writes ``DIR/main_only.txt``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

NUM_CLASSES = 3
DIM = 4
GLOBAL_BATCH = 8
DATA_SIZE = 24
GLOO_UNAVAILABLE = 77  # exit code: this jaxlib has no gloo CPU collectives


def _jax():
    import jax  # imported late: the worker sets XLA_FLAGS first

    return jax


class _Lazy:
    """Build the NNX model class only when first used (after the worker configured JAX)."""

    cls = None


def tiny_denoiser_cls():
    if _Lazy.cls is not None:
        return _Lazy.cls
    jax = _jax()
    import jax.numpy as jnp
    from flax import nnx

    class TinyDenoiser(nnx.Module):
        """MLP denoiser for ``x (B, ...)``: flattened x, a sinusoidal t embedding (+ label
        embedding), two hidden layers, optional dropout; returns x's shape."""

        def __init__(
            self,
            dim: int,
            hidden: int = 32,
            num_classes: int | None = None,
            dropout: float = 0.0,
            *,
            rngs: nnx.Rngs,
        ):
            self.emb_dim = 16
            self.dropout = dropout
            self.num_classes = num_classes
            self.inp = nnx.Linear(dim + self.emb_dim, hidden, rngs=rngs)
            self.hid = nnx.Linear(hidden, hidden, rngs=rngs)
            self.out = nnx.Linear(hidden, dim, rngs=rngs)
            self.label = (
                nnx.Embed(num_classes + 1, self.emb_dim, rngs=rngs) if num_classes else None
            )

        def __call__(self, x, t, labels=None, *, dropout_key=None):
            b = x.shape[0]
            half = self.emb_dim // 2
            freqs = jnp.exp(-math.log(1000.0) * jnp.arange(half) / half)
            args = jnp.asarray(t, jnp.float32)[:, None] * freqs
            temb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
            if self.label is not None:
                if labels is None:
                    labels = jnp.full((b,), self.num_classes, jnp.int32)
                temb = temb + self.label(labels)
            h = nnx.silu(self.inp(jnp.concatenate([x.reshape(b, -1), temb], axis=-1)))
            h = nnx.silu(self.hid(h))
            if dropout_key is not None and self.dropout > 0:
                keep = jax.random.bernoulli(dropout_key, 1.0 - self.dropout, h.shape)
                h = jnp.where(keep, h / (1.0 - self.dropout), 0.0)
            return self.out(h).reshape(x.shape)

    _Lazy.cls = TinyDenoiser
    return TinyDenoiser


def tiny_model(dim=DIM, hidden=32, num_classes=NUM_CLASSES, dropout=0.1, seed=0):
    """``(params, apply)`` of a :class:`TinyDenoiser` with the jaxdiff ``apply`` signature."""
    from flax import nnx

    model = tiny_denoiser_cls()(dim, hidden, num_classes, dropout, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)

    def apply(params, x, t, labels=None, *, dropout_key=None):
        return nnx.merge(graphdef, params)(x, t, labels, dropout_key=dropout_key)

    return params, apply


def toy_data(n=DATA_SIZE, dim=DIM, seed=0):
    """Deterministic float32 points ``(n, dim)`` and int32 labels ``(n,)``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    x = (rng.normal(size=(n, dim)) * 0.3 + labels[:, None] - 1.0).astype(np.float32)
    return {"x": x, "labels": labels}


def sequence_config(**overrides):
    from jaxdiff.train import TrainConfig

    kwargs = dict(
        learning_rate=1e-2,
        warmup_steps=2,
        ema_decay=0.9,
        num_classes=NUM_CLASSES,
        label_dropout=0.2,
        steps_per_call=3,
        unroll=1,
    )
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def run_sequence(trainer, params, *, process_index=0, process_count=1):
    """A fixed 6-step run through all three entry points of ``trainer``.

    3 steps with :meth:`Trainer.steps` on a stack of host batches, 1 :meth:`Trainer.step`, then
    2 :meth:`Trainer.steps_on_data` from the dataset on the device. Each process feeds only
    its slice of every global batch. Returns ``(state, loss metrics as a list)``.
    """
    import numpy as np

    data = toy_data()
    global_batches = [
        {k: v[(i * GLOBAL_BATCH) % DATA_SIZE :][:GLOBAL_BATCH] for k, v in data.items()}
        for i in range(4)
    ]
    local = GLOBAL_BATCH // process_count
    sl = slice(process_index * local, (process_index + 1) * local)
    local_batches = [{k: v[sl] for k, v in b.items()} for b in global_batches]

    state = trainer.init_state(params, 42)
    stacked = {k: np.stack([b[k] for b in local_batches[:3]]) for k in ("x", "labels")}
    state, m1 = trainer.steps(state, stacked)
    state, m2 = trainer.step(state, local_batches[3])
    state, m3 = trainer.steps_on_data(state, trainer.put_data(data), GLOBAL_BATCH, 2)
    losses = [float(v) for v in np.asarray(m1["loss"])]
    losses += [float(m2["loss"])] + [float(v) for v in np.asarray(m3["loss"])]
    return state, losses


def sample_cases():
    """``{name: sample() keyword arguments}``: stochastic, guided, chunked, recorded and
    inpainting runs of 13 samples (not a multiple of the device count: padding is exercised)."""
    import numpy as np

    from jaxdiff.samplers import Guidance, Inpaint, Loop

    labels = (np.arange(13) % NUM_CLASSES).astype(np.int32)
    mask = np.zeros((13, DIM), bool)
    mask[:, :2] = True
    return {
        "ddpm_guided_chunked": dict(
            solver="ddpm", steps=10,
            guidance=Guidance(1.0, labels=labels, num_classes=NUM_CLASSES),
            loop=Loop(chunk_size=6),
        ),
        "dpmpp_recorded": dict(solver="dpm++", steps=8,
                               guidance=Guidance(num_classes=NUM_CLASSES), record=(0, 3, -1)),
        "ddim_inpaint": dict(solver="ddim", steps=6, guidance=Guidance(num_classes=NUM_CLASSES),
                             inpaint=Inpaint(mask, np.full((13, DIM), 0.5, np.float32))),
    }  # fmt: skip


def sample_all(apply, params, schedule, mesh=None):
    """Every case of :func:`sample_cases` from ``params`` -> ``{name_samples, name_trajectory}``
    as NumPy (gathered from every process when ``mesh`` spans several)."""
    from jaxdiff import sharding
    from jaxdiff.samplers import sample
    from jaxdiff.schedules import TerminalSignalWarning

    out = {}
    with warnings.catch_warnings():  # the 50-step training schedule keeps signal at its end
        warnings.simplefilter("ignore", TerminalSignalWarning)
        for name, kwargs in sample_cases().items():
            result = sample(apply, params, schedule, (13, DIM), _jax().random.key(7), mesh=mesh,
                            **kwargs)  # fmt: skip
            out[f"{name}_samples"], out[f"{name}_trajectory"] = sharding.gather(tuple(result))
    return out


_COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")


def sampling_collectives(apply, params, schedule) -> dict[str, int]:
    """How often each cross-device collective occurs in the compiled sampling loop split over
    all devices (guided DDPM; the optimised, partitioned HLO that would run)."""
    import numpy as np

    import jaxdiff.samplers.scan as sampler_scan
    from jaxdiff import sharding

    texts = []
    real = sampler_scan._run_ops_compiled

    def capture(platform, mesh):
        compiled = real(platform, mesh)

        def run(cfg, *args):
            texts.append(compiled.lower(cfg, *args).compile().as_text())
            return compiled(cfg, *args)

        return run

    sampler_scan._run_ops_compiled = capture
    try:
        from jaxdiff.samplers import Guidance, Loop, sample

        # Guided DDPM (the guidance doubles the batch inside the loop) in one chunk and one scan.
        guidance = Guidance(1.0, labels=np.arange(16) % NUM_CLASSES, num_classes=NUM_CLASSES)
        sample(apply, params, schedule, (16, DIM), _jax().random.key(7), solver="ddpm",
               steps=10, guidance=guidance, loop=Loop(steps_per_call=None),
               mesh=sharding.make_mesh())  # fmt: skip
    finally:
        sampler_scan._run_ops_compiled = real
    assert len(texts) == 1, len(texts)
    return count_collectives(texts[0])


def count_collectives(hlo_text: str) -> dict[str, int]:
    """``{op: count}`` of the cross-device collectives in compiled HLO text (async included)."""
    return {op: hlo_text.count(f" {op}(") + hlo_text.count(f" {op}-start(") for op in _COLLECTIVES}


def control_collectives() -> dict[str, int]:
    """The same count for a sum over a batch split over all devices: it must all-reduce (the
    check above can see a collective)."""
    import jax.numpy as jnp

    from jaxdiff import sharding

    split = sharding.batch_sharding(sharding.make_mesh())
    x = _jax().device_put(jnp.ones((16,)), split)
    return count_collectives(_jax().jit(jnp.sum).lower(x).compile().as_text())


def local_leaves(tree):
    """This process's copy of every leaf of a replicated tree, as NumPy arrays."""
    import numpy as np

    return [np.asarray(leaf.addressable_data(0)) for leaf in _jax().tree_util.tree_leaves(tree)]


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["multihost", "eight"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--devices-per-process", type=int, default=8)
    args = parser.parse_args(argv)

    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={args.devices_per_process}"
    )
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    jax = _jax()
    import numpy as np

    from jaxdiff import sharding
    from jaxdiff.train import Trainer

    if args.mode == "multihost":
        try:
            sharding.initialize_distributed(
                f"127.0.0.1:{args.port}",
                args.num_processes,
                args.process_id,
                cpu_collectives="gloo",
                initialization_timeout=120,
            )
            jax.devices()
        except Exception as error:
            if "gloo" in str(error).lower() or "collectives" in str(error).lower():
                print(f"GLOO_UNAVAILABLE: {error}", file=sys.stderr)
                return GLOO_UNAVAILABLE
            raise
    out = Path(args.out)
    pid, count = jax.process_index(), jax.process_count()
    result = {
        "process_index": pid,
        "process_count": count,
        "num_devices": jax.device_count(),
        "num_local_devices": jax.local_device_count(),
    }
    params, apply = tiny_model()
    from jaxdiff.schedules import make_schedule

    schedule = make_schedule("linear", num_steps=50)
    trainer = Trainer(apply, schedule, sequence_config(), mesh=sharding.make_mesh())
    state, losses = run_sequence(trainer, params, process_index=pid, process_count=count)
    result["losses"] = losses
    result["step"] = int(state.step.addressable_data(0))
    leaves = local_leaves(state.params)
    np.savez(out / f"params_{pid}.npz", *leaves)
    # Sampling split over every device of every process, from the trained (global) parameters.
    np.savez(out / f"samples_{pid}.npz", **sample_all(apply, state.params, schedule,
                                                      sharding.make_mesh()))  # fmt: skip

    if args.mode == "eight":
        result["sampling_collectives"] = sampling_collectives(apply, state.params, schedule)
        result["control_collectives"] = control_collectives()
        try:  # 12 examples over 8 devices: must fail before anything is compiled
            trainer.step(trainer.init_state(params, 0), toy_data(12))
            result["indivisible_error"] = None
        except ValueError as error:
            result["indivisible_error"] = str(error)

    if sharding.is_main_process():
        (out / "main_only.txt").write_text(f"written by process {pid} of {count}\n")
    (out / f"result_{pid}.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
