"""The experiment output contract: one directory per run.

``--out DIR`` holds ``config.json``, ``metrics.jsonl`` (one JSON object per logged step),
``metrics.json`` (final evaluation), ``samples.npy``, PNG figures, GIFs, ``checkpoints/`` and
``report.md``. This module prepares that directory safely and writes the text files; it never
deletes anything it did not create: ``--overwrite`` only removes a directory that holds a
``config.json`` (an earlier run) written by the same experiment (``config.json`` records it under
``"experiment"``), and never a folder the command reads from.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "EXPERIMENT_KEY",
    "MetricsLog",
    "config_diff",
    "prepare_run_dir",
    "probe_writable",
    "read_metrics",
    "write_json",
    "write_report",
]

CONFIG_FILE = "config.json"
#: The key of config.json that names the command that wrote the run, e.g. "experiments.mnist".
EXPERIMENT_KEY = "experiment"
# A run written before runs named their experiment is another experiment's when its config has
# at least this many settings the new one lacks (an older version of the same command lacks some
# of today's settings, rather; the experiments share about twenty).
_FOREIGN_SETTINGS = 2


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # jax / numpy arrays
        return _jsonable(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


def write_json(path, obj: Mapping[str, Any]) -> Path:
    """Write ``obj`` as indented JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


_OUTPUT_DIR_UNWRITABLE = (
    "cannot write to output directory {path}: {reason}; choose another --out (a folder you can "
    "write to, with free space)"
)


def probe_writable(directory, *, message: str = _OUTPUT_DIR_UNWRITABLE) -> None:
    """Check that files can be written to ``directory`` now, not after hours of training.

    Creates ``directory`` (and its parents) if needed, writes a 4 KiB probe file under a unique
    name (several processes may probe one folder at once), flushes it to the disk (so a
    full disk fails here), reads it back and deletes it.

    Args:
        directory: a local path, or a remote one such as ``gs://bucket/run`` (any path that
            ``etils.epath`` understands; remote files are not fsync'ed).
        message: the error text, a format string with the fields ``{path}`` (the directory)
            and ``{reason}`` (what the operating system said, e.g. ``Not a directory``); the
            default speaks of ``--out``.

    Raises:
        PermissionError: the directory cannot be created or written, whatever the cause
            (permissions, a regular file in the path, a read-only or full file system); its
            ``errno`` is the original error's.
    """
    text = os.fspath(directory)
    local = "://" not in text
    if local:
        path = Path(text)
    else:
        from etils import epath  # remote paths only: etils comes with orbax

        path = epath.Path(text)
    probe = path / f".jaxdiff-write-probe-{os.getpid()}-{uuid.uuid4().hex}"
    payload = b"jaxdiff write probe\n".ljust(4096, b".")  # one file-system block
    try:
        if path.exists() and not path.is_dir():
            raise OSError(errno.ENOTDIR, "exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as f:
            f.write(payload)
            f.flush()
            if local:
                os.fsync(f.fileno())
        if probe.read_bytes() != payload:
            raise OSError(errno.EIO, "a probe file read back different bytes than were written")
    except OSError as e:
        error = PermissionError(message.format(path=path, reason=e.strerror or e))
        error.errno = e.errno
        raise error from e
    finally:
        try:
            if probe.exists():
                probe.unlink()
        except OSError:
            pass


def config_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = ()
) -> list[str]:
    """Human-readable differences ``"key: old -> new"`` between two config dicts."""
    ignore = set(ignore)
    old, new = _jsonable(old), _jsonable(new)
    keys = sorted((set(old) | set(new)) - ignore)
    return [
        f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
        for k in keys
        if old.get(k, "<absent>") != new.get(k, "<absent>")
    ]


def _refuse_inputs(out: Path, reads: Mapping[str, Any]) -> None:
    """``ValueError`` when ``out`` is, lies inside or contains a folder named in ``reads``."""
    target = out.resolve()
    for flag, path in reads.items():
        if path is None:  # an optional input left out
            continue
        source = Path(path).resolve()
        if target == source:
            where = f"is the {flag} folder"
        elif source in target.parents:
            where = f"lies inside {flag} {path}"
        elif target in source.parents:
            where = f"contains {flag} {path}"
        else:
            continue
        raise ValueError(f"--out {out} {where}, which this command reads; pick another --out")


def _other_experiment(old: Mapping[str, Any], config: Mapping[str, Any], experiment: str) -> str:
    """What wrote the run ``old`` if that is not ``experiment``, else ``""``.

    A run that does not record its experiment (written before runs did) counts as another's
    only when its config has settings this one lacks (see ``_FOREIGN_SETTINGS``).
    """
    recorded = old.get(EXPERIMENT_KEY)
    if recorded is not None:
        return "" if recorded == experiment else str(recorded)
    foreign = sorted(set(old) - set(config))
    if len(foreign) < _FOREIGN_SETTINGS:
        return ""
    return f"another experiment (settings {', '.join(foreign[:3])}{', ...' if foreign[3:] else ''})"


