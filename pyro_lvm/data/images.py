"""Your own images: NumPy arrays (``.npy``, ``.npz``) and folders of PNG/JPEG files.

Two registered data sets:

* ``arrays`` (``--data-file X.npy`` or ``X.npz``): arrays of shape
  ``(N, H, W)`` or ``(N, C, H, W)`` (or ``(N, D)`` vectors), ``uint8`` (read as
  8-bit values :math:`k/255`) or float in [0, 1]. An ``.npz`` holds the keys
  ``train``, ``valid``, ``test`` with optional ``train_labels``,
  ``valid_labels``, ``test_labels``; a split it lacks is cut from ``train``.
  An ``.npy``, or an ``.npz`` with one array (and optionally ``labels``), is
  split by :func:`split_indices`.
* ``image_folder`` (``--image-folder DIR``): PNG/JPEG files read with Pillow,
  either all in ``DIR`` or one subfolder per class (``DIR/cat/1.png``; the
  labels are the subfolders in sorted order, as torchvision's ImageFolder has
  them); resized or centre-cropped to ``image_size``; grayscale or RGB.

A large ``.npy`` is not read into memory: with ``stream`` (automatic above
:data:`STREAM_BYTES`) the training split is a :class:`StreamedRows` over the
memory-mapped file, read in minibatches by a ``torch.utils.data.DataLoader``;
the validation and test splits are read into memory.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from pyro_lvm.data.datasets import DATASETS, DataSplits
from pyro_lvm.files import file_sha256

#: an ``.npy`` file larger than this is streamed from disk unless ``stream=False``
STREAM_BYTES = 2 ** 30
#: file name endings read as images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: ways to bring images to ``image_size``
FITS = ("resize", "crop")
COLORS = ("auto", "grayscale", "rgb")


def split_indices(n: int, seed: int = 0, valid_fraction: float = 0.1,
                  test_fraction: float = 0.1) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rule that splits one array: the row indices ``0..n-1`` are shuffled by
    ``numpy.random.default_rng(seed).permutation(n)``; the first
    ``round(test_fraction * n)`` (at least 1) are the test set, the next
    ``round(valid_fraction * n)`` (at least 1) the validation set, the rest the
    training set; each part is sorted.

    >>> train, valid, test = split_indices(20)
    >>> len(train), len(valid), len(test)
    (16, 2, 2)
    >>> sorted(set(train) | set(valid) | set(test)) == list(range(20))
    True
    """
    n_test = max(1, int(round(test_fraction * n)))
    n_valid = max(1, int(round(valid_fraction * n)))
    if n - n_test - n_valid < 1:
        raise ValueError(f"{n} data points are too few to split into training, validation and test sets")
    perm = np.random.default_rng(seed).permutation(n)
    test, valid, train = perm[:n_test], perm[n_test:n_test + n_valid], perm[n_test + n_valid:]
    return np.sort(train), np.sort(valid), np.sort(test)


def _row_shape(shape: Sequence[int], where: str) -> Tuple[Tuple[int, ...], Optional[Tuple[int, ...]]]:
    """``(shape of one row, image shape or None)`` of an array of ``shape``."""
    if len(shape) == 2:
        return (shape[1],), None
    if len(shape) == 3:
        return (shape[1] * shape[2],), (1, shape[1], shape[2])
    if len(shape) == 4:
        if shape[1] not in (1, 3) and shape[3] in (1, 3):
            raise ValueError(f"{where} has shape {tuple(shape)}, which looks channels-last (N, H, W, C); "
                             "give images as (N, C, H, W): e.g. numpy.moveaxis(a, -1, 1)")
        return (shape[1] * shape[2] * shape[3],), tuple(shape[1:])
    raise ValueError(f"{where} has shape {tuple(shape)}; expected (N, H, W) or (N, C, H, W) images "
                     "(or (N, D) vectors)")


def _to_float(a: np.ndarray, where: str) -> torch.Tensor:
    """Rows of ``a`` as float32: integers are 8-bit values divided by 255, floats must lie in [0, 1]."""
    flat = np.asarray(a).reshape(a.shape[0], -1)
    if flat.dtype == np.bool_:
        return torch.from_numpy(flat.astype(np.float32))
    if np.issubdtype(flat.dtype, np.integer):
        if flat.size and (flat.min() < 0 or flat.max() > 255):
            raise ValueError(f"{where} holds integers in [{flat.min()}, {flat.max()}]; integer images must "
                             "be 8-bit values 0..255 (uint8)")
        return torch.from_numpy(flat.astype(np.float32) / np.float32(255.0))
    if not np.issubdtype(flat.dtype, np.floating):
        raise ValueError(f"{where} has dtype {flat.dtype}; expected uint8 or float in [0, 1]")
    x = torch.from_numpy(flat.astype(np.float32))
    if not torch.isfinite(x).all():
        raise ValueError(f"{where} holds NaN or infinite values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{where} holds values in [{x.min().item():.4g}, {x.max().item():.4g}]; float images "
                         "must lie in [0, 1] (divide 8-bit values by 255)")
    return x


