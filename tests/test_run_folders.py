"""Nothing lost: a run folder is only replaced by its own experiment, a resume may lower the
learning rate, and an evaluation is written beside a run's files, never over them."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from experiments import evaluate, mnist, toy2d
from experiments._cli import parse_config, run_main
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.data import make_points
from jaxdiff.outputs import read_metrics
from jaxdiff.runs import SPEC_KEY

TINY_TOY2D = [
    "--num-points", "256", "--batch-size", "32", "--hidden", "16", "--num-timesteps", "20",
    "--beta-end", "0.5", "--num-samples", "64", "--steps-per-call", "10",
    "--checkpoint-every", "10", "--gif-frames", "2", "--no-progress", "--no-evaluate",
]  # fmt: skip


def _mnist_config_json(marked: bool) -> dict:
    """The config.json an experiments.mnist run writes (``marked``) or wrote before runs
    recorded their experiment."""
    config, _preset = mnist.resolve(mnist.MnistConfig(model="tiny"), backend="cpu")
    record = {**dataclasses.asdict(config), SPEC_KEY: mnist.model_spec(config).to_json()}
    return {**record, "experiment": "experiments.mnist"} if marked else record


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "older-unmarked"])
def test_toy2d_overwrite_refuses_an_mnist_run(tmp_path, marked, capsys):
    run = tmp_path / "mnist"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(_mnist_config_json(marked)))
    (run / "checkpoints").mkdir()
    argv = [*TINY_TOY2D, "--train-steps", "10", "--out", str(run), "--overwrite"]
    assert run_main(toy2d.Toy2dConfig, toy2d.main, argv, prog=toy2d.PROG) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    what = "experiments.mnist" if marked else "another experiment"
    assert f"holds a run of {what}" in error and "pick another --out" in error, error
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json"]


def test_toy2d_resume_with_a_lower_learning_rate_warns_and_continues(tmp_path):
    out = tmp_path / "run"
    argv = [*TINY_TOY2D, "--out", str(out)]
    toy2d.main(parse_config(toy2d.Toy2dConfig, [*argv, "--train-steps", "10"]))
    lower = [*argv, "--train-steps", "20", "--learning-rate", "5e-4", "--resume"]
    with pytest.warns(UserWarning, match=r"continues with learning_rate: 0.001 -> 0.0005$"):
        toy2d.main(parse_config(toy2d.Toy2dConfig, lower))
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 21))
    with Checkpointer(out / "checkpoints", read_only=True) as ckpt:
        assert ckpt.read_metadata(20)["config"]["learning_rate"] == 5e-4
        assert ckpt.read_metadata(10)["config"]["learning_rate"] == 1e-3
    # a setting of the model stays refused
    with pytest.raises(ValueError, match=r"differs from this one in hidden: 16 -> 32"):
        toy2d.main(parse_config(toy2d.Toy2dConfig, [*lower, "--hidden", "32"]))


def test_evaluate_out_writes_its_own_file_beside_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"loss": 0.1}\n')
    np.save(run / "samples.npy", make_points("moons", 300, seed=5))
    argv = ["--samples", str(run / "samples.npy"), "--kind", "points", "--dataset", "moons",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(run)]  # fmt: skip
    with pytest.warns(UserWarning, match="only 300 samples"):
        assert evaluate.cli(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((run / evaluate.EVALUATION_FILE).read_text()) == printed
    assert (run / "metrics.json").read_text() == '{"loss": 0.1}\n'
    assert sorted(p.name for p in run.iterdir()) == [
        "evaluation.json",
        "metrics.json",
        "samples.npy",
    ]


def test_evaluate_refuses_an_unwritable_out_before_the_evaluation(tmp_path, capsys):
    samples = tmp_path / "samples.npy"
    np.save(samples, make_points("moons", 300, seed=5))
    argv = ["--samples", str(samples), "--kind", "points", "--dataset", "moons",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(samples)]  # fmt: skip
    assert evaluate.cli(argv) == 2
    assert "cannot write to output directory" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # nothing was computed
    assert samples.is_file()
