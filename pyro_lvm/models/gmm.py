r"""Gaussian mixture model with the assignment marginalized exactly.

Generative story, for each data point :math:`x_n \in \mathbb{R}^D`:

.. math::

    z_n \sim \mathrm{Categorical}(w), \qquad
    x_n \mid z_n = k \sim \mathcal{N}(\mu_k, \Sigma_k),

with :math:`\Sigma_k` full, diagonal (:math:`\operatorname{diag}\sigma_k^2`)
or spherical (:math:`\sigma_k^2 I`). The model marks :math:`z_n` for parallel
enumeration, so ``TraceEnum_ELBO`` (objective ``"enum"``) sums it out and the
objective is the exact log-likelihood

.. math::

    \log p(x) = \sum_n \log \sum_{k=1}^{K} w_k\, \mathcal{N}(x_n \mid \mu_k, \Sigma_k),

never a sampled estimate. The guide is empty: with point-estimated globals
there is no latent left to approximate, and when the guide is exact the ELBO
*is* :math:`\log p(x)`.

:meth:`GMM.bayesian_model` adds priors for full Bayesian inference by NUTS:
:math:`w \sim \mathrm{Dirichlet}(\alpha 1_K)`, :math:`\mu_k \sim
\mathcal{N}(m_0, s_0^2 I)`, and :math:`\Sigma_k = \operatorname{diag}(\tau_k)
\Omega_k \operatorname{diag}(\tau_k)` with :math:`L_{\Omega_k} \sim
\mathrm{LKJCholesky}(\eta)` and :math:`\tau_{kd} \sim \mathrm{LogNormal}(\log
s_d, 1)`, where :math:`m_0`, :math:`s_0`, :math:`s_d` come from the data's
location and scale (:meth:`GMM.set_data_scale`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import config_enumerate, infer_discrete
from torch import nn

from pyro_lvm.base import LatentVariableModel, batch_size_of
from pyro_lvm.models.covariance import COVARIANCES, CovarianceStructure
from pyro_lvm.registry import MODELS


@dataclass
class GMMConfig:
    """Hyperparameters of :class:`GMM`.

    :param int input_dim: dimension :math:`D` of a data point.
    :param int components: number of components :math:`K`.
    :param str covariance: ``"full"``, ``"diag"`` or ``"spherical"``.
    :param float reg_covar: floor added to the covariance diagonal (EM) and
        to the variances (all fits), for numerical safety.
    :param float weight_concentration: Dirichlet :math:`\\alpha` (Bayesian model).
    :param float mean_prior_scale: :math:`s_0` in units of the data's scale.
    :param float lkj_concentration: LKJ :math:`\\eta` (Bayesian model, full covariance).
    """

    input_dim: int = 2
    components: int = 3
    covariance: str = "full"
    reg_covar: float = 1e-6
    weight_concentration: float = 1.0
    mean_prior_scale: float = 3.0
    lkj_concentration: float = 2.0

    def __post_init__(self):
        if self.input_dim < 1 or self.components < 1:
            raise ValueError("input_dim and components must be positive")
        if self.covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {tuple(COVARIANCES)}, got {self.covariance!r}")
        if not self.reg_covar >= 0:
            raise ValueError("reg_covar must be non-negative")
        for name in ("weight_concentration", "mean_prior_scale", "lkj_concentration"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


@MODELS.register("gmm")
class GMM(LatentVariableModel):
    r"""Gaussian mixture; see the module docstring for the model and its priors.

    Parameters are stored unconstrained (weight logits, means, and a raw
    Cholesky factor, log scales or one log scale per component), so that any
    gradient method can fit them; :mod:`pyro_lvm.inference.em` sets them in
    closed form.

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import GMM
        >>> from pyro_lvm.objectives import EnumELBO
        >>> gmm = GMM(input_dim=2, components=3)
        >>> x = torch.randn(10, 2)
        >>> loss = EnumELBO().terms(gmm.model, gmm.guide, x).loss   # exact: no sampling
        >>> torch.allclose(-loss, gmm.log_likelihood(x).sum())
        True
    """

    Config = GMMConfig
    latent_sites = ("z",)
    train_flow = "tabular"  # pyro-lvm train gmm reads a CSV file and fits by EM, SVI or NUTS

    def __init__(self, config: Optional[GMMConfig] = None, **kwargs):
        super().__init__(config, **kwargs)
        K, D = self.config.components, self.config.input_dim
        self.weight_logits = nn.Parameter(torch.zeros(K))
        self.locs = nn.Parameter(torch.randn(K, D))
        self.raw_scale = nn.Parameter(self.covariance_structure.raw_init(K, D))
        self.register_buffer("data_loc", torch.zeros(D))
        self.register_buffer("data_scale", torch.ones(D))

    @property
    def default_objective(self) -> str:
        """``enum``: the assignment is summed out exactly."""
        return "enum"

    # --------------------------------------------------------------- globals
    @property
    def covariance_structure(self) -> CovarianceStructure:
        """The structure of the covariances (:mod:`pyro_lvm.models.covariance`)."""
        return COVARIANCES[self.config.covariance]

    @property
    def _floor(self) -> float:
        r"""The floor :math:`\sqrt{r}` added to every standard deviation."""
        return math.sqrt(self.config.reg_covar) if self.config.reg_covar > 0 else 0.0

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.weight_logits, -1)

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factors :math:`L_k` of the covariances, shape ``(K, D, D)``."""
        return self.covariance_structure.scale_tril(self.raw_scale, self._floor, self.config.input_dim)

    def covariances(self) -> torch.Tensor:
        L = self.scale_tril()
        return L @ L.transpose(-1, -2)

    @torch.no_grad()
    def set_parameters(self, weights: torch.Tensor, locs: torch.Tensor, covariances: torch.Tensor) -> None:
        """Set the globals from constrained values (covariances of shape ``(K, D, D)``)."""
        dtype = self.locs.dtype
        self.weight_logits.copy_(weights.clamp_min(1e-300).log().to(dtype))
        self.locs.copy_(locs.to(dtype))
        self.raw_scale.copy_(self.covariance_structure.raw_from(covariances.to(dtype), self._floor))

    @torch.no_grad()
    def set_data_scale(self, x: torch.Tensor) -> None:
        """Record the data's location and scale, which set the Bayesian priors."""
        self.data_loc.copy_(x.mean(0))
        self.data_scale.copy_(x.std(0).clamp_min(1e-8))

    # ------------------------------------------------------------- densities
    def components_dist(self) -> dist.MultivariateNormal:
        return dist.MultivariateNormal(self.locs, scale_tril=self.scale_tril())

    def prior(self, num: int) -> dist.Distribution:
        return dist.Categorical(logits=self.weight_logits).expand([num])

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        return dist.MultivariateNormal(self.locs[z], scale_tril=self.scale_tril()[z])

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\log w_k + \log \mathcal{N}(x_n \mid \mu_k, \Sigma_k)`, shape ``(N, K)``."""
        return torch.log_softmax(self.weight_logits, -1) + self.components_dist().log_prob(x.unsqueeze(-2))

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\log p(x_n)` per point, the assignment summed out."""
        return torch.logsumexp(self.component_log_prob(x), -1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`p(z_n = k \mid x_n)`, shape ``(N, K)``."""
        return torch.softmax(self.component_log_prob(x), -1)

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        return dist.Categorical(logits=self.component_log_prob(x))

    @torch.no_grad()
    def map_assignments(self, x: torch.Tensor) -> torch.Tensor:
        """MAP assignment of each point, by ``infer_discrete`` on the enumerated model."""
        if self.config.components == 1:  # nothing to enumerate
            return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        decoder = infer_discrete(self.model, first_available_dim=-2, temperature=0)
        trace = pyro.poutine.trace(decoder).get_trace(x)
        return trace.nodes["z"]["value"]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.locs[self.responsibilities(x).argmax(-1)]

    def generate(self, num: int, mean: bool = False) -> torch.Tensor:
        with torch.no_grad():
            px = self.decode(self.sample_prior(num))
            return px.mean if mean else px.sample()

    # ------------------------------------------------------- model and guide
    @config_enumerate
    def model(self, x=None, *, data_size=None, num_samples=None):
        batch = batch_size_of(x, num_samples)
        weights, locs, scale_tril = self.weights, self.locs, self.scale_tril()
        with self.data_plate(batch, data_size, locs.device):
            z = pyro.sample("z", dist.Categorical(weights))
            return pyro.sample("x", dist.MultivariateNormal(locs[z], scale_tril=scale_tril[z]), obs=x)

    def guide(self, x=None, *, data_size=None, num_samples=None):
        """Empty: the assignment is enumerated in the model, the globals are parameters."""

    # ------------------------------------------------------- Bayesian model
    def sample_globals(self):
        """Sample :math:`w, \\mu, L` from their priors (inside a model)."""
        c = self.config
        K = c.components
        loc, scale = self.data_loc, self.data_scale
        w = pyro.sample("weights", dist.Dirichlet(torch.full((K,), c.weight_concentration,
                                                             dtype=loc.dtype, device=loc.device)))
        with pyro.plate("components", K, dim=-1):
            mu = pyro.sample("locs", dist.Normal(loc, c.mean_prior_scale * scale).to_event(1))
            L = self.covariance_structure.sample_scale_tril(loc, scale, c.lkj_concentration)
        return w, mu, L

    @config_enumerate
    def bayesian_model(self, x=None, *, num_samples=None):
        """The model with priors on the globals, for NUTS (assignment enumerated)."""
        w, mu, L = self.sample_globals()
        batch = batch_size_of(x, num_samples)
        with pyro.plate("data", batch, dim=-1):
            z = pyro.sample("z", dist.Categorical(w))
            pyro.sample("x", dist.MultivariateNormal(mu[z], scale_tril=L[z]), obs=x)

    def check_data(self, x, name: str = "x") -> torch.Tensor:
        x = super().check_data(x, name)
        if x.shape[0] < self.config.components:
            raise ValueError(f"{name} has {x.shape[0]} rows, fewer than the {self.config.components} components")
        return x
