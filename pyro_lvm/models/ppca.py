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

    @torch.no_grad()
    def set_maximum_likelihood(self, x: torch.Tensor) -> None:
        r"""Set :math:`W, b, \sigma` to the maximum-likelihood solution on the rows of ``x``, in
        closed form (Tipping & Bishop 1999, eqs. 7 and 8), and the guide to its exact posterior.

        With :math:`S = \frac1N \sum_n (x_n - \bar x)(x_n - \bar x)^\top` and its eigenvalues
        :math:`\lambda_1 \ge \dots \ge \lambda_D` (eigenvectors :math:`U`):

        .. math::

            b = \bar x, \qquad
            \sigma^2 = \frac{1}{D - d} \sum_{j > d} \lambda_j, \qquad
            W = U_d\, (\Lambda_d - \sigma^2 I)^{1/2},

        so that the model's covariance :math:`WW^\top + \sigma^2 I` keeps the :math:`d` largest
        eigenvalues of :math:`S` and sets the others to their mean. (:math:`W` is defined up to a
        rotation of :math:`z`; this is the one with orthogonal columns.) Needs :math:`d < D` and
        :math:`N \ge 2`; the arithmetic is in float64 whatever the model's dtype.

        .. doctest::

            >>> import torch
            >>> from pyro_lvm.models import PPCA
            >>> x = torch.randn(500, 3) @ torch.tensor([[3.0, 0, 0], [1, 1, 0], [0, 0, 0.5]])
            >>> m = PPCA(input_dim=3, latent_dim=1)
            >>> m.set_maximum_likelihood(x)
            >>> S = torch.cov(x.T, correction=0)
            >>> top = torch.linalg.eigvalsh(S)[-1]
            >>> bool(torch.isclose(torch.linalg.eigvalsh(m.marginal().covariance_matrix)[-1], top))
            True
        """
        c = self.config
        if x.dim() != 2 or x.shape[1] != c.input_dim:
            raise ValueError(f"expected rows of {c.input_dim} values, got a tensor of shape {tuple(x.shape)}")
        if x.shape[0] < 2:
            raise ValueError(f"the maximum-likelihood fit needs at least 2 rows, got {x.shape[0]}")
        if c.latent_dim >= c.input_dim:
            raise ValueError(f"the closed form needs latent_dim < input_dim, got {c.latent_dim} >= {c.input_dim}")
        x64 = x.double()
        mean = x64.mean(0)
        eigenvalues, vectors = torch.linalg.eigh(torch.cov(x64.T, correction=0))  # ascending
        eigenvalues, vectors = eigenvalues.flip(0).clamp_min(0), vectors.flip(1)
        d = c.latent_dim
        noise_var = eigenvalues[d:].mean().clamp_min(1e-12)
        W = vectors[:, :d] * (eigenvalues[:d] - noise_var).clamp_min(0).sqrt()
        like = self.loading.weight
        self.loading.weight.copy_(W.to(like))
        self.loading.bias.copy_(mean.to(like))
        self.log_noise.copy_(0.5 * noise_var.log().to(like))
        self.set_exact_guide()

    def mutual_information(self) -> torch.Tensor:
        r"""Exact :math:`I(x; z) = \tfrac12 \log\det M` under the model."""
        _, cov = self._posterior_params()
        return -0.5 * torch.logdet(cov)
