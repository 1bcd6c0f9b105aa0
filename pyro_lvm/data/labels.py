"""Class labels as the last column of each row, for the models that read them (``ssvae``, ``cvae``).

A row is ``[x_1, ..., x_D, y]`` with ``y`` the class index, or ``-1`` where the
label is unknown (or hidden from the model, as the test labels of a
semi-supervised run are: its log-likelihood is that of :math:`x` alone).
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch

from pyro_lvm.data.datasets import DataSplits

UNKNOWN = -1


def balanced_labels(labels: torch.Tensor, keep: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of ``keep`` points, ``keep / num_classes`` of each class (the first ``keep % num_classes``
    classes get one more), drawn at random with ``seed``.

    >>> y = torch.arange(40) % 4
    >>> idx = balanced_labels(y, 8, 4, seed=0)
    >>> torch.bincount(y[idx]).tolist()
    [2, 2, 2, 2]
    """
    if isinstance(keep, bool) or int(keep) != keep or keep < 1:
        raise ValueError(f"the number of labels to keep must be a positive integer, got {keep!r}")
    g = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in range(num_classes):
        want = keep // num_classes + (1 if c < keep % num_classes else 0)
        members = (labels == c).nonzero().squeeze(-1)
        if want > len(members):
            raise ValueError(f"cannot keep {want} labels of class {c}: the training split has {len(members)}")
        chosen.append(members[torch.randperm(len(members), generator=g)[:want]])
    return torch.cat(chosen).sort().values


def stratified_order(labelled: torch.Tensor, unlabelled: torch.Tensor, share: float):
    """A batch order (see :attr:`~pyro_lvm.data.DataSplits.batch_order`) that puts
    ``max(1, round(share * batch_size))`` labelled rows, cycling through them in fresh random
    orders, into every minibatch of unlabelled rows, so that a few labels are seen in every step.
    The model scales each part by its own count (see :class:`~pyro_lvm.models.SSVAE`)."""

    def order(n: int, batch_size: int, generator: torch.Generator) -> List[torch.Tensor]:
        if batch_size < 2:
            raise ValueError("a semi-supervised minibatch needs room for labelled and unlabelled rows: "
                             f"batch size at least 2, got {batch_size}")
        b_l = min(batch_size - 1, max(1, round(share * batch_size)))
        parts = unlabelled[torch.randperm(len(unlabelled), generator=generator)].split(batch_size - b_l)
        need = len(parts) * b_l
        stream = torch.cat([labelled[torch.randperm(len(labelled), generator=generator)]
                            for _ in range(-(-need // len(labelled)))])
        return [torch.cat([stream[i * b_l:(i + 1) * b_l], part]) for i, part in enumerate(parts)]

    return order


def with_label_column(data: DataSplits, num_classes: int, keep: Optional[int] = None, seed: int = 0,
                      hide: tuple = (), share: float = 0.1) -> DataSplits:
    """``data`` with each split's labels as the last column.

    :param int num_classes: how many classes the model has (checked against the labels).
    :param keep: keep this many training labels (balanced per class, seeded) and mark the others
        unknown, with minibatches stratified by :func:`stratified_order`; ``None`` keeps all.
    :param hide: splits whose labels the model must not see (``-1`` in the column); their labels
        stay in ``data.labels`` for accuracy.
    """
    if not data.labels or "train" not in data.labels:
        raise ValueError(f"data set {data.name!r} has no class labels; this model needs them "
                         "(e.g. dynamic_mnist, mnist, fashion_mnist, or an .npz with *_labels)")
    if not isinstance(data.train, torch.Tensor):
        raise ValueError("a labelled model reads its data in memory: --stream is not supported for it")
    columns = {}
    for split in ("train", "valid", "test"):
        rows = getattr(data, split)
        y = data.labels.get(split)
        if y is None or len(y) != rows.shape[0]:
            raise ValueError(f"data set {data.name!r} has no labels for its {split} split")
        y = y.long()
        if ((y < 0) | (y >= num_classes)).any():
            raise ValueError(f"labels of the {split} split must lie in 0..{num_classes - 1} (num_classes "
                             f"{num_classes}); got {int(y.min())}..{int(y.max())}")
        column = y.clone()
        if split in hide:
            column[:] = UNKNOWN
        columns[split] = column
    batch_order = data.batch_order
    if keep is not None:
        if keep > len(columns["train"]):
            raise ValueError(f"cannot keep {keep} labels: the training split has {len(columns['train'])} points")
        kept = balanced_labels(columns["train"], keep, num_classes, seed)
        mask = torch.zeros(len(columns["train"]), dtype=torch.bool)
        mask[kept] = True
        columns["train"][~mask] = UNKNOWN
        if keep < len(mask):
            batch_order = stratified_order(kept, (~mask).nonzero().squeeze(-1), share)

    def join(rows, column):
        return torch.cat([rows, column.to(rows).unsqueeze(-1)], dim=-1)

    transform = data.train_transform
    if transform is not None:  # e.g. dynamic binarization: of the pixels, never of the label
        inner = transform

        def transform(batch, generator):
            return torch.cat([inner(batch[:, :-1], generator), batch[:, -1:]], dim=-1)

    return dataclasses.replace(data, train=join(data.train, columns["train"]), valid=join(data.valid, columns["valid"]),
                               test=join(data.test, columns["test"]), train_transform=transform,
                               batch_order=batch_order)
