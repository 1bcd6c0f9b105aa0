r"""Per-dimension free bits (Kingma et al. 2016).

The KL term of the ELBO is replaced by

.. math::

    \sum_{i=1}^{d} \max\Big(\lambda,\; \frac{1}{B} \sum_{n=1}^{B}
    \mathrm{KL}\big(q(z_{n,i} \mid x_n) \,\|\, p(z_{n,i})\big)\Big),

per data point, with the KL of each latent dimension averaged over the
minibatch. A dimension whose KL is under :math:`\lambda` nats feels no
pressure towards the prior, which keeps the encoder from collapsing.

The KL inside the maximum is the closed form wherever torch has one (a
Gaussian posterior and prior), under both ``elbo`` and ``meanfield``: a
one-sample estimate :math:`\hat K` inside the maximum is biased,
:math:`\mathbb{E}\max(\lambda, \hat K) \ge \max(\lambda, \mathrm{KL})`, and
switches the floor on and off at random for a dimension near it. Without a
closed form the one-sample estimate :math:`\log q(z_i) - \log p(z_i)` is used.

>>> import torch
>>> free_bits_kl(torch.tensor([[0.1, 2.0], [0.3, 1.0]]), 0.5)
tensor(4.)
"""

from __future__ import annotations

import torch
from torch.distributions import Independent, kl_divergence

from pyro_lvm.objectives.checks import InvalidObjectiveError
from pyro_lvm.objectives.traces import data_scale, sample_sites, site_log_prob, trace_pair


def free_bits_kl(kl_per_dim: torch.Tensor, lam: float) -> torch.Tensor:
    r"""Free-bits KL summed over the data points of a batch.

    :param kl_per_dim: KL per data point and dimension, shape ``(..., B, d)``
        (leading dims, e.g. particles, are averaged).
    :param float lam: the floor :math:`\lambda` in nats per dimension.
    :returns: :math:`B \sum_i \max(\lambda, \overline{\mathrm{KL}}_i)`.
    """
    if kl_per_dim.dim() < 2:
        raise ValueError("kl_per_dim needs shape (..., batch, dims)")
    batch = kl_per_dim.shape[-2]
    per_dim = kl_per_dim.reshape(-1, kl_per_dim.shape[-1]).mean(0)
    return batch * torch.clamp(per_dim, min=lam).sum()


def kl_per_dim(guide_site: dict, model_site: dict) -> torch.Tensor:
    """KL of one latent site per data point and per dimension, shape ``(..., B, d)``.

    The closed form where torch registers one for the pair of distributions,
    else the one-sample estimate :math:`\\log q(z_i) - \\log p(z_i)`. Both
    distributions must be ``Independent`` over one dimension of independent
    coordinates. Gradients need a reparameterized guide site; a value alone (under
    ``torch.no_grad()``, e.g. the validation loss of a relaxed discrete VAE, whose latents are
    exact in ``eval()`` mode) does not.
    """
    q, p = guide_site["fn"], model_site["fn"]
    for d in (q, p):
        if not (isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1):
            raise InvalidObjectiveError(
                f"free bits needs a latent with independent dimensions (Independent over "
                f"one dim); site {guide_site['name']!r} has {type(d).__name__}: use the objective "
                "without free bits"
            )
    if not q.has_rsample and torch.is_grad_enabled():
        raise InvalidObjectiveError("free bits is implemented for reparameterized latents only: use the "
                                    "objective without free bits")
    try:
        return kl_divergence(q.base_dist, p.base_dist)
    except NotImplementedError:  # no closed form for this pair
        z = guide_site["value"]
        return q.base_dist.log_prob(z) - p.base_dist.log_prob(z)


def free_bits_loss(model, guide, args, kwargs, kl_weight: float, lam: float,
                   num_particles: int = 1, max_plate_nesting: int = 1) -> torch.Tensor:
    """Negative free-bits objective, scaled to the full data set; differentiable."""
    vectorized = num_particles if num_particles > 1 else None
    model_trace, guide_trace = trace_pair(model, guide, args, kwargs, vectorized, max_plate_nesting)
    scale = data_scale(model_trace)
    log_lik = sum(site_log_prob(s) for s in sample_sites(model_trace, observed=True).values())
    recon = log_lik.sum() / num_particles
    kl = 0.0
    model_latents = sample_sites(model_trace, observed=False)
    for name, site in sample_sites(guide_trace, observed=False).items():
        kl = kl + free_bits_kl(kl_per_dim(site, model_latents[name]), lam)
    for site in sample_sites(guide_trace, observed=True).values():  # a guide factor: not a KL
        recon = recon - site_log_prob(site).sum() / num_particles
    return -scale * (recon - kl_weight * kl)
