r"""Probabilistic PCA: a linear-Gaussian latent model with a closed-form marginal.

Generative story [1]:

.. math::

    z_n \sim \mathcal{N}(0, I_d), \qquad
    x_n \mid z_n \sim \mathcal{N}(W z_n + b, \sigma^2 I_D),

so that :math:`p(x_n) = \mathcal{N}(b, W W^\top + \sigma^2 I_D)` and the exact
posterior is :math:`p(z_n \mid x_n) = \mathcal{N}(M^{-1} W^\top (x_n - b) /
\sigma^2, M^{-1})` with :math:`M = I_d + W^\top W / \sigma^2`. The guide is an
amortized linear Gaussian with a full covariance,
:math:`q(z_n \mid x_n) = \mathcal{N}(A x_n + c, L L^\top)`, a family that
contains the exact posterior. That makes the model the library's yardstick:
every estimator can be compared with the exact :math:`\log p(x)`.

References

[1] Tipping & Bishop, *Probabilistic Principal Component Analysis*, JRSS B 1999.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_lvm.base import LatentVariableModel, batch_size_of
from pyro_lvm.distributions import StandardNormal
from pyro_lvm.nn.functional import inverse_softplus
from pyro_lvm.registry import MODELS


@dataclass
class PPCAConfig:
    """Hyperparameters of :class:`PPCA`.

    :param int input_dim: size :math:`D` of one data point.
    :param int latent_dim: size :math:`d` of :math:`z`.
    :param float init_noise: initial observation noise :math:`\\sigma`.
    """

    input_dim: int = 2
    latent_dim: int = 1
    init_noise: float = 1.0

    def __post_init__(self):
        if self.input_dim <= 0 or self.latent_dim <= 0:
            raise ValueError("input_dim and latent_dim must be positive")
        if not self.init_noise > 0:
            raise ValueError("init_noise must be positive")


@MODELS.register("ppca")
class PPCA(LatentVariableModel):
    r"""Probabilistic PCA with an amortized full-covariance Gaussian guide.

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import PPCA
        >>> from pyro_lvm.objectives import ELBO
        >>> m = PPCA(input_dim=3, latent_dim=2)
        >>> x = torch.randn(4, 3)
        >>> m.set_exact_guide()      # q(z|x) = p(z|x): the ELBO is exact
        >>> elbo = -ELBO().terms(m.model, m.guide, x).loss
        >>> torch.allclose(elbo, m.log_marginal(x).sum(), atol=1e-4)
        True
    """

    Config = PPCAConfig

    def __init__(self, config: Optional[PPCAConfig] = None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.loading = nn.Linear(c.latent_dim, c.input_dim)
        self.log_noise = nn.Parameter(torch.tensor(float(c.init_noise)).log())
        self.recognition = nn.Linear(c.input_dim, c.latent_dim)
        self.guide_tril = nn.Parameter(torch.zeros(c.latent_dim, c.latent_dim))
        with torch.no_grad():
            self.guide_tril.diagonal().fill_(inverse_softplus(torch.tensor(1.0)).item())
        # the prior N(0, I) (StandardNormal) takes shape and device from prior_loc; both stay in checkpoints
        self.register_buffer("prior_loc", torch.zeros(c.latent_dim))
        self.register_buffer("prior_scale", torch.ones(c.latent_dim))

    # -------------------------------------------------------------- densities
    @property
    def noise(self) -> torch.Tensor:
        return self.log_noise.exp()

    def guide_scale_tril(self) -> torch.Tensor:
        raw = self.guide_tril
        return raw.tril(-1) + torch.diag_embed(F.softplus(raw.diagonal()) + 1e-5)

    def prior(self, num: int) -> dist.Distribution:
        return StandardNormal(self.prior_loc).expand([num, self.config.latent_dim]).to_event(1)

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        return dist.MultivariateNormal(self.recognition(x), scale_tril=self.guide_scale_tril())

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        loc = self.loading(z)
        return dist.Normal(loc, self.noise.expand(loc.shape)).to_event(1)

    def model(self, x=None, *, data_size=None, num_samples=None):
        batch = batch_size_of(x, num_samples)
        with self.data_plate(batch, data_size, self.prior_loc.device):
            z = pyro.sample("z", self.prior(batch))
            return pyro.sample("x", self.decode(z), obs=x)

    def guide(self, x, *, data_size=None, num_samples=None):
        with self.data_plate(x.shape[0], data_size, x.device):
            return pyro.sample("z", self.encode(x))

    # ---------------------------------------------------------- exact answers
    def marginal(self) -> dist.MultivariateNormal:
        r"""The exact :math:`p(x) = \mathcal{N}(b, WW^\top + \sigma^2 I)`."""
        W, b = self.loading.weight, self.loading.bias
        cov = W @ W.T + self.noise**2 * torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
        return dist.MultivariateNormal(b, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\log p(x_n)` for each row of ``x``."""
        return self.marginal().log_prob(x)

    def exact_posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        r"""The exact posterior :math:`p(z_n \mid x_n)`."""
        loc, cov = self._posterior_params()
        A, c = loc
        return dist.MultivariateNormal(x @ A.T + c, covariance_matrix=cov)

    def _posterior_params(self):
        W, b = self.loading.weight, self.loading.bias
        s2 = self.noise**2
        M = torch.eye(W.shape[1], dtype=W.dtype, device=W.device) + W.T @ W / s2
        cov = torch.linalg.inv(M)
        A = cov @ W.T / s2
        return (A, -A @ b), cov

    @torch.no_grad()
    def set_exact_guide(self, covariance_scale: float = 1.0) -> None:
        """Set the guide to the exact posterior, its covariance times ``covariance_scale``."""
        (A, c), cov = self._posterior_params()
        self.recognition.weight.copy_(A)
        self.recognition.bias.copy_(c)
        L = torch.linalg.cholesky(cov * covariance_scale)
        raw = L.tril(-1) + torch.diag_embed(inverse_softplus(L.diagonal() - 1e-5))
        self.guide_tril.copy_(raw)

    def mutual_information(self) -> torch.Tensor:
        r"""Exact :math:`I(x; z) = \tfrac12 \log\det M` under the model."""
        _, cov = self._posterior_params()
        return -0.5 * torch.logdet(cov)
