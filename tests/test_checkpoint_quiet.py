"""One line per checkpoint problem: orbax's, asyncio's and tensorstore's own reports of a failed
save or read stay off stderr (jaxdiff.checkpoint.quiet). The damaged checkpoint restored by
experiments.inpaint is in tests/test_experiment_inpaint.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from jaxdiff.checkpoint import quiet

ROOT = Path(__file__).resolve().parents[1]
FAKE_ORBAX_FILE = os.path.join(os.sep, "site-packages", "orbax", "checkpoint", "_src", "fake.py")


def _as_orbax(source: str) -> None:
    """Run ``source`` as if it were code of orbax (its frames name an orbax file)."""
    exec(compile(source, FAKE_ORBAX_FILE, "exec"), {"logging": logging})


def test_orbax_reports_are_dropped_and_everything_else_kept(monkeypatch, caplog):
    monkeypatch.delenv("JAXDIFF_DEBUG", raising=False)
    quiet.install()
    quiet.install()  # idempotent
    absl, asyncio_log = logging.getLogger("absl"), logging.getLogger("asyncio")
    with caplog.at_level(logging.INFO):
        _as_orbax("logging.getLogger('absl').error('orbax: background save failed')")
        _as_orbax("logging.getLogger('absl').info('orbax: saved step 3')")
        absl.error("another library's error")
        try:
            _as_orbax("raise ValueError('RESOURCE_EXHAUSTED: No space left on device')")
        except ValueError as e:
            asyncio_log.error("Task exception was never retrieved", exc_info=e)
        asyncio_log.error("Task exception was never retrieved", exc_info=KeyError("mine"))
    assert [r.getMessage() for r in caplog.records] == [
        "orbax: saved step 3",
        "another library's error",
        "Task exception was never retrieved",
    ]
    assert caplog.records[-1].exc_info[1].args == ("mine",)


def test_tensorstore_callbacks_on_a_closed_event_loop_are_dropped():
    seen = []
    hook = quiet._quiet_unraisable_hook(seen.append)

    def unraisable(exc, obj=None):
        return SimpleNamespace(
            exc_type=type(exc), exc_value=exc, exc_traceback=None, err_msg=None, object=obj
        )

    closed = unraisable(RuntimeError("Event loop is closed"))
    others = [unraisable(RuntimeError("boom")), unraisable(RuntimeError("Event loop is closed"), 1)]
    for args in (closed, *others):
        hook(args)
    assert seen == others


def test_abandoned_orbax_read_coroutines_are_dropped():
    """A damaged checkpoint: orbax stops awaiting its other reads, and each coroutine's exception
    is reported as unraisable when it is collected (thousands of lines in the CI log of
    2026-12-07); those raised in orbax are dropped, others kept."""
    seen = []
    hook = quiet._quiet_unraisable_hook(seen.append)

    def reported(raise_in_orbax: bool):
        try:
            if raise_in_orbax:
                _as_orbax("raise Exception('Encountered error while reading array index')")
            else:
                raise Exception("Encountered error while reading array index")
        except Exception as e:
            return SimpleNamespace(
                exc_type=type(e), exc_value=e, exc_traceback=e.__traceback__,
                err_msg=None, object="<coroutine object _read_array_index_and_device_put>",
            )  # fmt: skip

    orbax, mine = reported(True), reported(False)
    hook(orbax)
    hook(mine)
    assert seen == [mine]


FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import jax.numpy as jnp, numpy as np
    from jaxdiff.checkpoint import Checkpointer

    state = {"w": jnp.asarray(np.arange(64 * 64, dtype=np.float32).reshape(64, 64))}
    with Checkpointer(sys.argv[1], max_to_keep=2) as ckpt:
        ckpt.save(1, state)
        ckpt.wait()
        # The disk fills up: tensorstore's writes of the 16 KiB array fail (EFBIG, in the
        # background thread of the asynchronous save), as on a full disk.
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            ckpt.save(2, state)
            ckpt.wait()
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    """
)


def test_a_failed_save_is_one_line_of_stderr(tmp_path, monkeypatch):
    pytest.importorskip("resource")  # POSIX resource limits
    monkeypatch.delenv("JAXDIFF_DEBUG", raising=False)
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK_SCRIPT, str(tmp_path / "ckpt")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"{len(lines)} lines:\n" + result.stderr[:3000]
    assert lines[0].startswith("error: ") and "could not write checkpoint step 2" in lines[0]
    steps = [name for name in os.listdir(tmp_path / "ckpt") if name.isdigit()]
    assert steps == ["1"]  # committed steps: the earlier one, intact
