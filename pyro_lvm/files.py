"""Every file the library writes goes through here: atomically, never through a fixed name.

A file is written to a temporary file created exclusively (``O_EXCL``, a
unique name) in the target's own folder, flushed to disk, and renamed over
the target. A crash leaves the old file intact; a symlink planted at the
target or at a temporary name is replaced, never followed; a temporary left
by a killed write (``.NAME.*.partial``) is removed by
:func:`remove_partial_files` and ignored by everything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

PARTIAL_SUFFIX = ".partial"
PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[tuple]:
    """``(fd, name)`` of a new file created exclusively next to ``path``; renamed over ``path``
    when the block succeeds, removed when it fails."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A new, empty, uniquely named file in the target's folder; renamed to ``path`` on success.

    For writers that need a file name rather than a file object (netCDF).
    """
    with _temporary_beside(Path(path)) as (fd, tmp):
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str = "utf-8") -> Iterator[Any]:
    """An open file (``mode`` ``"wb"`` or ``"w"``) whose content replaces ``path`` on success.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(folder / "a.txt", "w") as f:
    ...     _ = f.write("hello")
    >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('hello', ['a.txt'])
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    with _temporary_beside(Path(path)) as (fd, tmp):
        with os.fdopen(fd, mode, **({"encoding": encoding} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_figure(fig, path: PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG, atomically."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return Path(path)


def remove_partial_files(folder: PathLike) -> list:
    """Remove the temporaries that killed writes left in ``folder``; returns their names."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX) and (p.is_file() or p.is_symlink()):
                p.unlink()
                removed.append(p.name)
    return removed


def claim_output_folder(out: PathLike, owned: Sequence[str], resume: bool = False, overwrite: bool = False,
                        what: str = "run") -> Path:
    """Make ``out`` ready for a new run (or check it holds one to resume), before any work.

    A new run refuses a folder that holds anything but leftover temporaries,
    unless ``overwrite``: then the files a run writes (``owned``, names or glob
    patterns) are removed first, so that no file of the old run is left beside
    the new one; other files are kept. ``out`` must be a writable folder (or
    not exist yet).
    """
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in the folder, --overwrite replaces it: give one")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if resume:
        if not out.is_dir():
            raise FileNotFoundError(f"nothing to resume: {out} does not exist")
        remove_partial_files(out)
        _check_writable(out)
        return out
    if out.is_dir():
        present = sorted(p.name for p in out.iterdir()
                         if not (p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX)))
        if present and not overwrite:
            shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
            raise ValueError(f"{out} is not empty ({shown}): pass --resume to continue the {what} in it, "
                             f"--overwrite to replace it, or give another --out")
        if overwrite:
            for pattern in owned:
                for p in out.glob(pattern):
                    if p.is_file() or p.is_symlink():
                        p.unlink()
        remove_partial_files(out)
    else:
        try:
            out.mkdir(parents=True)
        except OSError as e:
            raise ValueError(f"cannot create --out {out}: {e.strerror or e}") from None
    _check_writable(out)
    return out


def _check_writable(folder: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-check.", suffix=PARTIAL_SUFFIX)
    except OSError as e:
        raise ValueError(f"cannot write into {folder}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(tmp)


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks: the fingerprint a run keeps of its data files."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
