r"""A VAE with two stochastic layers (the IWAE paper's two-layer architecture).

Generative story, for each data point :math:`x_n`:

.. math::

    z_{2,n} &\sim \mathcal{N}(0, I_{d_2}), \\
    z_{1,n} \mid z_{2,n} &\sim \mathcal{N}\big(\mu_\theta(z_{2,n}),
        \operatorname{diag} \sigma^2_\theta(z_{2,n})\big), \\
    x_n \mid z_{1,n} &\sim p_\theta(x_n \mid z_{1,n})
    \quad\text{(Bernoulli, Gaussian or discretized logistic, as in the VAE)},

with the guide in the other direction,
:math:`q_\phi(z_1, z_2 \mid x) = q_\phi(z_1 \mid x)\, q_\phi(z_2 \mid z_1)`, both
diagonal Gaussians from MLPs. Every objective sees two latent sites, ``z1`` and
``z2``; the importance-sampled :math:`\log p(x)` proposes both from the guide:

.. math::

    \log p(x) \approx \log \frac1K \sum_k \frac{p(z_2^k)\, p(z_1^k \mid z_2^k)\, p(x \mid z_1^k)}
    {q(z_1^k \mid x)\, q(z_2^k \mid z_1^k)}.

Burda et al. [1] use ``latent_dims=(100, 50)``, ``hidden=(200, 200)`` between
:math:`x` and :math:`z_1` and ``hidden2=(100, 100)`` between :math:`z_1` and :math:`z_2`.

A run of the command line (:func:`pyro_lvm.runs.train_run`) that names no
``--kl-anneal`` warms the KL terms up, as Sønderby et al. [2] do for hierarchical
VAEs: their weight rises linearly from 0.01 to 1 over the whole run
(:attr:`HVAE.default_kl_warmup`; ``--kl-anneal none`` turns it off). Without a
warm-up the top layer stays nearly unused (3 of 50 units active after 10 epochs
on binarized MNIST) and the model trails the one-layer VAE (measured in the
docs, "Two stochastic layers"). The Trainer and Pyro's ``SVI`` take the objective they
are given: pass ``annealing=LinearSchedule(steps)`` to it for the same warm-up.

The guide marks ``z2`` with ``infer={"parents": ("z1",)}``: its parameters are a
function of the guide's own sample of ``z1``, which the DReG gradient of
:class:`~pyro_lvm.objectives.IWAE` (``log q`` at stopped parameters) cannot
separate from the pathwise gradient through ``z1``, so it refuses the pair.

References

[1] Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.

[2] Sønderby, Raiko, Maaløe, Sønderby & Winther, *Ladder Variational Autoencoders*, NeurIPS 2016.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from pyro_lvm.base import LatentVariableModel, batch_size_of
from pyro_lvm.distributions import StandardNormal
from pyro_lvm.models.likelihoods import LIKELIHOODS, check_decoder_options, initial_output_bias
from pyro_lvm.nn import MLP, parse_hidden
from pyro_lvm.registry import MODELS


@dataclass
class HVAEConfig:
    """Hyperparameters of :class:`HVAE`.

    :param int input_dim: size of one data point; taken from the data set by the command line.
    :param latent_dims: ``(d1, d2)``, the sizes of :math:`z_1` (next to the data) and :math:`z_2` (top).
    :param hidden: hidden layers between :math:`x` and :math:`z_1`, both directions.
    :param hidden2: hidden layers between :math:`z_1` and :math:`z_2`, both directions.
    :param str activation: activation between layers.
    :param str likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"discretized_logistic"``.
    :param float min_scale: floor added to every scale.
    """

    input_dim: int = 784
    latent_dims: Tuple[int, ...] = (100, 50)
    hidden: Tuple[int, ...] = (200, 200)
    hidden2: Tuple[int, ...] = (100, 100)
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    min_scale: float = 1e-3

    def __post_init__(self):
        self.hidden = parse_hidden(self.hidden)
        self.hidden2 = parse_hidden(self.hidden2)
        self.latent_dims = parse_hidden(self.latent_dims)
        if len(self.latent_dims) != 2:
            raise ValueError(f"latent_dims must be two sizes (d1, d2) such as 100,50, got {self.latent_dims}")
        check_decoder_options(self, positive=("input_dim",))


@MODELS.register("hvae")
class HVAE(LatentVariableModel):
    r"""VAE with two stochastic layers, :math:`z_2 \to z_1 \to x`.

    See the module docstring for the generative story and the guide.

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import HVAE
        >>> from pyro_lvm.evaluation import log_marginal_likelihood
        >>> m = HVAE(input_dim=6, latent_dims=(3, 2), hidden=(8,), hidden2=(4,))
        >>> x = torch.bernoulli(torch.full((5, 6), 0.5))
        >>> log_marginal_likelihood(m.model, m.guide, x, num_particles=20).shape
        torch.Size([5])
        >>> m.generate(4).shape
        torch.Size([4, 6])
    """

    Config = HVAEConfig
    latent_sites = ("z1", "z2")
    #: ``pyro-lvm train hvae`` ramps the KL weight linearly to 1 over the whole run (see the module docstring)
    default_kl_warmup = 1.0

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        d1, d2 = c.latent_dims
        self.likelihood = LIKELIHOODS[c.likelihood]
        self.encoder1 = MLP(c.input_dim, c.hidden, 2 * d1, c.activation)
        self.encoder2 = MLP(d1, c.hidden2, 2 * d2, c.activation)
        self.decoder2 = MLP(d2, tuple(reversed(c.hidden2)), 2 * d1, c.activation)
        self.decoder1 = MLP(d1, tuple(reversed(c.hidden)), self.likelihood.params * c.input_dim, c.activation)
        # the prior N(0, I) (StandardNormal) takes shape and device from prior_loc; both stay in checkpoints
        self.register_buffer("prior_loc", torch.zeros(d2))
        self.register_buffer("prior_scale", torch.ones(d2))

    @property
    def data_support(self) -> str:
        return self.likelihood.support

    def initialize(self, train: torch.Tensor) -> None:
        """Start the decoder at the data's mean (:func:`~pyro_lvm.models.likelihoods.initial_output_bias`)."""
        initial_output_bias(self.decoder1, self.likelihood, train)

    def _normal(self, out: torch.Tensor) -> dist.Distribution:
        loc, raw = out.chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.config.min_scale).to_event(1)

    def prior(self, num: int) -> dist.Distribution:
        r"""The top prior :math:`p(z_2) = \mathcal{N}(0, I)`, batch shape ``(num,)``."""
        return StandardNormal(self.prior_loc).expand([num, self.config.latent_dims[1]]).to_event(1)

    def conditional_prior(self, z2: torch.Tensor) -> dist.Distribution:
        r""":math:`p_\theta(z_1 \mid z_2)`."""
        return self._normal(self.decoder2(z2))

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        r"""The first guide layer :math:`q_\phi(z_1 \mid x)` (the representation next to the data)."""
        return self._normal(self.encoder1(x))

    def encode_top(self, z1: torch.Tensor) -> dist.Distribution:
        r"""The second guide layer :math:`q_\phi(z_2 \mid z_1)`."""
        return self._normal(self.encoder2(z1))

    def decode(self, z1: torch.Tensor) -> dist.Distribution:
        r""":math:`p_\theta(x \mid z_1)`."""
        return self.likelihood.make(self.decoder1(z1), self.config.min_scale)

    def sample_prior(self, num: int) -> torch.Tensor:
        r"""Draws of :math:`z_1` from its marginal prior: :math:`z_2 \sim p(z_2)`, then :math:`z_1 \sim p(z_1 \mid z_2)`."""
        return self.conditional_prior(self.prior(num).sample()).sample()

    def model(self, x=None, *, data_size=None, num_samples=None):
        batch = batch_size_of(x, num_samples)
        with self.data_plate(batch, data_size, self.prior_loc.device):
            z2 = pyro.sample("z2", self.prior(batch))
            z1 = pyro.sample("z1", self.conditional_prior(z2))
            return pyro.sample("x", self.decode(z1), obs=x)

    def guide(self, x, *, data_size=None, num_samples=None):
        with self.data_plate(x.shape[0], data_size, x.device):
            z1 = pyro.sample("z1", self.encode(x))
            return pyro.sample("z2", self.encode_top(z1), infer={"parents": ("z1",)})
