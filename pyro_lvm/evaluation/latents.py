r"""How much the latent code is used: active units and mutual information."""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import pyro.distributions as dist
import torch
from torch.distributions import Distribution, Independent, Normal

ACTIVITY_THRESHOLD = 0.01


def _encoded(encode: Callable[[torch.Tensor], Distribution], data: torch.Tensor, batch_size: int):
    for start in range(0, data.shape[0], batch_size):
        yield encode(data[start:start + batch_size])


@torch.no_grad()
def active_units(encode: Callable[[torch.Tensor], Distribution], data: torch.Tensor,
                 threshold: float = ACTIVITY_THRESHOLD, batch_size: int = 500
                 ) -> Tuple[int, torch.Tensor]:
    r"""Number of active latent units (Burda et al. 2016).

    Unit :math:`i` is active when :math:`\mathrm{Var}_{x}\big(\mathbb{E}_{q(z \mid x)}[z_i]\big)
    > \text{threshold}` over ``data``.

    :returns: ``(count, per-unit variances)``.

    >>> import torch
    >>> from torch.distributions import Normal, Independent
    >>> enc = lambda x: Independent(Normal(torch.stack([x[:, 0], 0 * x[:, 0]], -1), 1.0), 1)
    >>> active_units(enc, torch.randn(100, 1))[0]
    1
    """
    means = torch.cat([q.mean.reshape(q.mean.shape[0], -1) for q in _encoded(encode, data, batch_size)])
    variances = means.var(0, unbiased=True) if means.shape[0] > 1 else torch.zeros(means.shape[1])
    return int((variances > threshold).sum().item()), variances


@torch.no_grad()
def mutual_information(encode: Callable[[torch.Tensor], Distribution], data: torch.Tensor,
                       batch_size: int = 500, max_points: Optional[int] = 10000,
                       generator: Optional[torch.Generator] = None) -> float:
    r"""Mutual information :math:`I_q(x; z)` under the encoder's joint (He et al. 2019).

    .. math::

        I_q(x; z) = \mathbb{E}_{x}\mathbb{E}_{q(z \mid x)}[\log q(z \mid x)]
        - \mathbb{E}_{q(z)}[\log q(z)], \qquad
        q(z) \approx \frac{1}{N} \sum_{n=1}^{N} q(z \mid x_n),

    with one :math:`z` drawn per data point and the aggregate posterior
    :math:`q(z)` taken over all ``N`` points (at most ``max_points``, the
    first ones), computed in blocks. The estimate is biased for small
    :math:`N` and bounded above by :math:`\log N`.
    """
    if max_points is not None:
        data = data[:max_points]
    n = data.shape[0]
    if n < 2:
        raise ValueError("mutual information needs at least two data points")
    dists = list(_encoded(encode, data, batch_size))
    neg_entropy = 0.0
    samples = []
    for q in dists:
        z = q.sample() if generator is None else _sample_with(q, generator)
        samples.append(z)
        try:
            neg_entropy -= q.entropy().sum().item()
        except NotImplementedError:
            neg_entropy += q.log_prob(z).sum().item()
    gaussian = _diagonal_gaussian(dists)
    log_qz_total = 0.0
    for z in samples:
        if gaussian is not None:
            log_q = _gaussian_log_densities(z, *gaussian)  # (b, N)
        else:
            zb = z.unsqueeze(1)  # (b, 1, d) against batch (b',)
            log_q = torch.cat([q.log_prob(zb) for q in dists], dim=1)  # (b, N)
        log_qz = torch.logsumexp(log_q, dim=1) - math.log(n)
        log_qz_total += float(log_qz.sum())
    return neg_entropy / n - log_qz_total / n


def _diagonal_gaussian(dists) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """The locations and scales of every point's guide, ``(N, d)`` each, when all of them are
    diagonal Gaussians over a vector (``Independent(Normal, 1)``); ``None`` otherwise."""
    locs, scales = [], []
    for q in dists:
        if not (isinstance(q, Independent) and type(q.base_dist) in (Normal, dist.Normal)
                and q.reinterpreted_batch_ndims == 1 and q.base_dist.loc.dim() == 2):
            return None
        base = q.base_dist
        locs.append(base.loc)
        scales.append(base.scale.expand_as(base.loc))
    return torch.cat(locs), torch.cat(scales)


def _gaussian_log_densities(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \mathcal{N}(z_i; \mu_j, \operatorname{diag}\sigma_j^2)` for every pair ``(i, j)``,
    by expanding the square into matrix products, ``O(b N d)`` multiply-adds and no ``(b, N, d)``
    tensor. The sums run in float64: the expanded terms are large when scales are small, and
    their cancellation would lose float32's digits."""
    z, loc, scale = z.double(), loc.double(), scale.double()
    precision = scale.pow(-2)  # (N, d)
    quad = (z.pow(2) @ precision.T - 2 * z @ (loc * precision).T
            + (loc.pow(2) * precision).sum(-1))  # (b, N)
    log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)  # (N,)
    return -0.5 * quad - log_norm


def _sample_with(q: Distribution, generator: torch.Generator) -> torch.Tensor:
    state = torch.get_rng_state()
    torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
    try:
        return q.sample()
    finally:
        torch.set_rng_state(state)
