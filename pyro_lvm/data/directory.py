"""Where data files live: an argument, else ``$PYRO_LVM_DATA``, else a cache folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

ENV_VAR = "PYRO_LVM_DATA"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pyro_lvm`` (``~/.cache/pyro_lvm`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyro_lvm"


def resolve_data_dir(data_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$PYRO_LVM_DATA``, else the cache.

    An explicit directory (argument or variable) must exist.

    >>> import os
    >>> str(resolve_data_dir("/tmp"))
    '/tmp'
    """
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR) or None
        source = f"${ENV_VAR}"
    else:
        source = "the data directory argument"
    if data_dir is None:
        return default_cache_dir() / "data"
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{source} points to {str(path)!r}, which is not a directory")
    return path
