r"""How much the latent code is used: active units and mutual information."""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch.distributions import Distribution

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
    log_qz_total = 0.0
    for z in samples:
        zb = z.unsqueeze(1)  # (b, 1, d) against batch (b',)
        blocks = [q.log_prob(zb) for q in dists]  # each (b, b')
        log_qz = torch.logsumexp(torch.cat(blocks, dim=1), dim=1) - math.log(n)
        log_qz_total += log_qz.sum().item()
    return neg_entropy / n - log_qz_total / n


def _sample_with(q: Distribution, generator: torch.Generator) -> torch.Tensor:
    state = torch.get_rng_state()
    torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
    try:
        return q.sample()
    finally:
        torch.set_rng_state(state)
