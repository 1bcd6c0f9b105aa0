r"""The ELBO split into reconstruction and KL, per data point.

.. math::

    \mathrm{ELBO}(x) = \underbrace{\mathbb{E}_{q}[\log p(x \mid z)]}_{\text{reconstruction}}
    - \underbrace{\mathrm{KL}(q(z \mid x) \,\|\, p(z))}_{\text{KL}},

with the KL in closed form where ``torch.distributions.kl_divergence`` knows
the pair, and a Monte Carlo estimate otherwise.
"""

from __future__ import annotations

from typing import Callable, Dict

import pyro
import torch
from torch.distributions import kl_divergence

from pyro_lvm.objectives.traces import sample_sites, site_log_prob, trace_pair


def _site_kl(guide_site: dict, model_site: dict, num_samples: int) -> torch.Tensor:
    q, p = guide_site["fn"], model_site["fn"]
    try:
        kl = kl_divergence(q, p)
    except NotImplementedError:
        z = guide_site["value"]
        return (q.log_prob(z) - p.log_prob(z)).mean(0) if num_samples > 1 else q.log_prob(z) - p.log_prob(z)
    return kl[0] if num_samples > 1 else kl


@torch.no_grad()
def elbo_terms(model: Callable, guide: Callable, x: torch.Tensor, num_samples: int = 1,
               max_plate_nesting: int = 1) -> Dict[str, torch.Tensor]:
    """Per-data-point ``recon`` and ``kl`` (tensors of shape ``(len(x),)``) and ``elbo``.

    >>> import torch
    >>> from pyro_lvm.models import PPCA
    >>> m = PPCA(input_dim=2, latent_dim=1)
    >>> t = elbo_terms(m.model, m.guide, torch.randn(3, 2))
    >>> sorted(t), t["elbo"].shape
    (['elbo', 'kl', 'recon'], torch.Size([3]))
    """
    vectorized = num_samples if num_samples > 1 else None
    model_trace, guide_trace = trace_pair(model, guide, (x,), {}, vectorized, max_plate_nesting)
    recon = sum(site_log_prob(s) for s in sample_sites(model_trace, observed=True).values())
    if num_samples > 1:
        recon = recon.mean(0)
    model_latents = sample_sites(model_trace, observed=False)
    kl = torch.zeros_like(recon)
    for name, site in sample_sites(guide_trace).items():
        kl = kl + _site_kl(site, model_latents[name], num_samples)
    return {"recon": recon, "kl": kl, "elbo": recon - kl}


def elbo_split(model: Callable, guide: Callable, data: torch.Tensor, batch_size: int = 500,
               num_samples: int = 1, max_plate_nesting: int = 1) -> Dict[str, float]:
    """Means over ``data`` of reconstruction, KL and negative ELBO (nats per data point)."""
    totals = {"recon": 0.0, "kl": 0.0, "elbo": 0.0}
    with pyro.validation_enabled(False):
        for start in range(0, data.shape[0], batch_size):
            terms = elbo_terms(model, guide, data[start:start + batch_size], num_samples,
                               max_plate_nesting)
            for k in totals:
                totals[k] += terms[k].sum().item()
    n = data.shape[0]
    return {"recon": totals["recon"] / n, "kl": totals["kl"] / n, "neg_elbo": -totals["elbo"] / n}
