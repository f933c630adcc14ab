"""Where jaxdiff keeps what it can rebuild: downloaded data sets and trained feature classifiers."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir", "resolve_cache_dir"]


def default_cache_dir() -> Path:
    """The cache root: ``$JAXDIFF_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/jaxdiff``, else
    ``~/.cache/jaxdiff``."""
    own = os.environ.get("JAXDIFF_CACHE_DIR")
    if own:
        return Path(own).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base.absolute() / "jaxdiff"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` as an absolute path, or :func:`default_cache_dir` when it is ``None``."""
    return Path(cache_dir).expanduser().absolute() if cache_dir else default_cache_dir()
