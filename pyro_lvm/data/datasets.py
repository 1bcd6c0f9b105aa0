"""Named data sets: train / valid / test splits as float tensors."""

from __future__ import annotations

import inspect
import io
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from pyro_lvm.data.directory import resolve_data_dir
from pyro_lvm.data.download import RemoteFile, load_array
from pyro_lvm.data.formats import parse_amat_binary, parse_idx
from pyro_lvm.registry import Registry

#: Every data set, by name.
DATASETS: Registry = Registry("dataset")

_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")

BINARIZED_MNIST_FILES = {
    "train": RemoteFile("binarized_mnist/binarized_mnist_train.amat.gz",
                        "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
                        (_LAROCHELLE + "binarized_mnist_train.amat",)),
    "valid": RemoteFile("binarized_mnist/binarized_mnist_valid.amat.gz",
                        "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
                        (_LAROCHELLE + "binarized_mnist_valid.amat",)),
    "test": RemoteFile("binarized_mnist/binarized_mnist_test.amat.gz",
                       "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
                       (_LAROCHELLE + "binarized_mnist_test.amat",)),
}


def _mnist_file(name: str, sha256: str) -> RemoteFile:
    return RemoteFile(f"mnist/{name}.gz", sha256, tuple(m + name + ".gz" for m in _MNIST_MIRRORS))


