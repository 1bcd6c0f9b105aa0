"""Convolutional encoders and decoders for images given as flat rows.

Data points stay flat rows of ``C * H * W`` values (channel first), as every
other part of the library sees them; these networks reshape them to
``(C, H, W)`` inside. Each strided layer is a 4x4 convolution with stride 2
and padding 1, which maps a side of length :math:`n` to :math:`\\lfloor n/2
\\rfloor`; the decoder's transposed convolutions undo this exactly, adding one
row or column of output padding where :math:`n` was odd. So no image size is
built in: the sizes are computed from ``image_shape``.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from pyro_lvm.nn.mlp import ACTIVATIONS


def image_chw(image_shape: Sequence[int]) -> Tuple[int, int, int]:
    """``(C, H, W)`` from ``(H, W)`` (one channel) or ``(C, H, W)``.

    >>> image_chw((28, 28)), image_chw((3, 32, 32))
    ((1, 28, 28), (3, 32, 32))
    """
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"an image shape is (height, width) or (channels, height, width) of positive sizes, "
                         f"got {tuple(image_shape)}")
    return shape


def grid_sizes(height: int, width: int, layers: int) -> List[Tuple[int, int]]:
    """Spatial sizes before and after each of ``layers`` strided convolutions.

    >>> grid_sizes(28, 28, 2)
    [(28, 28), (14, 14), (7, 7)]
    >>> grid_sizes(32, 20, 3)[-1]
    (4, 2)
    """
    sizes = [(height, width)]
    for _ in range(layers):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    if min(sizes[-1]) < 1:
        raise ValueError(f"images of {height}x{width} pixels are too small for {layers} strided convolutions "
                         f"(each halves the size); use fewer channel layers")
    return sizes


class ResidualBlock(nn.Module):
    """``x + conv1x1(act(conv3x3(act(x))))``, the block of the VQ-VAE paper."""

    def __init__(self, channels: int, activation: str):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.net = nn.Sequential(act(), nn.Conv2d(channels, channels, 3, padding=1), act(),
                                 nn.Conv2d(channels, channels, 1))

    def forward(self, x):
        return x + self.net(x)


def _check(channels: Sequence[int], activation: str) -> Tuple[int, ...]:
    channels = tuple(int(c) for c in channels)
    if not channels or min(channels) < 1:
        raise ValueError(f"channels must be one or more positive sizes such as (32, 64), got {channels}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    return channels


class ConvEncoder(nn.Module):
    """Strided convolutions from a flat image row to a vector or to a grid of vectors.

    :param image_shape: ``(C, H, W)`` or ``(H, W)``.
    :param channels: output channels of each strided convolution, e.g. ``(32, 64)``.
    :param int out_dim: size of the output vector (a linear layer after the
        convolutions); with ``spatial`` the channels of the output grid (a 1x1
        convolution) instead.
    :param str activation: a key of :data:`~pyro_lvm.nn.mlp.ACTIVATIONS`.
    :param bool spatial: output ``(batch, out_dim, h, w)`` on the last grid
        (the VQ-VAE's grid of codes) rather than ``(batch, out_dim)``.
    :param int residual_blocks: residual blocks after the strided convolutions.

    >>> import torch
    >>> enc = ConvEncoder((1, 28, 28), (8, 16), 10)
    >>> enc(torch.rand(5, 784)).shape
    torch.Size([5, 10])
    >>> ConvEncoder((3, 12, 10), (8,), 4, spatial=True)(torch.rand(2, 360)).shape
    torch.Size([2, 4, 6, 5])
    """

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int], out_dim: int,
                 activation: str = "relu", spatial: bool = False, residual_blocks: int = 0):
        super().__init__()
        self.image_shape = image_chw(image_shape)
        channels = _check(channels, activation)
        c, h, w = self.image_shape
        self.grid = grid_sizes(h, w, len(channels))[-1]
        act = ACTIVATIONS[activation]
        layers: List[nn.Module] = []
        for a, b in zip((c,) + channels[:-1], channels):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), act()]
        if residual_blocks:
            layers.pop()  # the blocks start with their own activation
            layers += [ResidualBlock(channels[-1], activation) for _ in range(residual_blocks)] + [act()]
        if spatial:
            layers.append(nn.Conv2d(channels[-1], out_dim, 1))
        else:
            layers += [nn.Flatten(), nn.Linear(channels[-1] * self.grid[0] * self.grid[1], out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        out = self.net(x.reshape((-1,) + self.image_shape))
        return out.reshape(batch + out.shape[1:])


class ConvDecoder(nn.Module):
    """Transposed convolutions from a vector (or a grid of vectors) to flat per-pixel parameters.

    The output is ``(batch, params * C * H * W)``: the first ``C * H * W``
    values are the first parameter of every pixel, and so on, the layout an
    MLP decoder's ``out.chunk(params, -1)`` expects.

    :param int in_dim: size of the input vector, or with ``spatial`` the
        channels of the input grid (shaped as the matching encoder's output).
    :param image_shape: ``(C, H, W)`` or ``(H, W)`` of the images to produce.
    :param channels: the encoder's channels (the decoder runs them in reverse).
    :param int params: parameters per pixel (1 for Bernoulli logits, 2 for a
        location and a scale).

    >>> import torch
    >>> dec = ConvDecoder(10, (1, 28, 28), (8, 16), params=2)
    >>> dec(torch.randn(5, 10)).shape
    torch.Size([5, 1568])
    >>> ConvDecoder(4, (3, 13, 11), (8, 8), spatial=True)(torch.randn(2, 4, 3, 2)).shape
    torch.Size([2, 429])
    """

    def __init__(self, in_dim: int, image_shape: Sequence[int], channels: Sequence[int], params: int = 1,
                 activation: str = "relu", spatial: bool = False, residual_blocks: int = 0):
        super().__init__()
        self.image_shape = image_chw(image_shape)
        self.params = int(params)
        channels = _check(channels, activation)
        c, h, w = self.image_shape
        sizes = grid_sizes(h, w, len(channels))
        self.grid = sizes[-1]
        act = ACTIVATIONS[activation]
        self.spatial = spatial
        layers: List[nn.Module] = []
        if spatial:
            layers.append(nn.Conv2d(in_dim, channels[-1], 3, padding=1))
        else:
            layers += [nn.Linear(in_dim, channels[-1] * self.grid[0] * self.grid[1]),
                       nn.Unflatten(-1, (channels[-1],) + self.grid)]
        layers += [ResidualBlock(channels[-1], activation) for _ in range(residual_blocks)]
        layers.append(act())
        outs = tuple(reversed(channels[:-1])) + (c * self.params,)
        ins = tuple(reversed(channels))
        targets = list(reversed(sizes[:-1]))
        for i, (a, b, (th, tw)) in enumerate(zip(ins, outs, targets)):
            h_in, w_in = sizes[len(channels) - i]
            padding = (th - 2 * h_in, tw - 2 * w_in)  # 0 or 1: the row or column the encoder floored away
            layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, output_padding=padding))
            if i < len(channels) - 1:
                layers.append(act())
        self.net = nn.Sequential(*layers)
        #: activations computed per output value (rounded up): what bounds evaluation chunks' memory
        self.activation_width = -(-sum(ch * a * b for ch, (a, b) in zip(channels, sizes[1:]))
                                  // (c * h * w)) + self.params

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-3] if self.spatial else z.shape[:-1]
        flat_in = z.reshape((-1,) + z.shape[len(batch):])
        out = self.net(flat_in)  # (n, params * C, H, W)
        c, h, w = self.image_shape
        out = out.reshape(out.shape[0], self.params, c * h * w)  # parameter-major
        return out.reshape(batch + (self.params * c * h * w,))
