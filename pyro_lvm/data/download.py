"""Files known by content checksum, found locally or downloaded and verified."""

from __future__ import annotations

import gzip
import hashlib
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from pyro_lvm.files import atomic_write


class DataNotFoundError(FileNotFoundError):
    """A data file is neither on disk nor downloadable; the message says what to put where."""


class ChecksumError(ValueError):
    """A data file's content is not what the library expects."""


@dataclass(frozen=True)
class RemoteFile:
    """One data file.

    :ivar relpath: path under the data directory, as the canonical name.
    :ivar sha256: sha256 of the *uncompressed* content, so a file is accepted
        whether it is stored gzip-compressed or not, and however it was
        recompressed.
    :ivar urls: canonical download locations, tried in order.
    """

    relpath: str
    sha256: str
    urls: Tuple[str, ...]

    def candidates(self, data_dir: Path) -> Sequence[Path]:
        """Local paths that may hold the file: as named, with or without ``.gz``."""
        p = data_dir / self.relpath
        if p.suffix == ".gz":
            return [p, p.with_suffix("")]
        return [p, p.with_name(p.name + ".gz")]


def read_bytes(path: Path) -> bytes:
    """File content, transparently gunzipped when the file is gzip data.

    A truncated or corrupted gzip file raises :class:`ChecksumError` naming it.
    """
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"\x1f\x8b":
        with open(path, "rb") as f:
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile, a bad CRC, a truncated stream
        raise ChecksumError(f"{path} is a damaged gzip file ({e}); delete it so that it can be fetched "
                            "again, or put an intact copy there") from None


def _verify(content: bytes, spec: RemoteFile, where: str) -> bytes:
    digest = hashlib.sha256(content).hexdigest()
    if digest != spec.sha256:
        raise ChecksumError(
            f"{where} has unexpected content (sha256 of the uncompressed data {digest}, "
            f"expected {spec.sha256}); delete it so that it can be fetched again"
        )
    return content


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed URLs)
        return response.read()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        f.write(data)


def fetch(spec: RemoteFile, data_dir: Path, download: bool = True, timeout: float = 60.0,
          dataset: Optional[str] = None) -> bytes:
    """Return the uncompressed content of ``spec``, verified by sha256.

    Looks in ``data_dir`` first (``name`` or ``name.gz``); otherwise, when
    ``download``, fetches from the canonical URLs, verifies and stores it.
    Raises :class:`DataNotFoundError` naming the file and the place to put it.
    """
    for path in spec.candidates(data_dir):
        if path.is_file():
            return _verify(read_bytes(path), spec, str(path))
    errors = []
    if download:
        for url in spec.urls:
            try:
                raw = _download(url, timeout)
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                errors.append(f"{url}: {e}")
                continue
            content = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            _verify(content, spec, url)
            target = data_dir / spec.relpath
            try:
                _atomic_write(target, raw if raw[:2] == b"\x1f\x8b" or target.suffix != ".gz"
                              else gzip.compress(raw))
            except OSError as e:  # read-only data directory: still usable this time
                errors.append(f"could not save to {target}: {e}")
            return content
    hint = "\n  ".join(errors) if errors else "downloading was switched off"
    raise DataNotFoundError(
        f"data file {spec.relpath!r}{' of ' + dataset if dataset else ''} is missing: put it at "
        f"{data_dir / spec.relpath} (gzip-compressed or not), or point the data directory "
        f"(--data-dir or $PYRO_LVM_DATA) at a folder that has it.\n  Download attempts:\n  {hint}"
    )


def _cache_key(spec: RemoteFile, path: Path) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{spec.sha256}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def load_array(spec: RemoteFile, data_dir: Path, parse, download: bool = True,
               cache_dir: Optional[Path] = None, dataset: Optional[str] = None):
    """``parse(fetch(spec))``, with the parsed array cached as ``.npy``.

    The cache is keyed by the local file's path, size and modification time
    (it was verified by sha256 before it was cached), so a later read costs a
    ``numpy.load``. A cache that cannot be written is skipped silently.
    """
    import numpy as np

    from pyro_lvm.data.directory import default_cache_dir

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "parsed"
    local = next((p for p in spec.candidates(data_dir) if p.is_file()), None)
    cached = cache_dir / f"{_cache_key(spec, local)}.npy" if local is not None else None
    if cached is not None and cached.is_file():
        try:
            return np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            pass
    array = parse(fetch(spec, data_dir, download, dataset=dataset))
    local = next((p for p in spec.candidates(data_dir) if p.is_file()), None)
    if local is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            target = cache_dir / f"{_cache_key(spec, local)}.npy"
            with atomic_write(target, "wb") as f:
                np.save(f, array, allow_pickle=False)
        except OSError:
            pass
    return array
