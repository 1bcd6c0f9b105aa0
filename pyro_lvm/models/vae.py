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

Two options make it richer:

* ``prior="vamp"``, the VampPrior [3]: the prior is the guide's mixture at
  :math:`K` learned pseudo-inputs :math:`u_k`,

  .. math::

      p_\lambda(z) = \frac1K \sum_{k=1}^{K} q_\phi(z \mid u_k),

  which has no closed-form KL against the guide, so every objective scores it
  at the sample. :meth:`VAE.initialize` sets the pseudo-inputs to :math:`K`
  random training points (the command line does this for a new run); without
  it they start near the middle of the data's range, as in the paper.
* ``guide_flow="iaf"`` or ``"planar"``: the guide's Gaussian followed by
  ``flow_layers`` normalizing flows conditioned on the encoder's context
  (:mod:`pyro_lvm.models.flows`) [4, 5]; its log density includes the
  log-determinants, so every objective except those that need a closed form
  or stopped parameters (DReG) applies unchanged.

References

[1] Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014.

[2] Rezende, Mohamed & Wierstra, *Stochastic Backpropagation and Approximate
Inference in Deep Generative Models*, ICML 2014.

[3] Tomczak & Welling, *VAE with a VampPrior*, AISTATS 2018.

[4] Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, *Improved Variational
Inference with Inverse Autoregressive Flow*, NeurIPS 2016.

[5] Rezende & Mohamed, *Variational Inference with Normalizing Flows*, ICML 2015.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_lvm.base import LatentVariableModel, batch_size_of
from pyro_lvm.distributions import StandardNormal, UniformGaussianMixture
from pyro_lvm.models.flows import FLOWS, ConditionalFlow
from pyro_lvm.models.likelihoods import LIKELIHOODS, check_decoder_options, initial_output_bias
from pyro_lvm.nn import check_network, decoder_network, encoder_network, parse_hidden
from pyro_lvm.registry import MODELS

#: the priors of :class:`VAE`
PRIORS = ("normal", "vamp")
#: ``guide_flow`` values: no flow, or a key of :data:`~pyro_lvm.models.flows.FLOWS`
GUIDE_FLOWS = ("none", *FLOWS)


