"""Encoder and decoder networks by name (``"mlp"`` or ``"conv"``), for the models' configs.

A model asks for "a network from a data point to ``out_dim`` numbers" and "from
``in_dim`` numbers to ``params`` numbers per data value"; which layers do it is
the ``network`` option, so every model gets convolutions without knowing them.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from pyro_lvm.nn.conv import ConvDecoder, ConvEncoder, image_chw
from pyro_lvm.nn.mlp import MLP


def _mlp_encoder(input_dim, image_shape, hidden, channels, out_dim, activation):
    return MLP(input_dim, hidden, out_dim, activation)


def _mlp_decoder(in_dim, input_dim, image_shape, hidden, channels, params, activation):
    return MLP(in_dim, tuple(reversed(hidden)), params * input_dim, activation)


def _conv_encoder(input_dim, image_shape, hidden, channels, out_dim, activation):
    return ConvEncoder(image_shape, channels, out_dim, activation)


def _conv_decoder(in_dim, input_dim, image_shape, hidden, channels, params, activation):
    return ConvDecoder(in_dim, image_shape, channels, params, activation)


#: network name -> (encoder builder, decoder builder)
NETWORKS: Dict[str, Tuple[Callable[..., nn.Module], Callable[..., nn.Module]]] = {
    "mlp": (_mlp_encoder, _mlp_decoder),
    "conv": (_conv_encoder, _conv_decoder),
}


def check_network(network: str, input_dim: int, image_shape: Optional[Sequence[int]],
                  channels: Sequence[int]) -> Optional[Tuple[int, int, int]]:
    """Validate a model config's network options; returns ``image_shape`` as ``(C, H, W)`` (or ``None``).

    >>> check_network("conv", 784, (28, 28), (32, 64))
    (1, 28, 28)
    >>> check_network("conv", 784, None, (32, 64))
    Traceback (most recent call last):
    ...
    ValueError: network 'conv' needs the image shape of the data (image_shape, e.g. (1, 28, 28)); the command line takes it from an image data set
    """
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {sorted(NETWORKS)}, got {network!r}")
    shape = image_chw(image_shape) if image_shape else None
    if shape is not None and int(np.prod(shape)) != input_dim:
        raise ValueError(f"image_shape {shape} holds {int(np.prod(shape))} values, but input_dim is {input_dim}")
    if network == "conv":
        if shape is None:
            raise ValueError(f"network {network!r} needs the image shape of the data (image_shape, e.g. "
                             "(1, 28, 28)); the command line takes it from an image data set")
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be positive sizes such as (32, 64), got {tuple(channels)}")
    return shape


def encoder_network(network: str, input_dim: int, image_shape, hidden: Sequence[int], channels: Sequence[int],
                    out_dim: int, activation: str) -> nn.Module:
    """A network from a flat data point (``input_dim`` values) to ``out_dim`` numbers."""
    return NETWORKS[network][0](input_dim, image_shape, tuple(hidden), tuple(channels), out_dim, activation)


def decoder_network(network: str, in_dim: int, input_dim: int, image_shape, hidden: Sequence[int],
                    channels: Sequence[int], params: int, activation: str) -> nn.Module:
    """A network from ``in_dim`` numbers to ``params`` numbers per data value, parameter-major
    (``out.chunk(params, -1)`` gives one parameter for every value)."""
    return NETWORKS[network][1](in_dim, input_dim, image_shape, tuple(hidden), tuple(channels), params, activation)


def set_output_bias(decoder: nn.Module, values: torch.Tensor) -> None:
    """Set the bias of a decoder's first output parameter (parameter-major outputs, see
    :func:`decoder_network`) to ``values``, one per data value: directly for an MLP; for a
    convolutional decoder, whose last layer has one bias per channel, to each channel's mean.

    >>> net = decoder_network("mlp", 2, 3, None, (4,), (), 2, "tanh")
    >>> set_output_bias(net, torch.tensor([0.5, -1.0, 2.0]))
    >>> net[-1].bias[:3].tolist()
    [0.5, -1.0, 2.0]
    """
    values = values.detach().flatten()
    with torch.no_grad():
        if isinstance(decoder, ConvDecoder):
            channels = decoder.image_shape[0]
            last = decoder.net[-1]
            last.bias[:channels].copy_(values.reshape(channels, -1).mean(-1).to(last.bias))
            return
        last = decoder[-1] if isinstance(decoder, nn.Sequential) else None
        if not isinstance(last, nn.Linear) or last.bias is None or last.bias.shape[0] < values.shape[0]:
            raise TypeError(f"set_output_bias takes an MLP or a ConvDecoder, got {type(decoder).__name__}")
        last.bias[:values.shape[0]].copy_(values.to(last.bias))
