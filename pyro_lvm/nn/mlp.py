"""Multi-layer perceptrons."""

from __future__ import annotations

from typing import Sequence, Tuple, Union

from torch import nn

#: activation name -> module class
ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}


def parse_hidden(hidden: Union[str, int, Sequence[int]]) -> Tuple[int, ...]:
    """Hidden layer sizes from ``"200,200"``, ``200`` or ``(200, 200)``.

    >>> parse_hidden("200,200")
    (200, 200)
    >>> parse_hidden("")
    ()
    """
    if isinstance(hidden, str):
        parts = [p.strip() for p in hidden.split(",")] if hidden.strip() else []
        try:
            if any(not p for p in parts):
                raise ValueError("empty item")
            sizes = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"hidden sizes must be comma-separated integers such as '200,200', got {hidden!r}"
            ) from None
    elif isinstance(hidden, int):
        sizes = (hidden,)
    else:
        if any(isinstance(h, bool) or int(h) != h for h in hidden):
            raise ValueError(f"hidden sizes must be whole numbers, got {tuple(hidden)}")
        sizes = tuple(int(h) for h in hidden)
    if any(h <= 0 for h in sizes):
        raise ValueError(f"hidden sizes must be positive, got {sizes}")
    return sizes


class MLP(nn.Sequential):
    """Linear layers with an activation between them (none after the last).

    :param int in_dim: input size.
    :param hidden: hidden layer sizes.
    :param int out_dim: output size.
    :param str activation: a key of :data:`ACTIVATIONS`.

    >>> MLP(4, (8,), 2, "tanh")
    MLP(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): Tanh()
      (2): Linear(in_features=8, out_features=2, bias=True)
    )
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh"):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
            )
        layers = []
        sizes = [in_dim, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(sizes[-1], out_dim))
        super().__init__(*layers)