class FlowPosterior(dist.TransformedDistribution):
    """A flow guide's distribution, with a Monte Carlo ``mean`` (of ``mean_draws`` draws), which
    no closed form gives; used by active units, reconstructions and latent figures."""

    mean_draws = 64

    @property
    def mean(self) -> torch.Tensor:
        with torch.no_grad():
            return self.sample((self.mean_draws,)).mean(0)


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
    :param str prior: ``"normal"`` (:math:`\\mathcal{N}(0, I)`) or ``"vamp"`` (the VampPrior).
    :param int pseudo_inputs: :math:`K`, the VampPrior's number of pseudo-inputs.
    :param str guide_flow: ``"none"``, ``"iaf"`` or ``"planar"``.
    :param int flow_layers: number of flow maps after the guide's Gaussian.
    :param flow_hidden: hidden layer sizes of each flow map's network.
    :param int flow_context: size of the context vector the encoder computes for the flows.
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
    prior: str = "normal"
    pseudo_inputs: int = 500
    guide_flow: str = "none"
    flow_layers: int = 2
    flow_hidden: Tuple[int, ...] = (200,)
    flow_context: int = 50

    def __post_init__(self):
        self.hidden = parse_hidden(self.hidden)
        self.channels = parse_hidden(self.channels)
        check_decoder_options(self, positive=("input_dim", "latent_dim", "pseudo_inputs", "flow_layers",
                                              "flow_context"))
        self.image_shape = check_network(self.network, self.input_dim, self.image_shape, self.channels)
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.guide_flow not in GUIDE_FLOWS:
            raise ValueError(f"guide_flow must be one of {GUIDE_FLOWS}, got {self.guide_flow!r}")
        self.flow_hidden = parse_hidden(self.flow_hidden)


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
        context = c.flow_context if c.guide_flow != "none" else 0
        self.encoder = encoder_network(c.network, c.input_dim, c.image_shape, c.hidden, c.channels,
                                       2 * c.latent_dim + context, c.activation)
        self.decoder = decoder_network(c.network, c.latent_dim, c.input_dim, c.image_shape, c.hidden, c.channels,
                                       self.likelihood.params, c.activation)
        # the prior N(0, I) (StandardNormal) takes shape and device from prior_loc; both stay in checkpoints
        self.register_buffer("prior_loc", torch.zeros(c.latent_dim))
        self.register_buffer("prior_scale", torch.ones(c.latent_dim))
        if c.prior == "vamp":  # near the middle of the data's range until initialize() sees data
            self.pseudo_raw = nn.Parameter(0.01 * torch.randn(c.pseudo_inputs, c.input_dim))
        if c.guide_flow != "none":
            self.flow = ConditionalFlow(c.guide_flow, c.latent_dim, c.flow_context, c.flow_layers, c.flow_hidden)

    @property
    def data_support(self) -> str:
        return self.likelihood.support

    @property
    def evaluation_width(self) -> int:
        """Numbers computed per data value when scoring: the decoder's convolutions' activations, or
        the VampPrior's ``K`` component densities per point."""
        width = getattr(self.decoder, "activation_width", 1)
        if self.config.prior == "vamp":
            width = max(width, -(-4 * self.config.pseudo_inputs // self.config.input_dim))
        return width

    def _bounded(self) -> bool:
        return self.likelihood.support != "real"

    def pseudo_input_values(self) -> torch.Tensor:
        """The VampPrior's pseudo-inputs :math:`u_k`, shape ``(K, input_dim)``: in (0, 1) through a
        sigmoid for data in [0, 1], unconstrained for real data."""
        return torch.sigmoid(self.pseudo_raw) if self._bounded() else self.pseudo_raw

    def initialize(self, train: torch.Tensor) -> None:
        """Start the decoder at the data's mean (:func:`~pyro_lvm.models.likelihoods.initial_output_bias`)
        and set the VampPrior's pseudo-inputs to random rows of ``train`` (pulled slightly
        inside (0, 1) for bounded data)."""
        initial_output_bias(self.decoder, self.likelihood, train)
        if self.config.prior != "vamp":
            return
        k = self.config.pseudo_inputs
        rows = train[torch.randint(train.shape[0], (k,), device=train.device)].to(self.pseudo_raw)
        with torch.no_grad():
            self.pseudo_raw.copy_(torch.logit(rows.clamp(0.05, 0.95)) if self._bounded() else rows)

    def prior(self, num: int) -> dist.Distribution:
        if self.config.prior == "vamp":
            components = self._gaussian(self.encoder(self.pseudo_input_values())).base_dist
            return UniformGaussianMixture(components.loc, components.scale).expand([num])
        return StandardNormal(self.prior_loc).expand([num, self.config.latent_dim]).to_event(1)

    def _gaussian(self, out: torch.Tensor) -> dist.Distribution:
        loc, raw = out[..., :2 * self.config.latent_dim].chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.config.min_scale).to_event(1)

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        r""":math:`q_\phi(z \mid x)`: the Gaussian, or with a flow a :class:`FlowPosterior`."""
        out = self.encoder(x)
        base = self._gaussian(out)
        if self.config.guide_flow == "none":
            return base
        return FlowPosterior(base, self.flow.transforms(out[..., 2 * self.config.latent_dim:]))

    def encoder_mutual_information(self, x: torch.Tensor) -> Optional[float]:
        """As the base class; ``None`` with a flow guide, whose density at other points' samples
        needs the flow's inverse for every pair of points (none for planar flows)."""
        if self.config.guide_flow != "none":
            return None
        return super().encoder_mutual_information(x)

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
