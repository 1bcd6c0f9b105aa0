"""Every evaluation number of a trained model, in one dict."""

from __future__ import annotations

import math
import time
from typing import Dict, Optional

import torch

from pyro_lvm.base import LatentVariableModel
from pyro_lvm.evaluation.elbo_split import elbo_split
from pyro_lvm.evaluation.latents import active_units
from pyro_lvm.evaluation.marginal_likelihood import log_marginal_likelihood


def evaluate(model: LatentVariableModel, data: torch.Tensor, num_particles: int = 1000,
             batch_size: int = 100, progress: bool = False, prefix: str = "test",
             proposal: str = "guide", log_px: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """Evaluate ``model`` on ``data``.

    Returns ``{prefix}_nll`` (importance-sampled :math:`-\\log p(x)`, nats per
    data point), ``nll_particles``, ``{prefix}_neg_elbo``, ``{prefix}_recon``
    (:math:`-\\mathbb{E}_q \\log p(x \\mid z)`), ``{prefix}_kl``,
    ``active_units``, ``mutual_info`` and ``eval_seconds``; ``proposal="prior"``
    uses the naive estimator (samples from the prior) for ``{prefix}_nll``.
    ``log_px`` gives the per-point estimates of :math:`\\log p(x)` already
    computed (e.g. by several processes, each on its part of ``data``).
    Where the likelihood is a probability mass over 8-bit values
    (:attr:`~pyro_lvm.base.LatentVariableModel.bits_per_dim`) it adds
    ``{prefix}_bpd``, :func:`bits_per_dim` of the NLL.

    >>> import torch
    >>> from pyro_lvm.models import PPCA
    >>> m = PPCA(input_dim=2, latent_dim=1)
    >>> sorted(evaluate(m, torch.randn(20, 2), num_particles=10))[:3]
    ['active_units', 'eval_seconds', 'mutual_info']
    """
    data = model.evaluation_rows(model.check_data(data))
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        if not model.latent_sites:  # log p(x) is exact: one "particle" is the answer
            num_particles = 1
        ll = log_px if log_px is not None else importance_sampled_log_px(
            model, data, num_particles, batch_size=batch_size, proposal=proposal, progress=progress)
        split = elbo_split(model.model, model.guide, data,
                           max_plate_nesting=model.max_plate_nesting)
        n_active, mi = 0, 0.0
        if model.latent_sites:
            n_active, _ = active_units(model.encode, data)
            mi = model.encoder_mutual_information(data)
    finally:
        model.train(was_training)
    result = {
        f"{prefix}_nll": -ll.mean().item(),
        "nll_particles": int(num_particles),
        "nll_proposal": proposal,
        f"{prefix}_neg_elbo": split["neg_elbo"],
        f"{prefix}_recon": -split["recon"],
        f"{prefix}_kl": split["kl"],
        "active_units": n_active,
        "mutual_info": mi,
        "eval_seconds": time.perf_counter() - start,
    }
    if model.bits_per_dim:
        result[f"{prefix}_bpd"] = bits_per_dim(result[f"{prefix}_nll"], data.shape[-1])
    return result


def importance_sampled_log_px(model: LatentVariableModel, data: torch.Tensor, num_particles: int,
                              batch_size: int = 100, proposal: str = "guide", progress: bool = False) -> torch.Tensor:
    """Per-point :func:`~pyro_lvm.evaluation.marginal_likelihood.log_marginal_likelihood` of a
    model, in chunks whose memory the model's ``evaluation_width`` bounds."""
    if not model.latent_sites:
        num_particles = 1
    data = model.evaluation_rows(data)
    return log_marginal_likelihood(model.model, model.guide, data, num_particles=num_particles,
                                   batch_size=batch_size, proposal=proposal,
                                   max_plate_nesting=model.max_plate_nesting, progress=progress,
                                   max_elements=max(1, 2**24 // model.evaluation_width))


def bits_per_dim(nll: float, dim: int) -> float:
    """Negative log-likelihood in nats per data point as bits per dimension, :math:`\\mathrm{nll} / (D \\ln 2)`.

    >>> round(bits_per_dim(784 * 0.6931471805599453, 784), 6)
    1.0
    """
    return nll / (dim * math.log(2))
