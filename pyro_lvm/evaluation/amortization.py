r"""The inference gap of a trained model, split into approximation and amortization (Cremer et al. 2018).

For data point :math:`x`, with :math:`q_\phi(z \mid x)` the amortized encoder and
:math:`q^*_x` the best member of the same family for that point alone (found by
:func:`pyro_lvm.inference.local.fit_local_guide`),

.. math::

    \log p(x) - \mathcal{L}[q_\phi]
    = \underbrace{\log p(x) - \mathcal{L}[q^*_x]}_{\text{approximation gap}}
    + \underbrace{\mathcal{L}[q^*_x] - \mathcal{L}[q_\phi]}_{\text{amortization gap}},

where :math:`\mathcal{L}[q] = \mathbb{E}_q[\log p(x, z) - \log q(z)]`. The
approximation gap is the price of the variational family, the amortization
gap that of sharing one encoder across the data set. Here :math:`\log p(x)`
is the importance-sampling estimate with the local guide as proposal, and
both ELBOs use the same estimator (closed-form KL where torch has it).

References

[1] Cremer, Li & Duvenaud, *Inference Suboptimality in Variational Autoencoders*, ICML 2018.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, Optional

import pyro
import torch

from pyro_lvm.evaluation.elbo_split import elbo_terms
from pyro_lvm.evaluation.marginal_likelihood import log_marginal_likelihood
from pyro_lvm.inference.local import LocalGaussianGuide, fit_local_guide


def _mean_se(values: torch.Tensor):
    n = values.numel()
    return values.mean().item(), (values.std().item() / math.sqrt(n)) if n > 1 else 0.0


def amortization_gap(model, x: torch.Tensor, steps: int = 1000, lr: float = 1e-2, num_particles: int = 1000,
                     elbo_samples: int = 100, batch_size: int = 100, progress: bool = False,
                     local_guide: Optional[LocalGaussianGuide] = None) -> Dict[str, Any]:
    """Both gaps of ``model`` on the points ``x``, in nats per point.

    :param int steps: full-batch SVI steps of the local guide.
    :param float lr: its Adam learning rate.
    :param int num_particles: importance samples for :math:`\\log p(x)`.
    :param int elbo_samples: samples per point for each ELBO.
    :param local_guide: a :class:`~pyro_lvm.inference.local.LocalGaussianGuide` already fitted
        to ``x`` (then ``steps`` and ``lr`` are not used).
    :returns: ``log_px``, ``amortized_elbo``, ``local_elbo``, ``approximation_gap``,
        ``amortization_gap`` (means over the points) with ``*_se`` standard errors
        (paired over the points for the gaps), and the settings.

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import PPCA
        >>> m = PPCA(input_dim=3, latent_dim=1)
        >>> gaps = amortization_gap(m, torch.randn(20, 3), steps=300, lr=5e-2, num_particles=100)
        >>> abs(gaps["approximation_gap"]) < 1e-3   # the exact posterior is in the family
        True
        >>> gaps["amortization_gap"] > 0            # an untrained encoder is far from it
        True
    """
    x = model.check_data(x)
    if int(elbo_samples) != elbo_samples or elbo_samples < 1:
        raise ValueError(f"elbo_samples must be a positive integer, got {elbo_samples}")
    start = time.perf_counter()
    if local_guide is not None and local_guide.num_points != x.shape[0]:
        raise ValueError(f"local_guide holds {local_guide.num_points} points, x has {x.shape[0]}")
    guide = local_guide or fit_local_guide(model, x, steps=steps, lr=lr, progress=progress)
    was_training = model.training
    model.eval()
    amortized, local, log_px = [], [], []
    try:
        with pyro.validation_enabled(False), torch.no_grad():
            for begin in range(0, x.shape[0], batch_size):
                index = torch.arange(begin, min(begin + batch_size, x.shape[0]), device=x.device)
                xb, local_guide = x[index], guide.select(index)
                amortized.append(elbo_terms(model.model, model.guide, xb, elbo_samples,
                                            model.max_plate_nesting)["elbo"])
                local.append(elbo_terms(model.model, local_guide, xb, elbo_samples, model.max_plate_nesting)["elbo"])
                log_px.append(log_marginal_likelihood(model.model, local_guide, xb, num_particles=num_particles,
                                                      batch_size=xb.shape[0], max_plate_nesting=model.max_plate_nesting,
                                                      max_elements=max(1, 2**24 // model.evaluation_width)))
    finally:
        model.train(was_training)
    amortized, local, log_px = torch.cat(amortized), torch.cat(local), torch.cat(log_px)
    result: Dict[str, Any] = {"gap_points": int(x.shape[0]), "gap_steps": int(steps), "gap_lr": float(lr),
                              "gap_particles": int(num_particles), "gap_elbo_samples": int(elbo_samples)}
    for name, values in (("log_px", log_px), ("amortized_elbo", amortized), ("local_elbo", local),
                         ("approximation_gap", log_px - local), ("amortization_gap", local - amortized)):
        result[name], result[f"{name}_se"] = _mean_se(values.double())
    result["gap_seconds"] = time.perf_counter() - start
    return result
