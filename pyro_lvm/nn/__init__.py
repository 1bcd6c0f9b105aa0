"""Neural networks with no ``pyro.sample`` in them."""

from pyro_lvm.nn.mlp import ACTIVATIONS, MLP, parse_hidden

__all__ = ["ACTIVATIONS", "MLP", "parse_hidden"]