def _support(arrays: Sequence[np.ndarray], splits: Sequence[torch.Tensor]) -> str:
    """``"binary"`` when every value is 0 or 1, ``"eight_bit"`` for integer data (or floats on
    the grid k/255), else ``"unit_interval"``."""
    if all(((x == 0) | (x == 1)).all() for x in splits):
        return "binary"
    if all(np.issubdtype(a.dtype, np.integer) for a in arrays):
        return "eight_bit"
    if all(((x * 255 - (x * 255).round()).abs() < 1e-4).all() for x in splits):
        return "eight_bit"
    return "unit_interval"


def _labels(a: Optional[np.ndarray], n: int, where: str) -> Optional[torch.Tensor]:
    if a is None:
        return None
    a = np.asarray(a)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
        raise ValueError(f"{where} must be {n} non-negative integer labels, got shape {a.shape} of {a.dtype}")
    return torch.from_numpy(a.astype(np.int64))


class StreamedRows(torch.utils.data.Dataset):
    """Rows of a memory-mapped ``.npy`` array, read on demand as float32 tensors.

    ``rows[idx]`` (an index tensor, a list or a slice) reads those rows from
    disk; integer (8-bit) values are divided by 255 as in the in-memory path,
    so a minibatch is bit-identical to the same rows read whole. The file is
    opened lazily in each process (DataLoader workers included). ``shape`` is
    ``(number of rows, values per row)``, as for a tensor.
    """

    def __init__(self, path: Union[str, Path], rows: np.ndarray):
        self.path = str(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self._array = None
        header = np.load(self.path, mmap_mode="r")
        self.dim = int(np.prod(header.shape[1:]))
        self.integer = bool(np.issubdtype(header.dtype, np.integer))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"] = None  # each worker maps the file itself
        return state

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), self.dim))

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, idx) -> torch.Tensor:
        """The rows ``idx`` (positions in this split) as a float32 tensor ``(len(idx), dim)``."""
        if isinstance(idx, slice):
            wanted = self.rows[idx]
        else:
            wanted = self.rows[np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)]
        order = np.argsort(wanted, kind="stable")  # read the file forwards, then put the rows back
        block = np.empty((len(wanted), self.dim), dtype=self.array.dtype)
        block[order] = self.array[wanted[order]].reshape(len(wanted), -1)
        if self.integer:
            return torch.from_numpy(block.astype(np.float32) / np.float32(255.0))
        return torch.from_numpy(block.astype(np.float32))

    __getitem__ = read

    def __getitems__(self, indices: List[int]) -> torch.Tensor:  # the DataLoader's batched fetch
        return self.read(indices)


def _check_stream(array: np.ndarray, path: Path, chunk: int = 4096) -> None:
    """Check a memory-mapped array's values chunk by chunk (never all of it in memory)."""
    for start in range(0, array.shape[0], chunk):
        _to_float(np.asarray(array[start:start + chunk]), f"{path} (rows {start}..)")


