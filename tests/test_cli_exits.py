"""How an experiment command ends, as ``experiments._cli.run_main`` reports it: one line and an
exit code for each way to stop (divergence, SIGINT/SIGTERM outside the training loop, bad
input), and advice that names ``--resume`` only where ``--out`` holds a run to resume."""

from __future__ import annotations

import dataclasses
import os
import signal
import warnings
from pathlib import Path

import pytest

from experiments._cli import RunFlags, field, run_main
from jaxdiff.loop import DivergenceError

PROG = "python -m experiments.demo"


@dataclasses.dataclass(frozen=True)
class DemoConfig(RunFlags):
    out: str = field("runs/demo", "output folder")


def _run(main, tmp_path: Path, capsys) -> tuple[int, list[str]]:
    code = run_main(DemoConfig, main, ["--out", str(tmp_path / "run")], prog=PROG)
    return code, capsys.readouterr().err.splitlines()


def _interrupted_before_the_run_folder(config):
    raise KeyboardInterrupt  # e.g. Ctrl-C during the data download


def _interrupted_after_the_run_folder(config):
    Path(config.out).mkdir()
    (Path(config.out) / "config.json").write_text("{}")
    os.kill(os.getpid(), signal.SIGTERM)  # e.g. a scheduler's stop during the final sampling


def test_an_interrupt_names_resume_only_where_there_is_a_run(tmp_path, capsys):
    code, err = _run(_interrupted_before_the_run_folder, tmp_path, capsys)
    assert code == 130
    assert err == [f"{PROG}: SIGINT received; stopped; rerun the same command to start again"]
    code, err = _run(_interrupted_after_the_run_folder, tmp_path, capsys)
    assert code == 143
    assert err == [
        f"{PROG}: SIGTERM received; stopped; rerun the same command with --resume to continue"
    ]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back afterwards


def test_divergence_and_warnings_are_one_line_each(tmp_path, capsys):
    formatted = []

    def diverges(config):
        formatted.append(warnings.formatwarning("to know", UserWarning, "file.py", 1))
        raise DivergenceError(7, "the loss is nan", 5, "DIR")

    code, err = _run(diverges, tmp_path, capsys)
    assert code == 1
    assert formatted == [f"{PROG}: warning: to know\n"]  # not Python's two lines
    assert err[-1].startswith(f"{PROG}: error: training diverged at step 7: the loss is nan")
    assert "last healthy checkpoint (step 5, in DIR)" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_bad_input_is_exit_2(tmp_path, capsys):
    def refuses(config):
        raise ValueError("--thing must be >= 1, got 0")

    code, err = _run(refuses, tmp_path, capsys)
    assert code == 2 and err[-1] == f"{PROG}: error: --thing must be >= 1, got 0"


@pytest.fixture(autouse=True)
def _default_sigterm():
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, previous)
