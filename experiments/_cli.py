"""Command lines from frozen dataclass configs.

Every experiment is ``python -m experiments.NAME [--flag value ...]``: a frozen dataclass whose
fields are the flags (``train_steps`` -> ``--train-steps``), each with its default and the help
text from ``field(metadata={"help": ...})``. Bad flags or values print one ``error:`` line and
the usage, and exit with code 2, before any work starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from jaxdiff.accelerator import unused_gpu_message
from jaxdiff.data import DataNotFoundError
from jaxdiff.loop import STALL_TIMEOUT, DivergenceError, TrainingInterrupted
from jaxdiff.sharding import initialize_distributed
from jaxdiff.xla_options import enable_compilation_cache, enable_deterministic_ops

C = TypeVar("C")

__all__ = ["DistributedRunFlags", "RunFlags", "field", "parse_config", "run_main"]


def field(default, help: str, *, default_text: str | None = None, **kwargs):
    """A dataclass field with a help text for ``--help``.

    ``default_text`` is what ``--help`` shows as the default instead of the value, and it is
    required for a ``None`` default that no preset fills (say what None means: "all",
    "$TFDS_DATA_DIR", "the sampler's").
    """
    return dataclasses.field(
        default=default, metadata={"help": help, "default_text": default_text, **kwargs}
    )


@dataclasses.dataclass(frozen=True)
class RunFlags:
    """The flags of every training experiment about an earlier run in ``--out`` and progress
    bars; a config inherits them (``--help`` lists them after the experiment's own flags)."""

    resume: bool = field(False, "continue the run in --out from its latest checkpoint")
    overwrite: bool = field(False, "delete an earlier run in --out and start again")
    progress: bool = field(True, "show progress bars")

    def __post_init__(self):
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other; pass one of them")


@dataclasses.dataclass(frozen=True)
class DistributedRunFlags(RunFlags):
    """:class:`RunFlags`, ``--distributed`` (:func:`run_main` joins the processes),
    ``--deterministic`` (:func:`run_main` turns on XLA's deterministic GPU ops) and
    ``--stall-timeout`` (how long a process waits for lost peers)."""

    distributed: bool = field(
        False,
        "join a multi-process run (jax.distributed: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID, or the cluster's own variables); every process runs the same command",
    )
    deterministic: bool = field(
        False,
        "bitwise-reproducible GPU runs: XLA's deterministic ops (--xla_gpu_deterministic_ops; "
        "slower); CPU runs are deterministic without it",
    )
    stall_timeout: float = field(
        STALL_TIMEOUT,
        "with --distributed: seconds a process waits for its devices before it counts another "
        "process as lost and stops with an error (longer waits are allowed once calls are seen "
        "to take long)",
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.stall_timeout > 0:
            raise ValueError(f"--stall-timeout must be > 0 seconds, got {self.stall_timeout}")


def _ordered_fields(cls: type) -> list[dataclasses.Field]:
    """``cls``'s fields, its own first and those inherited from flag groups after them."""
    inherited = {
        f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base)
        for f in dataclasses.fields(base)
    }  # fmt: skip
    fields = dataclasses.fields(cls)
    return [f for f in fields if f.name not in inherited] + [
        f for f in fields if f.name in inherited
    ]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _converter(tp, name: str) -> tuple[Callable[[str], Any], dict]:
    """(string -> value, extra add_argument kwargs) for a field type (``X | None``: as ``X``;
    ``None`` is only ever a default, never something to type)."""
    tp, _optional = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return str, {"choices": list(typing.get_args(tp))}
    if origin is tuple:
        item = typing.get_args(tp)[0]

        def parse_tuple(s: str):
            parts = [p for p in s.replace(" ", "").split(",") if p]
            try:
                return tuple(item(p) for p in parts)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected a comma-separated list of {item.__name__}, got {s!r}"
                ) from None

        return parse_tuple, {"metavar": f"{item.__name__.upper()},..."}
    if tp in (int, float, str):
        return tp, {"metavar": tp.__name__.upper()}
    raise TypeError(f"config field {name!r} has unsupported type {tp!r}")


def _show(value: Any) -> str:
    if value is None:
        return "backend default"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def default_text(f: dataclasses.Field, presets: Mapping[str, Mapping[str, Any]]) -> str:
    """What ``--help`` shows as the default of field ``f``: its ``default_text``, else its
    value, else (a ``None`` default) the value of every preset: "from preset: cpu 1600, gpu
    40000"."""
    if f.metadata.get("default_text"):
        return f.metadata["default_text"]
    if f.default is not None:
        return _show(f.default)
    values = {name: d[f.name] for name, d in presets.items() if f.name in d}
    if not values or len(values) < len(presets):
        raise TypeError(
            f"config field {f.name!r} defaults to None: give it field(..., default_text=...) "
            "saying what None means, or a value in every preset"
        )
    if len(set(map(repr, values.values()))) == 1:
        return f"from preset: {_show(next(iter(values.values())))}"
    return "from preset: " + ", ".join(f"{name} {_show(v)}" for name, v in values.items())


