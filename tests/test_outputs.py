"""The run directory contract and the dataclass command lines."""

import dataclasses
import json
import warnings
from typing import Literal

import pytest

from experiments._cli import field, parse_config, run_main
from jaxdiff.outputs import MetricsLog, prepare_run_dir, read_metrics


def test_prepare_run_dir_new_resume_overwrite(tmp_path):
    out = tmp_path / "run"
    cfg = {"lr": 1e-3, "train_steps": 100}
    prepare_run_dir(out, cfg, resume=False, overwrite=False)
    assert json.loads((out / "config.json").read_text()) == cfg
    with pytest.raises(FileExistsError, match="pass --resume to continue it or --overwrite"):
        prepare_run_dir(out, cfg, resume=False, overwrite=False)
    with pytest.raises(FileExistsError, match=r"different config \(lr: 0.001 -> 0.01\)"):
        prepare_run_dir(out, {**cfg, "lr": 1e-2}, resume=False, overwrite=False)
    # resume: more steps may differ, the learning rate may not
    prepare_run_dir(
        out, {**cfg, "train_steps": 200}, resume=True, overwrite=False, may_differ=("train_steps",)
    )
    with pytest.raises(ValueError, match=r"cannot --resume .* lr: 0.001 -> 0.01"):
        prepare_run_dir(out, {**cfg, "lr": 1e-2}, resume=True, overwrite=False)
    # an option added to the code after the run started does not block its resume; one that
    # the run recorded and this config lacks still does
    prepare_run_dir(out, {**cfg, "dtype": "float32"}, resume=True, overwrite=False)
    with pytest.raises(ValueError, match=r"train_steps: 100 -> '<absent>'"):
        prepare_run_dir(out, {"lr": 1e-3}, resume=True, overwrite=False)
    (out / "old.png").write_text("x")
    prepare_run_dir(out, {**cfg, "lr": 1e-2}, resume=False, overwrite=True)
    assert not (out / "old.png").exists()
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-2


def test_prepare_run_dir_refusals(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="does not hold a jaxdiff run"):
        prepare_run_dir(other, {}, resume=False, overwrite=True)
    assert (other / "thesis.tex").exists()
    with pytest.raises(FileNotFoundError, match="nothing to --resume"):
        prepare_run_dir(tmp_path / "new", {}, resume=True, overwrite=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="is not a directory"):
        prepare_run_dir(tmp_path / "file", {}, resume=False, overwrite=False)
    with pytest.raises(PermissionError, match="cannot write to output directory"):
        prepare_run_dir(tmp_path / "file" / "sub", {}, resume=False, overwrite=False)


TUNABLE = ("learning_rate", "grad_clip")


def test_optimizer_settings_may_change_on_resume_with_one_warning(tmp_path):
    out = tmp_path / "run"
    cfg = {"learning_rate": 2e-3, "grad_clip": 1.0, "width": 8, "train_steps": 10}
    prepare_run_dir(out, cfg, resume=False, overwrite=False, experiment="exp")
    lower = {**cfg, "learning_rate": 1e-3}
    with pytest.warns(UserWarning, match=r"continues with learning_rate: 0.002 -> 0.001$") as rec:
        prepare_run_dir(out, lower, resume=True, overwrite=False, tunable=TUNABLE, experiment="exp")
    assert len(rec) == 1
    # config.json keeps the settings the run started with; the checkpoints record the new ones
    assert json.loads((out / "config.json").read_text())["learning_rate"] == 2e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unchanged: no warning
        prepare_run_dir(out, cfg, resume=True, overwrite=False, tunable=TUNABLE, experiment="exp")
    # what shapes the model stays refused, and without `tunable` so does the learning rate
    with pytest.raises(ValueError, match=r"differs from this one in width: 8 -> 16\. Use"):
        prepare_run_dir(
            out, {**lower, "width": 16}, resume=True, overwrite=False, tunable=TUNABLE,
            experiment="exp",
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"learning_rate: 0.002 -> 0.001"):
        prepare_run_dir(out, lower, resume=True, overwrite=False, experiment="exp")


def test_a_run_of_another_experiment_is_never_replaced(tmp_path):
    run = tmp_path / "mnist-run"
    prepare_run_dir(run, {"lr": 1e-3}, resume=False, overwrite=False, experiment="exp.mnist")
    assert json.loads((run / "config.json").read_text())["experiment"] == "exp.mnist"
    (run / "model.bin").write_text("trained for a week")
    for resume, overwrite in ((False, True), (True, False), (False, False)):
        with pytest.raises(FileExistsError, match=r"holds a run of exp.mnist, not of exp.toy2d"):
            prepare_run_dir(
                run, {"lr": 1e-3}, resume=resume, overwrite=overwrite, experiment="exp.toy2d"
            )
    assert (run / "model.bin").exists()
    prepare_run_dir(run, {"lr": 1e-2}, resume=False, overwrite=True, experiment="exp.mnist")
    assert not (run / "model.bin").exists()  # its own experiment may replace it


