"""Checkpoints: written atomically, read without executing code."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import torch

FORMAT_VERSION = 1


def save_checkpoint(path: Union[str, os.PathLike], state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename).

    A crash while writing leaves the previous checkpoint intact. ``state``
    must hold only tensors, numbers, strings, lists, tuples and dicts, so that
    :func:`load_checkpoint` can read it with ``weights_only=True``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Union[str, os.PathLike], map_location=None) -> Dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``: no code runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a pyro_lvm checkpoint of format {FORMAT_VERSION}")
    return state


def write_json(path: Union[str, os.PathLike], obj: Dict[str, Any]) -> None:
    """Write ``obj`` as indented JSON, atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