def _from_arrays(name: str, path: Path, arrays: Dict[str, np.ndarray], labels: Dict[str, Optional[np.ndarray]],
                 split_seed: int, stream: bool) -> DataSplits:
    where = {k: f"{path} [{k}]" if path.suffix == ".npz" else str(path) for k in arrays}
    labels = {k: _labels(v, arrays[k].shape[0], f"{where[k]} labels") if isinstance(v, np.ndarray) else v
              for k, v in labels.items()}
    shapes = {k: _row_shape(a.shape, where[k]) for k, a in arrays.items()}
    if len({s for s in shapes.values()}) > 1:
        raise ValueError(f"{path}: the splits have different shapes per point: "
                         + ", ".join(f"{k} {arrays[k].shape[1:]}" for k in arrays))
    image_shape = shapes["train"][1]
    if not stream:
        tensors = {k: _to_float(a, where[k]) for k, a in arrays.items()}
    cut = {}
    if set(arrays) != {"train", "valid", "test"}:  # the missing splits come from the training array
        n = arrays["train"].shape[0]
        train_idx, valid_idx, test_idx = split_indices(n, split_seed)
        cut = {"train": train_idx}
        if "valid" not in arrays:
            cut["valid"] = valid_idx
        if "test" not in arrays:
            cut["test"] = test_idx
        if len(cut) == 2:  # only one split missing: it takes its share, the training set keeps the rest
            missing = next(k for k in cut if k != "train")
            cut = {"train": np.sort(np.concatenate([train_idx, valid_idx if missing == "test" else test_idx])),
                   missing: cut[missing]}
    splits: Dict[str, torch.Tensor] = {}
    split_labels: Dict[str, torch.Tensor] = {}
    for split in ("train", "valid", "test"):
        source = split if split in arrays else "train"
        rows = cut.get(split)
        label = labels.get(source)
        if stream and split == "train":
            splits[split] = StreamedRows(path, rows if rows is not None else np.arange(arrays["train"].shape[0]))
        elif stream:
            splits[split] = _to_float(np.asarray(arrays[source][rows] if rows is not None else arrays[source]),
                                      where[source])
        else:
            splits[split] = tensors[source][torch.from_numpy(rows)] if rows is not None else tensors[source]
        if label is not None:
            split_labels[split] = label[torch.from_numpy(rows)] if rows is not None else label
    if stream:
        _check_stream(arrays["train"], path)
        support = "eight_bit" if np.issubdtype(arrays["train"].dtype, np.integer) else _support(
            [arrays["train"]], [splits["valid"], splits["test"]])
    else:
        support = _support(list(arrays.values()), list(tensors.values()))
    info = {"source": str(path), "split": "as given" if not cut else
            f"split_indices(seed={split_seed}): 10% test, 10% validation"}
    return DataSplits(name, splits["train"], splits["valid"], splits["test"], support=support,
                      image_shape=image_shape, labels=split_labels, info=info,
                      files={str(path): file_sha256(path)} if path.is_file() else {})


