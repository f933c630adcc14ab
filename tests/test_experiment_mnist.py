"""Smoke test of `python -m experiments.mnist`: tiny settings, output contract, resume, CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tiny_runs import MNIST_TINY

from experiments import mnist
from experiments._cli import parse_config
from jaxdiff.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]

TINY = MNIST_TINY


def _run(argv):
    return mnist.main(parse_config(mnist.MnistConfig, argv))


def test_mnist_smoke_output_contract_and_resume(mnist_data_dir, tmp_path):
    out = tmp_path / "run"
    common = [*TINY, "--out", str(out), "--data-dir", str(mnist_data_dir)]
    metrics = _run(common)

    for name in (
        "config.json", "metrics.jsonl", "metrics.json", "samples.npy", "report.md",
        "samples_vs_real.png", "reverse_process.png", "reverse_histograms.png",
        "reverse_process.gif", "forward_process.png", "loss_curves.png",
        "progress/samples_0000003.png", "progress/samples_0000006.png",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    samples = np.load(out / "samples.npy")
    assert samples.shape == (12, 28, 28, 1) and samples.dtype == np.float32
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 7))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["train_steps"] == 6 and saved["sample_steps"] == 4
    assert metrics["parameters"] == saved["parameters"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "tiny" and config["preset"] in ("cpu", "gpu")
    report = (out / "report.md").read_text()
    assert "samples_vs_real.png" in report and "loss_curves.png" in report
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == [
        "3", "6",
    ]  # fmt: skip

    # An existing run is never overwritten by accident.
    with pytest.raises(FileExistsError, match="--resume"):
        _run(common)
    with pytest.raises(ValueError, match="batch_size: 8 -> 16"):
        _run([*common, "--resume", "--batch-size", "16"])

    # --resume with more steps continues from step 6; the log continues, nothing is repeated.
    _run([*common, "--resume", "--train-steps", "9"])
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 10))
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == 9


def test_mnist_class_conditional_smoke_on_a_fresh_machine(mnist_mirror, tmp_path, monkeypatch):
    """No prepared copy anywhere (empty HOME, no TFDS_DATA_DIR): MNIST comes from a mirror of the
    IDX files (``file://``), and the report says so."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setenv("JAXDIFF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("JAXDIFF_MNIST_URL", mnist_mirror.as_uri())
    monkeypatch.setenv("JAXDIFF_MNIST_SHA256", str(mnist_mirror / "checksums.tsv"))
    out = tmp_path / "cond"
    argv = [*TINY, "--out", str(out)]
    _run([*argv, "--class-conditional", "--guidance-scale", "2", "--train-steps", "3"])
    labels = np.load(out / "labels.npy")
    assert labels.shape == (12,) and set(labels.tolist()) == set(range(10))
    assert (out / "samples_by_class.png").is_file()
    source = json.loads((out / "metrics.json").read_text())["data_source"]
    assert source.startswith(f"MNIST IDX files from {mnist_mirror.as_uri()}/"), source
    assert source in (out / "report.md").read_text()
    assert (tmp_path / "cache" / "datasets" / "mnist" / "idx" / "train.npz").is_file()
    # fewer samples than digits: the reverse-process figures show all of them
    _run([*argv, "--resume", "--num-samples", "4", "--guidance-scale", "2", "--train-steps", "3"])
    assert np.load(out / "labels.npy").tolist() == [0, 1, 2, 3]


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "experiments.mnist", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--train-steps", "0"], "--train-steps must be >= 1, got 0"),
        (["--image-size", "30"], "--image-size must be 28 or 32, got 30"),
        (["--sampler", "plms"], "invalid choice: 'plms'"),
        (["--resume", "--overwrite"], "exclude each other"),
    ],
)
def test_mnist_bad_flags_exit_2_with_one_clear_line(args, message):
    result = _cli(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "usage:" in result.stderr


def test_mnist_missing_data_says_what_to_pass(tmp_path):
    result = _cli("--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--data-dir" in result.stderr or "TFDS_DATA_DIR" in result.stderr
    assert not (tmp_path / "o").exists()  # nothing was created before the input check


def test_help_lists_every_option_with_its_default():
    result = _cli("--help")
    assert result.returncode == 0
    for field in dataclasses.fields(mnist.MnistConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in result.stdout, flag
    assert "(default: 3)" in result.stdout  # --keep-checkpoints
    assert "cpu 1000, gpu 10000" in result.stdout  # --num-samples, sized by the preset


def test_presets_resolve_per_backend():
    cpu, _ = mnist.resolve(mnist.MnistConfig(), backend="cpu")
    gpu, _ = mnist.resolve(mnist.MnistConfig(), backend="gpu")
    assert cpu.preset == "cpu" and cpu.model == "compact" and cpu.num_samples >= 1000
    assert gpu.preset == "gpu" and gpu.model == "full"
    assert (cpu.num_samples, gpu.num_samples) == (1000, 10_000)  # FID on 10,000 on accelerators
    # bfloat16 on accelerators (checked equal in quality on the CPU); the CNN is float32 only.
    assert (cpu.dtype, gpu.dtype) == ("float32", "bfloat16")
    cnn, _ = mnist.resolve(mnist.MnistConfig(model="cnn"), backend="gpu")
    assert cnn.dtype == "float32" and not cnn.class_conditional
    # The gpu preset brings the accelerator's loop wherever it runs; the cpu one the backend's.
    gpu_tc = mnist.build(gpu, abstract=True)[3]
    assert (gpu_tc.steps_per_call, gpu_tc.unroll, gpu_tc.batch_draw) == (10, 1, "table")
    cpu_tc = mnist.build(cpu, abstract=True)[3]
    assert (cpu_tc.steps_per_call, cpu_tc.unroll, cpu_tc.batch_draw) == (None, None, None)
    # A preset batch is rounded to the devices; a named one is refused with the nearest sizes.
    assert mnist.fit_batch_to_devices(gpu, False, 6).batch_size == 132
    with pytest.raises(ValueError, match="use 126 or 132"):
        mnist.fit_batch_to_devices(gpu, True, 6)
    bf16, _ = mnist.resolve(mnist.MnistConfig(dtype="bfloat16", model="tiny"), backend="cpu")
    apply, params, _, _ = mnist.build(bf16)
    x, t = jnp.zeros((2, 28, 28, 1)), jnp.zeros((2,), jnp.int32)
    traced = jax.make_jaxpr(apply)(params, x, t)
    assert "bf16" in str(traced) and apply(params, x, t).dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
    assert (cpu.sampler, cpu.sample_steps) == ("ddpm", 25)
    assert (gpu.sampler, gpu.sample_steps) == ("dpm++", 20)
    assert (cpu.schedule, cpu.loss_weighting) == ("cosine", "min_snr")
    assert (gpu.schedule, gpu.loss_weighting) == ("linear", "simple")
    # the weighting reaches the loss; a schedule on the command line wins over the preset
    mine, _ = mnist.resolve(mnist.MnistConfig(schedule="linear", snr_gamma=2.0), backend="cpu")
    _, _, schedule, train_config = mnist.build(mine, abstract=True)
    assert schedule.kind == "linear" and mine.loss_weighting == "min_snr"
    assert (train_config.loss_weighting, train_config.snr_gamma) == ("min_snr", 2.0)
    # A sampler named on the command line keeps its own default steps, or the ones given.
    ddim, _ = mnist.resolve(mnist.MnistConfig(sampler="ddim"), backend="cpu")
    assert (ddim.sampler, ddim.sample_steps) == ("ddim", None)
    steps, _ = mnist.resolve(mnist.MnistConfig(sample_steps=40), backend="cpu")
    assert (steps.sampler, steps.sample_steps) == ("ddpm", 40)
    mine, _ = mnist.resolve(mnist.MnistConfig(train_steps=50), backend="cpu")
    assert mine.train_steps == 50 and mine.warmup_steps == 5  # warm-up shrunk to fit the run


def test_lr_schedule_flag_reaches_the_optimiser():
    """``--lr-schedule cosine`` decays to 0 at --train-steps; the presets keep a constant rate."""
    from jaxdiff.train import make_lr_schedule

    cpu, _ = mnist.resolve(mnist.MnistConfig(), backend="cpu")
    assert cpu.lr_schedule == "constant"
    config, _ = mnist.resolve(
        mnist.MnistConfig(lr_schedule="cosine", train_steps=200, warmup_steps=10), backend="cpu"
    )
    *_, train_config = mnist.build(config, abstract=True)
    assert (train_config.lr_schedule, train_config.total_steps) == ("cosine", 200)
    lr = make_lr_schedule(train_config)
    assert float(lr(9)) == pytest.approx(2e-3)  # end of warm-up: the peak
    assert float(lr(105)) == pytest.approx(1e-3, rel=1e-2)  # half-way through the decay
    assert float(lr(199)) < 1e-6


def test_cnn_with_a_constant_schedule_is_the_small_cnn_tutorials_recipe():
    config, _ = mnist.resolve(
        mnist.MnistConfig(model="cnn", schedule="constant", alpha=0.99), backend="cpu"
    )
    spec = mnist.model_spec(config)
    assert (spec.model, spec.schedule, dict(spec.schedule_kwargs)) == (
        "small_cnn",
        "constant",
        {"a": 0.99},
    )
    _apply, params, schedule, _train = mnist.build(config, abstract=True)
    assert sum(np.prod(p.shape) for p in jax.tree.leaves(params)) == 42_433
    # alphas_cumprod[t] = a**(t + 1), here at t = T - 1 (float32 of a float64 product)
    np.testing.assert_allclose(float(schedule.alphas_cumprod[-1]), 0.99**1000, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "constant"}, "--schedule constant needs --alpha A"),
        ({"alpha": 0.99}, "--alpha needs --schedule constant"),
        ({"schedule": "constant", "alpha": 1.5}, r"--alpha must lie in \(0, 1\), got 1.5"),
        ({"model": "cnn", "class_conditional": True}, "--model cnn is unconditional"),
    ],
)
def test_cnn_and_constant_schedule_refuse_what_they_cannot_do(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mnist.MnistConfig(**kwargs)
