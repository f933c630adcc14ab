"""jaxdiff's per-executable XLA options (jaxdiff/xla_options.py).

On CPU the Trainer and the samplers compile with YNNPACK off (``benchmarks/RESULTS.md``: the
2-D moons step 0.93 -> 0.77 ms, the CPU U-Net's sampling step 188 -> 103 ms); nothing global
may change, other platforms get XLA's defaults, and a user's own ``XLA_FLAGS`` setting of the
flag wins.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdiff import xla_options
from jaxdiff.models import ConditionalMLP, split_model
from jaxdiff.samplers import sample
from jaxdiff.schedules import make_schedule
from jaxdiff.train import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the options concern XLA:CPU only"
)


def test_options_per_platform(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla_options.compiler_options("gpu") is None
    assert xla_options.compiler_options("tpu") is None
    options = xla_options.compiler_options("cpu")
    # This jaxlib (0.10) knows the flag; an older one would get None (XLA's defaults).
    assert options == {xla_options.YNN_FLAG: ""}
    # A user's XLA_FLAGS naming the flag keeps its own value.
    monkeypatch.setenv("XLA_FLAGS", f"--{xla_options.YNN_FLAG}=individual_dot")
    assert xla_options.compiler_options("cpu") is None


def _mlp():
    model = ConditionalMLP(2, 10, 32, rngs=nnx.Rngs(0))
    _, params, apply = split_model(model)
    return params, apply


def test_trainer_compiles_without_ynn_fusions_and_leaves_jax_jit_alone():
    params, apply = _mlp()
    trainer = Trainer(apply, make_schedule("linear", num_steps=10), TrainConfig(steps_per_call=2))
    state = trainer.init_state(params, 0)
    batches = trainer.put_batch({"x": np.ones((2, 8, 2), np.float32)}, stacked=True)
    ours = trainer._steps.lower(state, batches).compile().as_text()
    plain = jax.jit(trainer.train_step).lower(state, {"x": jnp.ones((8, 2))}).compile().as_text()
    assert "__ynn_fusion" not in ours
    # XLA's default for a plain jax.jit in the same process is untouched: jaxlib 0.10 hands
    # the MLP's matmuls to YNNPACK (a later jaxlib with other defaults makes this vacuous).
    if jax.__version_info__[:2] == (0, 10):
        assert "__ynn_fusion" in plain


def test_sampler_compiles_without_ynn_fusions(monkeypatch):
    from jaxdiff.samplers import scan as samplers

    built = []

    def recording_jit(fun, **kwargs):
        jitted = xla_options.jit(fun, **kwargs)

        def call(*args):
            built.append((jitted, args))
            return jitted(*args)

        return call

    samplers._run_ops_compiled.cache_clear()  # build the sampler's executable afresh
    monkeypatch.setattr(samplers, "xla_jit", recording_jit)
    try:
        params, apply = _mlp()
        schedule = make_schedule("cosine", num_steps=10)  # ends at zero signal: no warning
        sample(apply, params, schedule, (16, 2), jax.random.key(1), solver="ddpm", steps=10)
    finally:
        samplers._run_ops_compiled.cache_clear()  # later tests get the unpatched jit
    assert built, "sample() did not go through jaxdiff.xla_options.jit"
    jitted, args = built[0]
    text = jitted.lower(*args).compile().as_text()
    assert "__ynn_fusion" not in text
    assert "dot(" in text  # the MLP's products are there, as XLA's own dots


def test_the_compilation_cache_keeps_programs_for_the_next_run(tmp_path):
    """Two processes compile the same program; the second finds it in ``<cache>/xla``."""
    code = (
        "import jax, jax.numpy as jnp\n"
        "from jaxdiff.xla_options import enable_compilation_cache\n"
        "hits = []\n"
        "jax.monitoring.register_event_listener(\n"
        "    lambda event, **kw: hits.append(event) if 'cache_hits' in event else None)\n"
        "folder = enable_compilation_cache(min_compile_seconds=0)\n"
        "f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())\n"
        "f(jnp.ones((64, 64))).block_until_ready()\n"
        "print(folder, len(hits))\n"
    )
    env = {**os.environ, "JAXDIFF_CACHE_DIR": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def run():
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip(), sorted(p.name for p in (tmp_path / "xla").iterdir())

    first, entries = run()
    assert first == f"{tmp_path / 'xla'} 0" and entries, "nothing was cached"
    folder, hits = run()[0].split()
    assert folder == str(tmp_path / "xla") and int(hits) >= 1  # loaded, not compiled again
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "mine")  # a user's own setting wins
    mine = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert mine.stdout.strip() == f"{tmp_path / 'mine'} 0"


def test_deterministic_ops_must_come_before_the_backend_starts(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    jnp.zeros(()).block_until_ready()  # this process's backend is running
    with pytest.raises(RuntimeError, match="before any JAX computation"):
        xla_options.enable_deterministic_ops()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1"
    # Named already (by the user): nothing to do, no error.
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
    assert xla_options.enable_deterministic_ops() == "--xla_gpu_deterministic_ops=true"


@pytest.mark.parametrize("flag_name", [xla_options.DETERMINISTIC_FLAG, "xla_gpu_determinstic_ops"])
def test_xla_knows_the_deterministic_flag(flag_name):
    """XLA aborts at backend start on a flag it does not know (the misspelt one here), so a
    clean run means this jaxlib reads the flag that enable_deterministic_ops sets."""
    code = (
        "import os\n"
        "from jaxdiff import xla_options\n"
        f"xla_options.DETERMINISTIC_FLAG = {flag_name!r}\n"
        "flags = xla_options.enable_deterministic_ops()\n"
        "import jax.numpy as jnp\n"
        "print(flags, float(jnp.ones(3).sum()))\n"
    )
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    if flag_name == xla_options.DETERMINISTIC_FLAG:
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.split() == [f"--{flag_name}=true", "3.0"]
    else:
        assert result.returncode != 0 and "Unknown flag" in result.stderr, result.stderr[-2000:]
