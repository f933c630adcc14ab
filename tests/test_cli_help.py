"""``--help`` of every experiment: each flag with its real default, no ``None``, no ``none``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib

import pytest

from experiments._cli import build_parser, default_text, field

EXPERIMENTS = {
    "mnist": "MnistConfig",
    "digits": "DigitsConfig",
    "toy2d": "Toy2dConfig",
    "forward": "ForwardConfig",
    "inpaint": "InpaintConfig",
    "evaluate": "EvaluateConfig",
}


def _config(name: str) -> type:
    return getattr(importlib.import_module(f"experiments.{name}"), EXPERIMENTS[name])


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_help_shows_a_real_default_for_every_flag(name):
    cls = _config(name)
    parser = build_parser(cls, prog=f"python -m experiments.{name}")
    text = parser.format_help()
    for f in dataclasses.fields(cls):
        assert "--" + f.name.replace("_", "-") in text, f.name
    assert "(default: None)" not in text
    for action in parser._actions:
        if isinstance(action, argparse._StoreAction) and action.choices is not None:
            assert "none" not in action.choices, action.dest


def test_mnist_help_names_each_presets_value():
    text = " ".join(build_parser(_config("mnist")).format_help().split())
    assert "total training steps (default: from preset: cpu 2000, gpu 40000)" in text
    assert "(default: from preset: cpu backend default, gpu 10)" in text  # --steps-per-call
    assert "(default: from preset: constant)" in text  # --lr-schedule: the same in both


def test_a_none_default_without_its_meaning_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Bad:
        limit: int | None = field(None, "use only the first N examples")

    with pytest.raises(TypeError, match="'limit' defaults to None: give it"):
        build_parser(Bad)

    @dataclasses.dataclass(frozen=True)
    class Good:
        limit: int | None = field(None, "use only the first N examples", default_text="all")

    (f,) = dataclasses.fields(Good)
    assert default_text(f, {}) == "all"
    assert build_parser(Good).parse_args([]).limit is None
    with pytest.raises(SystemExit):  # None is a default, not something to type
        build_parser(Good).parse_args(["--limit", "none"])