def _read_npz(path: Path) -> Tuple[Dict[str, np.ndarray], Dict[str, Optional[np.ndarray]]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            content = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npz file ({e})") from None
    splits = [k for k in ("train", "valid", "test") if k in content]
    if splits:
        if "train" not in content:
            raise ValueError(f"{path} has {', '.join(splits)} but no 'train' array")
        extra = sorted(set(content) - {"train", "valid", "test", "train_labels", "valid_labels", "test_labels"})
        if extra:
            raise ValueError(f"{path} holds keys {extra} besides train/valid/test(_labels); expected only those")
        return ({k: content[k] for k in splits},
                {k: _labels(content.get(f"{k}_labels"), content[k].shape[0], f"{path} [{k}_labels]")
                 for k in splits})
    arrays = [k for k in content if k not in ("labels", "y")]
    if len(arrays) != 1:
        raise ValueError(f"{path} holds keys {sorted(content)}; expected train/valid/test (with optional "
                         "*_labels), or one array (with optional 'labels')")
    data = content[arrays[0]]
    label = content.get("labels", content.get("y"))
    return {"train": data}, {"train": _labels(label, data.shape[0], f"{path} [labels]")}


@DATASETS.register("arrays")
def arrays(data_dir=None, download: bool = True, data_file: Optional[str] = None, split_seed: int = 0,
           stream: Optional[bool] = None) -> DataSplits:
    """Your own images or vectors from an ``.npy`` or ``.npz`` file (see :mod:`pyro_lvm.data.images`).

    ``stream`` reads the training split of an ``.npy`` from disk in minibatches
    (``None``: when the file is larger than :data:`STREAM_BYTES`).
    """
    if data_file is None:
        raise ValueError("data set 'arrays' needs a file: --data-file X.npy or X.npz")
    path = Path(data_file).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: data set 'arrays' reads .npy or .npz files, not {suffix or 'no suffix'}")
    if stream and suffix == ".npz":
        raise ValueError(f"{path}: streaming from disk needs an uncompressed .npy file (an .npz is read whole)")
    if suffix == ".npz":
        content, labels = _read_npz(path)
        return _from_arrays("arrays", path, content, labels, split_seed, False)
    if stream is None:
        stream = path.stat().st_size > STREAM_BYTES
    try:
        array = np.load(path, mmap_mode="r" if stream else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npy file ({e})") from None
    return _from_arrays("arrays", path, {"train": array}, {"train": None}, split_seed, bool(stream))


def _parse_size(image_size: Union[None, int, str, Sequence[int]]) -> Optional[Tuple[int, int]]:
    """``(height, width)`` from ``32``, ``"32"``, ``"32x24"`` or ``(32, 24)``.

    >>> _parse_size("32x24"), _parse_size(28)
    ((32, 24), (28, 28))
    """
    if image_size is None:
        return None
    if isinstance(image_size, str):
        parts = image_size.lower().replace(",", "x").split("x")
        try:
            size = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"image size must be N or HxW (e.g. 32 or 32x24), got {image_size!r}") from None
    elif isinstance(image_size, int):
        size = (image_size,)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image size must be N or HxW of positive sizes, got {image_size!r}")
    return size


def _image_files(folder: Path) -> Tuple[List[Path], Optional[List[int]], Optional[List[str]]]:
    """``(files, labels, class names)``: the images in ``folder``, or in its class subfolders."""
    def images_in(d: Path) -> List[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    top = images_in(folder)
    if classes:
        if top:
            raise ValueError(f"{folder} holds both images ({top[0].name}, ...) and class subfolders "
                             f"({classes[0]}, ...); put every image in a class subfolder, or none")
        files, labels = [], []
        for k, name in enumerate(classes):
            found = images_in(folder / name)
            files += found
            labels += [k] * len(found)
        empty = [c for c in classes if not images_in(folder / c)]
        if empty:
            raise ValueError(f"class folder {folder / empty[0]} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        return files, labels, classes
    if not top:
        raise ValueError(f"{folder} holds no {'/'.join(IMAGE_SUFFIXES)} images (directly or in class subfolders)")
    return top, None, None


def _read_image(path: Path, raw: bytes, mode: str, size: Optional[Tuple[int, int]], fit: str):
    """The image in the bytes ``raw`` of the file ``path``, in ``mode``, brought to ``size`` by ``fit``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            if size is None:
                return image.convert(mode)
            if fit == "crop":  # centre crop to the aspect ratio of size, then scale
                w, h = image.size
                target = size[1] / size[0]
                cw, ch = (min(w, round(h * target)), min(h, round(w / target)))
                left, top = (w - cw) // 2, (h - ch) // 2
                image = image.crop((left, top, left + cw, top + ch))
            return image.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable image ({e})") from None


@DATASETS.register("image_folder")
def image_folder(data_dir=None, download: bool = True, image_folder: Optional[str] = None,
                 image_size: Optional[str] = None, fit: str = "resize", color: str = "auto",
                 split_seed: int = 0) -> DataSplits:
    """Your own PNG/JPEG images from a folder, optionally one subfolder per class (see
    :mod:`pyro_lvm.data.images`), as 8-bit values in [0, 1].

    :param image_size: ``N`` or ``HxW``; images are brought to it by ``fit``
        (``"resize"``: scaled, ``"crop"``: centre-cropped to the aspect ratio,
        then scaled). Without it every image must have the same size.
    :param color: ``"grayscale"``, ``"rgb"``, or ``"auto"`` (RGB when any pixel of any image has
        colour, i.e. unequal red, green and blue).
    :param split_seed: the seed of :func:`split_indices`.
    """
    if image_folder is None:
        raise ValueError("data set 'image_folder' needs a folder: --image-folder DIR")
    folder = Path(image_folder).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"no such image folder: {folder}")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, got {color!r}")
    size = _parse_size(image_size)
    files, labels, classes = _image_files(folder)
    mode = "L" if color == "grayscale" else "RGB"  # "auto": read as RGB, kept so if any pixel has colour
    pixels, first = [], None
    digest = hashlib.sha256()
    for p in files:
        raw = p.read_bytes()  # each file is read once, for its pixels and for the run's fingerprint
        image = np.asarray(_read_image(p, raw, mode, size, fit), dtype=np.uint8)
        if first is None:
            first = (p, image.shape)
        elif image.shape != first[1]:
            raise ValueError(f"{p} is {image.shape[1]}x{image.shape[0]} pixels but {first[0]} is "
                             f"{first[1][1]}x{first[1][0]}: give --image-size to resize them all")
        pixels.append(image)
        digest.update(str(p.relative_to(folder)).encode() + b"\0" + raw)
    stack = np.stack(pixels)
    if color == "auto":
        grey = (stack[..., 0] == stack[..., 1]).all() and (stack[..., 0] == stack[..., 2]).all()
        color = "grayscale" if grey else "rgb"
        if grey:
            stack = np.ascontiguousarray(stack[..., 0])
    if stack.ndim == 4:  # (N, H, W, 3) -> (N, 3, H, W)
        stack = np.ascontiguousarray(np.moveaxis(stack, -1, 1))
    data = _from_arrays("image_folder", folder, {"train": stack},
                        {"train": None if labels is None else np.asarray(labels, dtype=np.int64)}, split_seed, False)
    data.files = {str(folder): digest.hexdigest()}
    data.class_names = classes
    data.info.update(images=str(len(files)), color=color, size=f"{stack.shape[-2]}x{stack.shape[-1]}")
    return data
