"""Smoke test of `python -m experiments.inpaint` on a tiny MNIST checkpoint trained in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _tiny_runs import MNIST_TINY

from experiments import inpaint, mnist
from experiments._cli import parse_config, run_main
from jaxdiff import data as jdata
from jaxdiff.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]

# The checkpoint: the MNIST smoke test's settings cut to 3 steps (one compiled call of K=3), so
# that both compile the same programs once per session (see _tiny_runs.py). Class-conditional:
# guided sampling evaluates conditional and null labels in one batched call per step.
TINY_MNIST = [*MNIST_TINY, "--train-steps", "3"]
# 2 steps + 1 resampling jump of 1 step = 3 model calls: one compiled chunk of the CPU loop.
TINY_INPAINT = [
    "--num-images", "2", "--sampler", "ddpm", "--sample-steps", "2", "--resample-jumps", "1",
    "--jump-length", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(mnist_data_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("mnist") / "run"
    argv = [*TINY_MNIST, "--out", str(run), "--data-dir", str(mnist_data_dir)]
    mnist.main(parse_config(mnist.MnistConfig, argv))
    return run


def _inpaint(*argv):
    return inpaint.main(parse_config(inpaint.InpaintConfig, list(argv)))


def test_inpaint_output_contract_and_exact_known_pixels(tiny_run, mnist_data_dir, tmp_path):
    out = tmp_path / "inpaint"
    common = [*TINY_INPAINT, "--checkpoint", str(tiny_run), "--data-dir", str(mnist_data_dir)]
    metrics = _inpaint(*common, "--out", str(out))

    for name in (
        "config.json", "metrics.jsonl", "metrics.json", "samples.npy", "masks.npy",
        "inpaint_grid.png", "report.md",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    samples, masks = np.load(out / "samples.npy"), np.load(out / "masks.npy")
    assert samples.shape == masks.shape == (3 * 2, 28, 28, 1)
    assert samples.dtype == np.float32 and masks.dtype == np.bool_
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    # Known pixels are the input, bit for bit (mask-major order: center, left, random).
    images, _ = jdata.load_mnist("test", data_dir=mnist_data_dir, limit=2)
    originals = mnist.to_images(np.tile(images, (3, 1, 1, 1)))
    np.testing.assert_array_equal(samples[masks], originals[masks])
    assert masks[:2].mean() == 0.75 and masks[2:4].mean() == 0.5
    assert masks[4:].sum(axis=(1, 2, 3)).tolist() == [round(0.3 * 28 * 28)] * 2

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["known_pixels_exact"] is True and metrics["known_pixels_exact"] is True
    assert list(saved["masks"]) == ["center", "left", "random"]
    for per_mask in saved["masks"].values():
        assert per_mask["known_max_abs_diff"] == 0.0
        assert per_mask["known_max_abs_diff_samples_npy"] == 0.0
        assert np.isfinite(per_mask["mse_unknown"]) and per_mask["mse_unknown"] > 0
        assert len(per_mask["mse_unknown_per_image"]) == 2
    assert saved["checkpoint_step"] == 3 and saved["model"] == "tiny"
    # (2 steps + 1 jump) x 2: guidance evaluates the conditional and the null label
    assert saved["sample_steps"] == 2 and saved["model_evaluations_per_image"] == 2 * (2 + 1)
    assert saved["conditioning"] == "conditioned on the true labels (guidance scale 0.5)"
    records = read_metrics(out / "metrics.jsonl")
    assert [(r["mask"], r["image"]) for r in records] == [
        (k, j) for k in ("center", "left", "random") for j in range(2)
    ]
    assert all(r["known_max_abs_diff"] == 0.0 for r in records)
    report = (out / "report.md").read_text()
    assert "inpaint_grid.png" in report and "bit for bit" in report

    # An existing --out is reused only with the same config, or replaced with --overwrite
    # (same shapes as above, so the compiled sampler is reused).
    with pytest.raises(FileExistsError, match="seed: 0 -> 1"):
        _inpaint(*common, "--out", str(out), "--seed", "1")
    _inpaint(*common, "--out", str(out), "--seed", "1", "--overwrite")
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    new_masks = np.load(out / "masks.npy")
    np.testing.assert_array_equal(new_masks[:4], masks[:4])  # center, left: fixed
    assert (new_masks[4:] != masks[4:]).any()  # random: drawn from the seed


def test_make_masks_hide_what_they_say():
    center = inpaint.make_masks("center", 1, 28, 0.3, 0)[0, ..., 0]
    assert not center[7:21, 7:21].any() and center.sum() == 28 * 28 - 14 * 14
    left = inpaint.make_masks("left", 1, 32, 0.3, 0)[0, ..., 0]
    assert not left[:, :16].any() and left[:, 16:].all()
    a = inpaint.make_masks("random", 3, 28, 0.25, seed=1)
    b = inpaint.make_masks("random", 3, 28, 0.25, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.sum(axis=(1, 2, 3)).tolist() == [196, 196, 196] and not (a[0] == a[1]).all()
    assert inpaint.model_evaluations(50, 4, 5) == 50 + 4 * 9 * 5


def test_missing_checkpoint_says_what_to_pass(tiny_run, tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    argv = ["--checkpoint", str(nowhere), "--out", str(tmp_path / "o")]
    assert run_main(inpaint.InpaintConfig, inpaint.main, argv, prog=inpaint.PROG) == 2
    err = capsys.readouterr().err
    assert f"python -m experiments.mnist --out {nowhere}" in err and "--checkpoint" in err
    assert not (tmp_path / "o").exists()  # nothing was created before the input check

    # A run directory whose checkpoints are gone.
    empty = tmp_path / "untrained"
    empty.mkdir()
    shutil.copy(tiny_run / "config.json", empty / "config.json")
    argv = ["--checkpoint", str(empty), "--out", str(tmp_path / "o")]
    assert run_main(inpaint.InpaintConfig, inpaint.main, argv, prog=inpaint.PROG) == 2
    err = capsys.readouterr().err
    assert f"no checkpoint in {empty / 'checkpoints'}" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_out_at_or_in_the_checkpoint_run_is_refused_and_deletes_nothing(
    tiny_run, mnist_data_dir, capsys
):
    assert json.loads((tiny_run / "config.json").read_text())["experiment"] == "experiments.mnist"
    before = sorted(p.relative_to(tiny_run) for p in tiny_run.rglob("*"))
    common = [*TINY_INPAINT, "--checkpoint", str(tiny_run), "--data-dir", str(mnist_data_dir)]
    for out, flag, where in (
        (tiny_run, "--overwrite", "is the --checkpoint folder"),
        (tiny_run / "inpaint", "--no-overwrite", "lies inside --checkpoint"),
    ):  # every combination of flags: tests/test_outputs.py
        argv = [*common, "--out", str(out), flag]
        assert run_main(inpaint.InpaintConfig, inpaint.main, argv, prog=inpaint.PROG) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert where in error and error.endswith("which this command reads; pick another --out")
    assert sorted(p.relative_to(tiny_run) for p in tiny_run.rglob("*")) == before


def _truncate_largest_data_file(step_dir: Path) -> None:
    data = max((step_dir / "state").glob("ocdbt.process_*/d/*"), key=lambda f: f.stat().st_size)
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)


def test_a_damaged_checkpoint_falls_back_with_a_few_lines_of_stderr(
    tiny_run, mnist_data_dir, tmp_path
):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    # A copy of step 3 named 2 stands in for an older checkpoint; then step 3 is damaged.
    shutil.copytree(run / "checkpoints" / "3", run / "checkpoints" / "2")
    _truncate_largest_data_file(run / "checkpoints" / "3")
    out = tmp_path / "inpaint"
    argv = [*TINY_INPAINT, "--checkpoint", str(run), "--out", str(out),
            "--data-dir", str(mnist_data_dir)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "JAXDIFF_DEBUG"}
    result = subprocess.run(
        [sys.executable, "-m", "experiments.inpaint", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    # The fallback warning, the data source, the start line and the end line.
    assert len(lines) <= 5, f"{len(lines)} lines:\n" + result.stderr[:3000]
    corrupt = [line for line in lines if "is corrupt or incomplete" in line]
    assert len(corrupt) == 1 and "step 3" in corrupt[0] and "trying step 2" in corrupt[0]
    assert json.loads((out / "metrics.json").read_text())["checkpoint_step"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--masks", "center,top"], "unknown mask 'top'"),
        (["--random-fraction", "1.5"], "--random-fraction must lie in (0, 1), got 1.5"),
        (["--sampler", "plms"], "invalid choice: 'plms'"),
        (["--num-images", "x"], "invalid int value: 'x'"),
    ],
)
def test_bad_flags_exit_2_with_one_clear_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run_main(inpaint.InpaintConfig, inpaint.main, args, prog=inpaint.PROG)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" in err and "Traceback" not in err


def test_cli_help_lists_every_option_and_bad_flag_exits_2():
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "experiments.inpaint", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    result = cli("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines to the terminal width
    for name in inpaint.InpaintConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text, name
    assert "(default: center,left,random)" in text and "(default: runs/mnist)" in text
    assert "(default: 0.3)" in text and "(default: 8)" in text
    result = cli("--resample-jumps", "-1")
    assert result.returncode == 2
    assert "--resample-jumps must be >= 0, got -1" in result.stderr
    assert "Traceback" not in result.stderr and "usage:" in result.stderr
