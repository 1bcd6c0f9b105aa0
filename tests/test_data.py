import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from pyro_lvm.data import (
    ChecksumError,
    DataNotFoundError,
    RemoteFile,
    dynamic_binarize,
    fetch,
    load_dataset,
    parse_amat_binary,
    parse_idx,
    resolve_data_dir,
)
from pyro_lvm.data import download as download_module


def _spec(content: bytes, name="sub/file.bin.gz"):
    return RemoteFile(name, hashlib.sha256(content).hexdigest(), ("http://example.invalid/file",))


def test_parse_idx_round_trip_and_errors():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", 2, 3, 4) + arr.tobytes()
    assert np.array_equal(parse_idx(raw), arr)
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="header"):
        parse_idx(raw[:-1])


def test_parse_amat_rejects_malformed_rows():
    with pytest.raises(ValueError, match="equal rows"):
        parse_amat_binary(b"0 1 1\n1 0\n")
    with pytest.raises(ValueError, match="0/1"):
        parse_amat_binary(b"0 2 1\n")
    with pytest.raises(ValueError, match="other than 0 or 1"):
        parse_amat_binary(b"0 10 1\n")


def test_fetch_accepts_local_file_gz_or_raw(tmp_path):
    content = b"hello data"
    spec = _spec(content)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file.bin").write_bytes(content)  # uncompressed copy is accepted
    assert fetch(spec, tmp_path, download=False) == content
    (tmp_path / "sub" / "file.bin").unlink()
    (tmp_path / "sub" / "file.bin.gz").write_bytes(gzip.compress(content, mtime=0))
    assert fetch(spec, tmp_path, download=False) == content


def test_fetch_rejects_corrupt_local_file(tmp_path):
    spec = _spec(b"good")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file.bin.gz").write_bytes(gzip.compress(b"bad"))
    with pytest.raises(ChecksumError, match="unexpected content"):
        fetch(spec, tmp_path, download=False)


def test_fetch_offline_says_what_to_put_where(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise OSError("no network")

    monkeypatch.setattr(download_module, "_download", offline)
    with pytest.raises(DataNotFoundError) as err:
        fetch(_spec(b"x"), tmp_path, download=True, dataset="toy")
    message = str(err.value)
    assert str(tmp_path / "sub" / "file.bin.gz") in message and "no network" in message


def test_fetch_downloads_verifies_and_stores(tmp_path, monkeypatch):
    content = b"payload" * 10
    monkeypatch.setattr(download_module, "_download", lambda url, timeout: content)
    assert fetch(_spec(content), tmp_path) == content
    assert gzip.decompress((tmp_path / "sub" / "file.bin.gz").read_bytes()) == content
    monkeypatch.setattr(download_module, "_download", lambda url, timeout: b"tampered")
    with pytest.raises(ChecksumError):
        fetch(_spec(content, "other/f.gz"), tmp_path)
    assert not (tmp_path / "other" / "f.gz").exists()


def test_data_dir_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_LVM_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(tmp_path / ".") == tmp_path / "."
    monkeypatch.setenv("PYRO_LVM_DATA", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="PYRO_LVM_DATA"):
        resolve_data_dir()
    monkeypatch.delenv("PYRO_LVM_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert resolve_data_dir() == tmp_path / "pyro_lvm" / "data"


def test_embedded_dataset_is_real_binarized_mnist():
    d = load_dataset("binarized_mnist_small")
    assert d.train.shape == (5000, 784) and d.valid.shape == (1000, 784) and d.test.shape == (1000, 784)
    assert set(d.train.unique().tolist()) == {0.0, 1.0}
    assert 0.1 < d.train.mean().item() < 0.16  # MNIST's ink fraction
    assert d.image_shape == (28, 28)


def test_the_embedded_file_is_remade_from_the_full_data_set(data_dir, tmp_path, monkeypatch):
    """make_embedded, as the package's file was made: the same rows of the real data set."""
    from importlib import resources

    from pyro_lvm.data.datasets import EMBEDDED_FILE, make_embedded

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    out = tmp_path / "remade.npz"
    make_embedded(data_dir, out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["remade.npz"]  # no stray temporary
    shipped = resources.files("pyro_lvm.data").joinpath("embedded", EMBEDDED_FILE)
    with np.load(out) as remade, shipped.open("rb") as f, np.load(f) as packaged:
        assert sorted(remade.files) == sorted(packaged.files)
        for name in packaged.files:
            assert np.array_equal(remade[name], packaged[name]), name


def test_binarized_mnist_from_data_dir(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a cold parse, then the cache
    for _ in range(2):
        d = load_dataset("binarized_mnist", data_dir, download=False)
        assert (d.train.shape[0], d.valid.shape[0], d.test.shape[0]) == (50000, 10000, 10000)
        assert d.support == "binary"
    assert list((tmp_path / "pyro_lvm" / "parsed").glob("*.npy"))


def test_mnist_and_dynamic_binarization(data_dir):
    d = load_dataset("mnist", data_dir, download=False)
    assert d.train.shape == (50000, 784) and d.test.shape == (10000, 784)
    assert d.train.min() == 0 and d.train.max() == 1
    dyn = load_dataset("dynamic_mnist", data_dir, download=False)
    assert set(dyn.test.unique().tolist()) == {0.0, 1.0}
    g = torch.Generator().manual_seed(0)
    a, b = dynamic_binarize(dyn.train[:100], g), dynamic_binarize(dyn.train[:100], g)
    assert not torch.equal(a, b)  # resampled every time
    assert abs(a.mean().item() - dyn.train[:100].mean().item()) < 0.01
