r"""The deep latent Gaussian model (Gaussian VAE).

Generative story, for each data point :math:`x_n \in \mathbb{R}^D` or
:math:`\{0, 1\}^D`:

.. math::

    z_n &\sim \mathcal{N}(0, I_d), \\
    x_n \mid z_n &\sim \mathrm{Bernoulli}\big(\sigma(f_\theta(z_n))\big)
    \quad\text{or}\quad
    \mathcal{N}\big(\mu_\theta(z_n), \operatorname{diag} \sigma^2_\theta(z_n)\big),

or, for 8-bit images, a discretized logistic per pixel (bits per dimension,
:class:`~pyro_lvm.distributions.DiscretizedLogistic`); :math:`f_\theta`,
:math:`\mu_\theta`, :math:`\sigma_\theta` are one network (the decoder), an
MLP or, for images, transposed convolutions (``network="conv"``). The guide is
the mean-field Gaussian :math:`q_\phi(z_n \mid x_n) = \mathcal{N}(\mu_\phi(x_n),
\operatorname{diag} \sigma^2_\phi(x_n))` from a second network (the encoder) [1, 2].

References

[1] Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014.

[2] Rezende, Mohamed & Wierstra, *Stochastic Backpropagation and Approximate
Inference in Deep Generative Models*, ICML 2014.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from pyro_lvm.base import LatentVariableModel, batch_size_of
from pyro_lvm.models.likelihoods import LIKELIHOODS
from pyro_lvm.nn import ACTIVATIONS, check_network, decoder_network, encoder_network, parse_hidden
from pyro_lvm.registry import MODELS


@dataclass
class VAEConfig:
    """Hyperparameters of :class:`VAE`.

    :param int input_dim: size of one data point (784 for MNIST); taken from
        the data set by the command line.
    :param int latent_dim: size of :math:`z`.
    :param hidden: hidden layer sizes of the encoder; the decoder mirrors them.
    :param str activation: activation between layers.
    :param str likelihood: a key of :data:`~pyro_lvm.models.likelihoods.LIKELIHOODS`:
        ``"bernoulli"``, ``"gaussian"`` (learned diagonal covariance) or
        ``"discretized_logistic"`` (8-bit pixels in [0, 1]).
    :param float min_scale: floor added to every scale, encoder and decoder,
        for numerical safety.
    :param str network: ``"mlp"`` (layers ``hidden``) or ``"conv"`` (strided
        convolutions with ``channels``; needs ``image_shape``).
    :param channels: output channels of the convolutional encoder's strided
        layers; the decoder mirrors them.
    :param image_shape: ``(C, H, W)`` of one data point when it is an image;
        taken from the data set by the command line.
    """

    input_dim: int = 784
    latent_dim: int = 50
    hidden: Tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    min_scale: float = 1e-3
    network: str = "mlp"
    channels: Tuple[int, ...] = (32, 64)
    image_shape: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        self.hidden = parse_hidden(self.hidden)
        self.channels = parse_hidden(self.channels)
        if self.input_dim <= 0 or self.latent_dim <= 0:
            raise ValueError("input_dim and latent_dim must be positive")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {sorted(LIKELIHOODS)}, got {self.likelihood!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        if not self.min_scale > 0:
            raise ValueError("min_scale must be positive")
        self.image_shape = check_network(self.network, self.input_dim, self.image_shape, self.channels)


@MODELS.register("vae")
class VAE(LatentVariableModel):
    r"""Deep latent Gaussian model with an MLP encoder and decoder.

    See the module docstring for the generative story. Any objective of
    :mod:`pyro_lvm.objectives` trains it; IWAE is an objective, not a model.

    .. doctest::

        >>> import torch, pyro
        >>> from pyro_lvm.models import VAE
        >>> from pyro_lvm.objectives import ELBO
        >>> vae = VAE(input_dim=6, latent_dim=2, hidden=(8,))
        >>> x = torch.bernoulli(torch.full((5, 6), 0.5))
        >>> loss = ELBO().terms(vae.model, vae.guide, x)
        >>> loss.surrogate.shape
        torch.Size([])
        >>> vae.generate(3).shape
        torch.Size([3, 6])
    """

    Config = VAEConfig

    def __init__(self, config: Optional[VAEConfig] = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.likelihood = LIKELIHOODS[c.likelihood]
        self.encoder = encoder_network(c.network, c.input_dim, c.image_shape, c.hidden, c.channels,
                                       2 * c.latent_dim, c.activation)
        self.decoder = decoder_network(c.network, c.latent_dim, c.input_dim, c.image_shape, c.hidden, c.channels,
                                       self.likelihood.params, c.activation)
        self.register_buffer("prior_loc", torch.zeros(c.latent_dim))
        self.register_buffer("prior_scale", torch.ones(c.latent_dim))

    @property
    def data_support(self) -> str:
        return self.likelihood.support

    @property
    def evaluation_width(self) -> int:
        """Numbers the decoder computes per data value (its convolutions' activations)."""
        return getattr(self.decoder, "activation_width", 1)

    def prior(self, num: int) -> dist.Distribution:
        return dist.Normal(self.prior_loc, self.prior_scale).expand([num, self.config.latent_dim]).to_event(1)

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.config.min_scale).to_event(1)

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        return self.likelihood.make(self.decoder(z), self.config.min_scale)

    def model(self, x=None, *, data_size=None, num_samples=None):
        batch = batch_size_of(x, num_samples)
        device = self.prior_loc.device
        with self.data_plate(batch, data_size, device):
            z = pyro.sample("z", self.prior(batch))
            return pyro.sample("x", self.decode(z), obs=x)

    def guide(self, x, *, data_size=None, num_samples=None):
        with self.data_plate(x.shape[0], data_size, x.device):
            return pyro.sample("z", self.encode(x))