def prepare_run_dir(
    out,
    config: Mapping[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    may_differ: Sequence[str] = (),
    derived: Sequence[str] = (),
    tunable: Sequence[str] = (),
    experiment: str | None = None,
    reads: Mapping[str, Any] | None = None,
    absent: Mapping[str, Any] | None = None,
) -> Path:
    """Create or reuse the run directory ``out`` for ``config``; return its path.

    Keys in ``derived`` are written but never compared: they follow from the others (e.g. the
    model spec of :mod:`jaxdiff.runs`), so a difference there is reported through its source.

    - ``out`` is, lies inside or contains a folder in ``reads``: refused (``ValueError``);
    - an earlier run written by another ``experiment``: refused (``FileExistsError``), whatever
      the flags;
    - a new or empty directory: created, ``config.json`` written;
    - an earlier run (has ``config.json``) and ``resume``: its config must equal ``config``
      except for the keys in ``may_differ`` (e.g. the number of training steps), the keys in
      ``tunable`` (changed with a warning) and the keys its ``config.json`` lacks (options added
      to the code since), else a ``ValueError`` lists every difference; ``config.json`` keeps
      the settings the run started with (each checkpoint keeps the config it was saved with);
    - an earlier run and ``overwrite``: removed and started afresh;
    - an earlier run and neither flag: ``FileExistsError`` saying which flag to pass;
    - a non-empty directory that is not a run: refused (nothing is deleted).

    Args:
        out: the run directory (``--out``).
        config: the run's settings, written to ``config.json``.
        resume, overwrite: the flags ``--resume`` and ``--overwrite``.
        may_differ: keys that may change on ``--resume`` silently.
        derived: keys written but never compared.
        tunable: keys that may change on ``--resume`` with a one-line warning ``key: old ->
            new`` (optimizer hyperparameters such as the learning rate, lowered after a
            divergence); a key that changes the model or the data belongs in none of these.
        experiment: the command that writes the run (e.g. ``"experiments.mnist"``), recorded in
            ``config.json`` under ``"experiment"``; a run of another one is never continued or
            replaced. ``None``: not recorded, not checked.
        reads: the folders (or files) the command reads, by flag (``{"--checkpoint": path}``).
        absent: for keys an earlier run's ``config.json`` may lack, the value such a run was
            trained with (``{"objective": "ddpm"}``: the code before the option did that); on
            ``--resume`` they are compared like the others instead of being skipped.

    Raises ``PermissionError`` when the directory cannot be written (checked with a probe file).
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other; pass one of them")
    out = Path(out)
    _refuse_inputs(out, reads or {})
    cfg_path = out / CONFIG_FILE
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory; choose another --out")
    marker = {} if experiment is None else {EXPERIMENT_KEY: experiment}
    record = {**config, **marker}
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise ValueError(
                f"{cfg_path} is unreadable ({e}), so the run there cannot be identified; pick "
                "another --out (or delete that folder yourself to start again there)"
            ) from e
        other = _other_experiment(old, record, experiment) if experiment else ""
        if other:
            raise FileExistsError(
                f"--out {out} holds a run of {other}, not of {experiment}; pick another --out "
                "(delete that folder yourself if you mean to replace it)"
            )
        unchecked = [*derived, EXPERIMENT_KEY]
        if overwrite:
            shutil.rmtree(out)
        elif resume:
            # Options newer than the earlier run's code are not in its config.json; their
            # defaults keep what that code did, so they do not block a resume.
            newer = set(_jsonable(config)) - set(old) - set(absent or {})
            old_filled = {**(absent or {}), **old}
            diff = config_diff(
                old_filled, config, ignore=[*may_differ, *newer, *tunable, *unchecked]
            )
            if diff:
                raise ValueError(
                    f"cannot --resume {out}: its config differs from this one in "
                    + "; ".join(diff)
                    + ". Use the same settings, or a new --out"
                )
            both = [k for k in tunable if k in old and k in config]
            changed = config_diff({k: old[k] for k in both}, {k: config[k] for k in both})
            if changed:
                warnings.warn(f"--resume {out} continues with " + "; ".join(changed), stacklevel=2)
            record = {**old, **marker}  # the settings the run started with, now marked
        else:
            diff = config_diff(old, config, ignore=unchecked)
            what = "with a different config (" + "; ".join(diff) + ")" if diff else ""
            raise FileExistsError(
                f"--out {out} already holds a run {what}; pass --resume to continue it or "
                "--overwrite to replace it".replace("  ", " ")
            )
    elif out.is_dir() and any(out.iterdir()):
        if resume:
            raise FileNotFoundError(
                f"nothing to --resume in {out}: it has no {CONFIG_FILE}; drop --resume"
            )
        raise FileExistsError(
            f"--out {out} is a non-empty directory that does not hold a jaxdiff run; "
            "choose an empty or new directory"
        )
    elif resume:
        raise FileNotFoundError(f"nothing to --resume: {out} holds no run; drop --resume")
    probe_writable(out)
    write_json(cfg_path, record)
    return out


class MetricsLog:
    """Append-only ``metrics.jsonl`` writer: one JSON object per line, flushed per write.

    On resume, lines for steps beyond ``truncate_after`` (logged after the last checkpoint of a
    run that then crashed) are dropped, so the log matches the restored state.
    """

    def __init__(self, path, *, truncate_after: int | None = None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            self._f = None
            return
        if truncate_after is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", -1) <= truncate_after]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        self._f = open(self.path, "a")

    def write(self, record: Mapping[str, Any]) -> None:
        if self._f is None:
            return
        self._f.write(json.dumps(_jsonable(record)) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_metrics(path) -> list[dict]:
    """All records of a ``metrics.jsonl`` file (a torn last line from a crash is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_report(path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write ``report.md``: a title and ``(heading, markdown body)`` sections."""
    parts = [f"# {title}\n"]
    for heading, body in sections:
        parts.append(f"## {heading}\n\n{body.strip()}\n")
    path = Path(path)
    path.write_text("\n".join(parts))
    return path