def build_parser(cls: type, *, prog: str | None = None) -> argparse.ArgumentParser:
    """The ``argparse`` parser of the frozen dataclass ``cls``: one flag per field, each help
    line ending in the real default (:func:`default_text`). A config with presets names their
    values in a class attribute ``preset_defaults`` (preset name -> field -> value)."""
    presets = getattr(cls, "preset_defaults", {})
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(cls.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    hints = typing.get_type_hints(cls)
    for f in _ordered_fields(cls):
        tp = hints[f.name]
        help_text = f"{f.metadata.get('help', '')} (default: {default_text(f, presets)})"
        if _unwrap_optional(tp)[0] is bool:  # --flag / --no-flag (None: the default decides)
            parser.add_argument(
                _flag(f.name),
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=help_text,
            )
            continue
        conv, extra = _converter(tp, f.name)
        parser.add_argument(
            _flag(f.name), dest=f.name, type=conv, default=f.default, help=help_text, **extra
        )
    return parser


def parse_config(cls: type[C], argv: Sequence[str] | None = None, *, prog: str | None = None) -> C:
    """Parse ``argv`` into an instance of the frozen dataclass ``cls``.

    The instance's ``__post_init__`` validates values; its ``ValueError`` becomes an argparse
    error (one line, the usage, exit code 2).
    """
    return _parse(build_parser(cls, prog=prog), cls, argv)


def _parse(parser: argparse.ArgumentParser, cls: type[C], argv: Sequence[str] | None) -> C:
    ns = parser.parse_args(argv)
    try:
        return cls(**vars(ns))
    except (ValueError, TypeError) as e:
        parser.error(str(e))
        raise  # unreachable: parser.error exits


_INPUT_ERRORS = (
    ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
    IsADirectoryError,
)  # fmt: skip


def run_main(
    cls: type[C], main: Callable[[C], Any], argv: Sequence[str] | None = None, *, prog: str
) -> int:
    """Parse the config and run ``main``; every expected way to stop is one clear line.

    - ``ValueError`` and ``OSError`` raised by ``main`` are not bugs: missing or undownloadable
      data, a refused or unwritable output directory, a full disk at a checkpoint save (the
      earlier checkpoints stay intact). One ``prog: error: ...`` line, exit code 2; errors about
      the command line (a refused ``--out``, a missing ``--checkpoint``) also print the usage.
    - Training diverged (:class:`jaxdiff.loop.DivergenceError`): one line naming the step and
      the checkpoint kept, exit code 1.
    - SIGINT (Ctrl-C) or SIGTERM: the training loop saves the newest state first
      (:class:`jaxdiff.loop.TrainingInterrupted`); one line saying what was kept and how to
      continue, exit code 130 or 143, as a shell reports a process ended by those signals.

    ``JAXDIFF_DEBUG=1`` shows the traceback instead. Anything else is a bug and keeps its
    traceback; warnings print as one ``prog: warning: ...`` line.

    A config with ``deterministic=True`` (``--deterministic``) first adds XLA's deterministic
    GPU ops to ``XLA_FLAGS`` (:func:`jaxdiff.xla_options.enable_deterministic_ops`); one with
    ``distributed=True`` (``--distributed``) then joins the multi-process run
    (:func:`jaxdiff.sharding.initialize_distributed`). Before ``main`` starts, a visible NVIDIA
    GPU that JAX does not use gets one warning line with the install command, and compiled
    programs are cached on disk (:func:`jaxdiff.xla_options.enable_compilation_cache`).
    """
    parser = build_parser(cls, prog=prog)
    config = _parse(parser, cls, argv)
    if getattr(config, "deterministic", False):  # read by XLA when the backend starts
        enable_deterministic_ops()
    if getattr(config, "distributed", False):  # before anything starts JAX's backend
        initialize_distributed()
    enable_compilation_cache()
    gpu_warning = unused_gpu_message()
    if gpu_warning:
        print(f"{prog}: {gpu_warning}", file=sys.stderr)
    try:
        with _one_line_warnings(prog), _terminate_as_exception(config):
            main(config)
    except (ValueError, OSError, DivergenceError) as e:
        if os.environ.get("JAXDIFF_DEBUG"):
            raise
        if isinstance(e, _INPUT_ERRORS) and not isinstance(e, DataNotFoundError):
            # a bad command line: show how to call it
            parser.print_usage(sys.stderr)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, DivergenceError) else 2
    except TrainingInterrupted as e:
        print(f"{prog}: {e}; {_how_to_continue(config)}", file=sys.stderr)
        return e.exit_code
    except (KeyboardInterrupt, _Terminated) as e:
        signum = signal.SIGTERM if isinstance(e, _Terminated) else signal.SIGINT
        print(
            f"{prog}: {signal.Signals(signum).name} received; stopped; {_how_to_continue(config)}",
            file=sys.stderr,
        )
        return 128 + int(signum)
    return 0


def _how_to_continue(config: Any) -> str:
    """What to run next after an interrupt: ``--resume`` where ``--out`` holds a run."""
    out = getattr(config, "out", None)
    if hasattr(config, "resume") and out is not None and (Path(out) / "config.json").is_file():
        return "rerun the same command with --resume to continue"
    return "rerun the same command to start again"


class _Terminated(BaseException):
    """SIGTERM outside the training loop (which handles it itself), as an exception."""


@contextlib.contextmanager
def _terminate_as_exception(config: Any) -> Iterator[None]:
    """SIGTERM raises :class:`_Terminated` in the main thread, so a scheduler's stop ends the
    command with a message and exit code 143 rather than silently. In a multi-process run JAX's
    preemption service owns SIGTERM (the training loop polls it) and it is left alone."""

    def raise_terminated(signum, frame):
        raise _Terminated

    if (
        getattr(config, "distributed", False)
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _one_line_warnings(prog: str) -> Iterator[None]:
    """Warnings print as one ``prog: warning: ...`` line (not Python's two-line format)."""

    def one_line(message, category, filename, lineno, line=None) -> str:
        return f"{prog}: warning: {message}\n"

    original = warnings.formatwarning
    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = original
