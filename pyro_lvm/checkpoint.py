"""Checkpoints: written atomically, read without executing code."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Union

import torch

from pyro_lvm.files import atomic_write

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that is refused."""


def save_checkpoint(path: Union[str, os.PathLike], state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename).

    A crash while writing leaves the previous checkpoint intact. ``state``
    must hold only tensors, numbers, strings, lists, tuples and dicts, so that
    :func:`load_checkpoint` can read it with ``weights_only=True``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        torch.save({"format": FORMAT_VERSION, **state}, f)


def load_checkpoint(path: Union[str, os.PathLike], map_location=None) -> Dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``: no code runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):  # every checkpoint torch writes is a zip archive
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, empty or not a torch file: "
                              "not a zip archive)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's message would suggest loading it unsafely: never
        raise CheckpointError(f"{path} was refused: it holds objects other than tensors and plain data, and "
                              "loading them would run code from the file; pyro_lvm reads only its own "
                              "checkpoints") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, empty or not a torch file: "
                              f"{reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a pyro_lvm checkpoint of format {FORMAT_VERSION}")
    return state
