"""Named data sets: train / valid / test splits as float tensors."""

from __future__ import annotations

import inspect
import io
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from pyro_lvm.data.directory import resolve_data_dir
from pyro_lvm.data.download import RemoteFile, load_array
from pyro_lvm.data.formats import parse_amat_binary, parse_idx
from pyro_lvm.files import atomic_write
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


_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/")


def _fashion_file(name: str, sha256: str) -> RemoteFile:
    return RemoteFile(f"fashion_mnist/{name}.gz", sha256, tuple(m + name + ".gz" for m in _FASHION_MIRRORS))


#: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) in MNIST's IDX files and names, under ``fashion_mnist/``
FASHION_MNIST_FILES = {
    "train_images": _fashion_file("train-images-idx3-ubyte",
                                  "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": _fashion_file("train-labels-idx1-ubyte",
                                  "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": _fashion_file("t10k-images-idx3-ubyte",
                                 "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": _fashion_file("t10k-labels-idx1-ubyte",
                                 "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


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
    :ivar support: ``"binary"``, ``"eight_bit"`` (values :math:`k/255`), ``"unit_interval"``,
        ``"real"`` or ``"tokens"``.
    :ivar image_shape: how to show one row as an image, ``(H, W)`` or ``(C, H, W)``
        with the row channel-first, or ``None``.
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
    #: class labels of the points, by split name (``"train"``, ``"valid"``, ``"test"``), where known
    labels: Dict[str, torch.Tensor] = field(default_factory=dict)
    #: names of the classes, by label, where known
    class_names: Optional[List[str]] = None

    @property
    def input_dim(self) -> int:
        return self.train.shape[-1]

    @property
    def model_options(self) -> Dict[str, Any]:
        """What a model must be built with to fit this data (its size)."""
        if self.vocab is not None:
            return {"vocab_size": len(self.vocab)}
        return {"input_dim": self.input_dim}

    def train_rows(self, max_rows: int = 10000) -> torch.Tensor:
        """The training split as a tensor: all of it when it is in memory, else (streamed from
        disk) its first ``max_rows`` rows, for statistics that need a tensor."""
        if isinstance(self.train, torch.Tensor):
            return self.train
        return self.train[:min(len(self.train), max_rows)]

    def to(self, device) -> "DataSplits":
        """Move the three splits to ``device`` once (a training set streamed from disk stays there:
        its minibatches are moved as they are read)."""
        for split in ("train", "valid", "test"):
            value = getattr(self, split)
            if isinstance(value, torch.Tensor):
                setattr(self, split, value.to(device))
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


def _idx_splits(name: str, files: Dict[str, RemoteFile], data_dir, download: bool, valid_size: int = 10000,
                class_names: Optional[List[str]] = None) -> DataSplits:
    """8-bit grey images of an MNIST-like IDX set, in [0, 1], with labels; the last ``valid_size``
    training images are the validation set."""
    root = resolve_data_dir(data_dir)
    a = {k: load_array(f, root, parse_idx, download, dataset=name) for k, f in files.items()}
    train, test = _as_float(a["train_images"], 255.0), _as_float(a["test_images"], 255.0)
    train_labels, test_labels = (torch.from_numpy(a[k].astype(np.int64)) for k in ("train_labels", "test_labels"))
    cut = train.shape[0] - valid_size
    return DataSplits(name, train[:cut], train[cut:], test, support="eight_bit",
                      image_shape=tuple(a["train_images"].shape[1:]),
                      labels={"train": train_labels[:cut], "valid": train_labels[cut:], "test": test_labels},
                      class_names=class_names)


def _dynamic(grey: DataSplits, name: str) -> DataSplits:
    """``grey`` binarized afresh at every training minibatch; validation and test binarized once
    with fixed seeds, so that evaluations are comparable."""
    return replace(grey, name=name, valid=_fixed_binarize(grey.valid, 1), test=_fixed_binarize(grey.test, 2),
                   support="binary", train_transform=dynamic_binarize)


@DATASETS.register("mnist")
def mnist(data_dir=None, download: bool = True) -> DataSplits:
    """MNIST grey levels (8-bit, scaled to [0, 1]) with labels; the last 10000 training images are
    the validation set."""
    return _idx_splits("mnist", MNIST_FILES, data_dir, download, class_names=[str(d) for d in range(10)])


@DATASETS.register("dynamic_mnist")
def dynamic_mnist(data_dir=None, download: bool = True) -> DataSplits:
    """MNIST binarized afresh at every training minibatch; validation and test
    binarized once with fixed seeds, so that evaluations are comparable."""
    return _dynamic(mnist(data_dir, download), "dynamic_mnist")


@DATASETS.register("fashion_mnist")
def fashion_mnist(data_dir=None, download: bool = True) -> DataSplits:
    """Fashion-MNIST (Xiao et al. 2017): 28x28 8-bit grey images of clothing in ten classes, scaled
    to [0, 1], with labels; 50000 / 10000 / 10000 (the last 10000 training images are the
    validation set). Files: ``fashion_mnist/`` in MNIST's IDX names. The test log-likelihood
    takes K=100 importance samples unless a command says otherwise."""
    data = _idx_splits("fashion_mnist", FASHION_MNIST_FILES, data_dir, download, class_names=FASHION_CLASSES)
    data.default_eval_particles = 100  # convolutional decoders: K=1000 on the CPU takes half an hour
    return data


@DATASETS.register("dynamic_fashion_mnist")
def dynamic_fashion_mnist(data_dir=None, download: bool = True) -> DataSplits:
    """Fashion-MNIST binarized afresh at every training minibatch (validation and test binarized
    once, with fixed seeds), with labels."""
    return _dynamic(fashion_mnist(data_dir, download), "dynamic_fashion_mnist")


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
    with atomic_write(out, "wb") as f:  # a file object: numpy adds no ".npz" to the name
        np.savez_compressed(f, dim=np.int64(full.input_dim), **arrays)


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
