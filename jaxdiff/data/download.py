"""Fetch a file over ``http(s)://`` or ``file://`` and verify its size and SHA-256.

Downloads go to memory (the files this library fetches are a few MB to a few tens of MB), so an
interrupted or rejected download never leaves anything on disk; the caller writes what it decodes
atomically. A truncated or interrupted transfer and a server error (HTTP 5xx) are retried once; a
checksum mismatch, an HTTP 4xx and an unreachable host are not.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import NamedTuple

__all__ = [
    "DataNotFoundError",
    "DownloadError",
    "FileSpec",
    "fetch",
    "parse_checksums",
    "read_checksums",
]

_CHUNK = 1 << 16


class DataNotFoundError(FileNotFoundError):
    """A dataset is not where it was looked for and could not be downloaded or cached.

    The message names the file or folder and how to fix it. It is about data, never about the
    command line, so the experiments print it without their usage text.
    """


class DownloadError(DataNotFoundError):
    """A download failed: no network, an HTTP error, a wrong checksum or a truncated transfer."""


class FileSpec(NamedTuple):
    """What a downloaded file must be: its ``name``, ``size`` in bytes and ``sha256`` (hex)."""

    name: str
    size: int
    sha256: str


def parse_checksums(text: str, where: str) -> dict[str, FileSpec]:
    """Parse a checksum table: one line per file, ``<name>\\t<size in bytes>\\t<sha256 hex>``.

    Blank lines are skipped; there is no header. ``where`` names the table in error messages.
    Returns ``{name: FileSpec}``; raises ValueError for a malformed line (with its number).
    """
    table: dict[str, FileSpec] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split("\t")
        ok = len(parts) == 3 and parts[1].isdigit() and len(parts[2]) == 64
        if ok:
            try:
                int(parts[2], 16)
            except ValueError:
                ok = False
        if not ok:
            raise ValueError(
                f"{where}, line {number}: expected '<file name><TAB><size in bytes><TAB><sha256 "
                f"hex>', got {line!r}."
            )
        table[parts[0]] = FileSpec(parts[0], int(parts[1]), parts[2].lower())
    return table


def read_checksums(path: str | os.PathLike) -> dict[str, FileSpec]:
    """:func:`parse_checksums` of the file at ``path``.

    Raises:
      DataNotFoundError: the file cannot be read.
      ValueError: a malformed line.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise DataNotFoundError(
            f"cannot read the checksum file {os.fspath(path)} ({err.strerror or err})."
        ) from None
    return parse_checksums(text, os.fspath(path))


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc or parts.path


def _read(url: str, spec: FileSpec, *, progress: bool, timeout: float) -> bytes:
    """One attempt: the whole body of ``url`` (raises urllib/http/OS errors as they come)."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        chunks: list[bytes] = []
        with tqdm(
            total=int(total) if total and total.isdigit() else spec.size,
            desc=spec.name,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            disable=not progress,
            leave=True,
        ) as bar:
            while chunk := response.read(_CHUNK):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def fetch(
    url: str,
    spec: FileSpec,
    *,
    fix: str,
    progress: bool = True,
    attempts: int = 2,
    timeout: float = 60.0,
) -> bytes:
    """Download ``url`` into memory and check it against ``spec``.

    Args:
      url: ``http://``, ``https://`` or ``file://`` URL of the file.
      spec: the expected name, size and SHA-256.
      fix: the sentence that tells a user how to point at another mirror or checksum table; it
        ends every error message.
      progress: show a progress bar with bytes and rate (on stderr).
      attempts: tries for a truncated or interrupted transfer or an HTTP 5xx (default 2: one
        retry).
      timeout: seconds to wait for the server on each read.

    Returns:
      the file's bytes, ``len == spec.size`` and SHA-256 ``spec.sha256``.

    Raises:
      DownloadError: one line that names the file, the URL, what went wrong and ``fix``.
    """
    what = f"{spec.name} from {url}"
    last = ""
    for attempt in range(1, attempts + 1):
        retry = attempt < attempts
        try:
            body = _read(url, spec, progress=progress, timeout=timeout)
        except urllib.error.HTTPError as err:
            last = f"the server answered HTTP {err.code} {err.reason}"
            if err.code >= 500 and retry:
                continue
            raise DownloadError(f"downloading {what} failed: {last}. {fix}") from None
        except urllib.error.URLError as err:
            reason = getattr(err.reason, "strerror", None) or err.reason
            raise DownloadError(
                f"cannot download {what}: {_host(url)} could not be reached ({reason}). "
                f"Check the network connection, or {fix[0].lower()}{fix[1:]}"
            ) from None
        except (OSError, http.client.HTTPException) as err:  # reset, timeout, incomplete read
            last = f"the transfer was interrupted ({type(err).__name__}: {err})"
            if retry:
                continue
            raise DownloadError(
                f"downloading {what} failed twice: {last}; nothing was cached. Run the command "
                f"again. {fix}"
            ) from None
        if len(body) != spec.size:
            last = f"got {len(body):,} bytes, expected {spec.size:,}"
            if len(body) < spec.size and retry:
                continue
            raise DownloadError(
                f"downloading {what} failed: {last} "
                + ("(truncated twice); " if len(body) < spec.size else "; ")
                + f"nothing was cached. {fix}"
            )
        digest = hashlib.sha256(body).hexdigest()
        if digest != spec.sha256:
            raise DownloadError(
                f"{what} failed its SHA-256 check (got {digest}, expected {spec.sha256}); the "
                f"download was discarded. {fix}"
            )
        return body
    raise AssertionError(f"unreachable: {last}")  # every path above returns or raises