MNIST_FILES = {
    "train_images": _mnist_file("train-images-idx3-ubyte",
                                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train_labels": _mnist_file("train-labels-idx1-ubyte",
                                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "test_images": _mnist_file("t10k-images-idx3-ubyte",
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "test_labels": _mnist_file("t10k-labels-idx1-ubyte",
                               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}

EMBEDDED_FILE = "binarized_mnist_small.npz"


@dataclass
class DataSplits:
    """A data set split three ways, rows are data points (float32).

    :ivar train_transform: applied to each training minibatch (e.g. dynamic
        binarization), with a ``torch.Generator``; ``None`` for none.
    :ivar support: ``"binary"``, ``"unit_interval"`` or ``"real"``.
    :ivar image_shape: how to show one row as an image, or ``None``.
    :ivar default_epochs: epochs used when a command does not say (a small
        data set needs more passes for the same number of steps).
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    support: str
    image_shape: Optional[Tuple[int, ...]] = None
    train_transform: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None
    info: Dict[str, str] = field(default_factory=dict)
    default_epochs: int = 10
    #: batch size, learning rate and evaluation particles used when a command does not say
    default_batch_size: int = 100
    default_lr: float = 1e-3
    default_eval_particles: int = 1000
    #: the vocabulary of a text data set (:class:`pyro_lvm.data.text.Vocabulary`)
    vocab: Any = None
    #: ``(n, batch_size, generator) -> list of index tensors``, one training epoch's
    #: batches (e.g. bucketed by length); ``None``: a random permutation
    batch_order: Optional[Callable[[int, int, torch.Generator], List[torch.Tensor]]] = None
    #: files read from a user's path, ``{absolute path: sha256}`` (named data sets are checked by
    #: content when read, so they list none)
    files: Dict[str, str] = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return self.train.shape[-1]

    @property
    def model_options(self) -> Dict[str, Any]:
        """What a model must be built with to fit this data (its size)."""
        if self.vocab is not None:
            return {"vocab_size": len(self.vocab)}
        return {"input_dim": self.input_dim}

    def to(self, device) -> "DataSplits":
        """Move the three splits to ``device`` once."""
        for split in ("train", "valid", "test"):
            setattr(self, split, getattr(self, split).to(device))
        return self


def dynamic_binarize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Resample :math:`x_{ij} \\sim \\mathrm{Bernoulli}(x_{ij})` (dynamic binarization)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (u < x).to(x.dtype)


def _fixed_binarize(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.rand(x.shape, generator=g) < x).float()


def _as_float(a: np.ndarray, divide: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / divide)


@DATASETS.register("binarized_mnist")
def binarized_mnist(data_dir=None, download: bool = True) -> DataSplits:
    """Larochelle & Murray's fixed binarization of MNIST: 50000 / 10000 / 10000."""
    root = resolve_data_dir(data_dir)
    arrays = {k: load_array(f, root, parse_amat_binary, download, dataset="binarized_mnist")
              for k, f in BINARIZED_MNIST_FILES.items()}
    return DataSplits("binarized_mnist", *(_as_float(arrays[k]) for k in ("train", "valid", "test")),
                      support="binary", image_shape=(28, 28))


def _mnist_arrays(data_dir, download: bool) -> Dict[str, np.ndarray]:
    root = resolve_data_dir(data_dir)
    return {k: load_array(f, root, parse_idx, download, dataset="mnist") for k, f in MNIST_FILES.items()}


@DATASETS.register("mnist")
def mnist(data_dir=None, download: bool = True) -> DataSplits:
    """MNIST grey levels in [0, 1]; the last 10000 training images are the validation set."""
    a = _mnist_arrays(data_dir, download)
    train = _as_float(a["train_images"], 255.0)
    return DataSplits("mnist", train[:50000], train[50000:], _as_float(a["test_images"], 255.0),
                      support="unit_interval", image_shape=(28, 28))


@DATASETS.register("dynamic_mnist")
def dynamic_mnist(data_dir=None, download: bool = True) -> DataSplits:
    """MNIST binarized afresh at every training minibatch; validation and test
    binarized once with fixed seeds, so that evaluations are comparable."""
    grey = mnist(data_dir, download)
    return DataSplits("dynamic_mnist", grey.train, _fixed_binarize(grey.valid, 1),
                      _fixed_binarize(grey.test, 2), support="binary", image_shape=(28, 28),
                      train_transform=dynamic_binarize)


@DATASETS.register("binarized_mnist_small")
def binarized_mnist_small(data_dir=None, download: bool = True) -> DataSplits:
    """A subset of the fixed binarized MNIST shipped inside the package
    (5000 / 1000 / 1000 rows drawn at random with seed 0 from the three
    splits), so that the main command works with no data directory."""
    blob = resources.files("pyro_lvm.data").joinpath("embedded", EMBEDDED_FILE).read_bytes()
    with np.load(io.BytesIO(blob)) as z:
        splits = {k: np.unpackbits(z[k], axis=1, count=int(z["dim"])) for k in ("train", "valid", "test")}
    return DataSplits("binarized_mnist_small", *(_as_float(splits[k]) for k in ("train", "valid", "test")),
                      support="binary", image_shape=(28, 28), default_epochs=50,
                      info={"source": "binarized_mnist (Larochelle & Murray 2011), subset"})


def make_embedded(data_dir, out: Path, sizes=(5000, 1000, 1000), seed: int = 0) -> None:
    """Write the embedded subset from the full binarized MNIST (how the package file was made)."""
    full = binarized_mnist(data_dir, download=False)
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, n in zip(("train", "valid", "test"), sizes):
        x = getattr(full, name).numpy().astype(np.uint8)
        idx = np.sort(rng.choice(x.shape[0], size=n, replace=False))
        arrays[name] = np.packbits(x[idx], axis=1)
    np.savez_compressed(out, dim=np.int64(full.input_dim), **arrays)


def load_dataset(name: str, data_dir=None, download: bool = True, **options: Any) -> DataSplits:
    """Load a registered data set by name.

    >>> d = load_dataset("binarized_mnist_small")
    >>> d.train.shape, d.test.shape, d.support
    (torch.Size([5000, 784]), torch.Size([1000, 784]), 'binary')
    """
    loader = DATASETS.get(name)
    accepted = set(inspect.signature(loader).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"data set {name!r} does not take {', '.join(unknown)}; it takes: "
                         f"{', '.join(sorted(accepted - {'data_dir', 'download'})) or 'no options'}")
    return loader(data_dir=data_dir, download=download, **options)