def test_an_old_run_without_its_experiment_is_refused_only_when_clearly_another(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    settings = {"lr": 1e-3, "unet": "tiny", "image_size": 28}
    (old / "config.json").write_text(json.dumps(settings))
    with pytest.raises(FileExistsError, match=r"another experiment \(settings image_size, unet\)"):
        prepare_run_dir(
            old, {"lr": 1e-3, "points": 64}, resume=False, overwrite=True, experiment="e"
        )
    assert (old / "config.json").exists()
    # resumed by its own experiment: the same settings, now marked with the experiment
    prepare_run_dir(old, settings, resume=True, overwrite=False, experiment="e")
    assert json.loads((old / "config.json").read_text()) == {**settings, "experiment": "e"}
    # one setting the code has since dropped: an older version of the same experiment
    (old / "config.json").write_text(json.dumps(settings))
    prepare_run_dir(old, {"lr": 1e-3, "unet": "tiny"}, resume=False, overwrite=True, experiment="e")


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("model", r"--out .*model is the --checkpoint folder, which this command reads"),
        (
            "model/inpaint",
            r"--out .*inpaint lies inside --checkpoint .*model, which this command reads",
        ),
        (".", r"--out .* contains --checkpoint .*model, which this command reads"),
    ],
)
def test_out_may_not_be_in_or_around_a_folder_the_command_reads(tmp_path, out, message):
    model = tmp_path / "model"
    prepare_run_dir(model, {"lr": 1e-3}, resume=False, overwrite=False, experiment="mnist")
    before = sorted(p.name for p in model.iterdir())
    for resume, overwrite in ((False, True), (True, False), (False, False)):
        with pytest.raises(ValueError, match=message + r"; pick another --out$"):
            prepare_run_dir(
                tmp_path / out, {"n": 1}, resume=resume, overwrite=overwrite,
                experiment="inpaint", reads={"--checkpoint": model, "--data-dir": None},
            )  # fmt: skip
    assert sorted(p.name for p in model.iterdir()) == before
    assert not (model / "inpaint").exists()


def test_metrics_log_truncates_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        for step in range(1, 6):
            log.write({"step": step, "loss": 1.0 / step})
    with open(path, "a") as f:
        f.write('{"step": 6, "lo')  # torn line from a crash
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    with MetricsLog(path, truncate_after=3) as log:
        log.write({"step": 4, "loss": 0.0})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]


@dataclasses.dataclass(frozen=True)
class Cfg:
    """Toy config.

    python -m experiments.toy --steps 3
    """

    steps: int = field(10, "number of steps")
    lr: float = field(1e-3, "learning rate")
    sampler: Literal["ddpm", "ddim"] = field("ddim", "sampler")
    sizes: tuple[int, ...] = field((1, 2), "channel multipliers")
    out: str | None = field(None, "output dir", default_text="no output")
    ema: bool = field(True, "use EMA")

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")


def test_parse_config_types_and_defaults():
    cfg = parse_config(Cfg, ["--steps", "3", "--sizes", "1,2,4", "--no-ema", "--out", "x"])
    assert cfg == Cfg(steps=3, sizes=(1, 2, 4), ema=False, out="x")
    assert parse_config(Cfg, []) == Cfg()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--steps", "x"], "invalid int value: 'x'"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--sampler", "euler"], "invalid choice: 'euler'"),
        (["--sizes", "1,a"], "comma-separated list of int"),
    ],
)
def test_bad_flags_exit_2_with_one_line_and_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Cfg, argv, prog="toy")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: toy")
    assert message in err and "Traceback" not in err
    assert sum(line.startswith("toy: error:") for line in err.splitlines()) == 1


def test_help_lists_every_option_with_default(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Cfg, ["--help"], prog="toy")
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag, default in (
        ("--steps", "10"),
        ("--lr", "0.001"),
        ("--sizes", "1,2"),
        ("--ema", "True"),
        ("--sampler", "ddim"),
        ("--out", "no output"),
    ):
        assert flag in out and f"(default: {default})" in out
    assert "python -m experiments.toy --steps 3" in out


def test_run_main_turns_input_errors_into_exit_2(capsys):
    def main(cfg):
        raise FileNotFoundError("no MNIST at /nowhere; pass --data-dir")

    assert run_main(Cfg, main, [], prog="toy") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("usage: toy")
    assert lines[-1] == "toy: error: no MNIST at /nowhere; pass --data-dir"
    assert sum("error" in line for line in lines) == 1


def test_run_main_reports_a_failed_save_in_one_line_without_usage(capsys):
    from jaxdiff.checkpoint import CheckpointSaveError

    def main(cfg):
        raise CheckpointSaveError("saving checkpoint step 5 in /out failed: No space left")

    assert run_main(Cfg, main, [], prog="toy") == 2
    err = capsys.readouterr().err.strip()
    assert err == "toy: error: saving checkpoint step 5 in /out failed: No space left"


def test_run_main_keeps_the_traceback_of_bugs():
    def main(cfg):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_main(Cfg, main, [], prog="toy")
