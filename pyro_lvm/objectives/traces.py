"""Trace utilities shared by the hand-written objectives and the evaluators.

Everything here works per data point: a site's log density keeps its batch
dimensions, the data plate at dim ``-1`` and, when particles are vectorized,
the particle plate at dim ``-(max_plate_nesting + 1)``.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution, Independent

PARTICLE_PLATE = "_pyro_lvm_particles"


def vectorize(fn: Callable, num_particles: Optional[int], max_plate_nesting: int) -> Callable:
    """Run ``fn`` inside a plate of ``num_particles`` independent particles."""
    if num_particles is None:
        return fn

    def wrapped(*args, **kwargs):
        with pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1)):
            return fn(*args, **kwargs)

    return wrapped


def trace_pair(model: Callable, guide: Optional[Callable], args, kwargs,
               num_particles: Optional[int] = None, max_plate_nesting: int = 1
               ) -> Tuple[Trace, Optional[Trace]]:
    """Trace ``guide`` and replay ``model`` against it.

    With ``guide=None`` the model runs alone and samples its latents from the
    prior. Returns ``(model_trace, guide_trace)``.
    """
    model = vectorize(model, num_particles, max_plate_nesting)
    if guide is None:
        return poutine.trace(model).get_trace(*args, **kwargs), None
    guide = vectorize(guide, num_particles, max_plate_nesting)
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def sample_sites(trace: Trace, observed: Optional[bool] = None) -> Dict[str, dict]:
    """The sample sites of ``trace``, optionally only observed or only latent ones."""
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site_is_subsample(site)
        and (observed is None or bool(site["is_observed"]) == observed)
    }


def site_log_prob(site: dict) -> torch.Tensor:
    """Unscaled log density of a site, with its batch dims and mask applied."""
    log_p = site["fn"].log_prob(site["value"])
    mask = site.get("mask")
    if mask is not None and mask is not True:
        log_p = log_p * mask if isinstance(mask, torch.Tensor) else (log_p if mask else log_p * 0)
    return log_p


def _check_local(name: str, site: dict) -> None:
    if not any(f.dim == -1 for f in site["cond_indep_stack"] if f.name != PARTICLE_PLATE):
        raise ValueError(
            f"site {name!r} is not inside the data plate (dim -1): per-data-point "
            "bounds and estimators need every sample site to be local to a data point"
        )


def data_scale(model_trace: Trace) -> float:
    """The minibatch scale :math:`N/B` shared by the observed sites."""
    scales = {float(s["scale"]) for s in sample_sites(model_trace, observed=True).values()}
    if not scales:
        raise ValueError("the model has no observed site: pass the data")
    if len(scales) > 1:
        raise ValueError(
            f"observed sites have different scales {sorted(scales)}; weight the KL with "
            "the objective's beta instead of poutine.scale"
        )
    return scales.pop()


class LogDensities:
    """Per-data-point log densities of a (model, guide) trace pair.

    :ivar log_lik: :math:`\\log p(x \\mid z)`, summed over observed sites.
    :ivar log_prior: :math:`\\log p(z)` over the latent sites the guide samples.
    :ivar log_q: :math:`\\log q(z \\mid x)` over the guide's sites.
    :ivar log_q_nonreparam: the part of ``log_q`` from sites without ``rsample``.

    Each has the batch shape ``(num_particles, batch)`` or ``(batch,)``.
    """

    def __init__(self, model_trace: Trace, guide_trace: Optional[Trace],
                 guide_log_prob: Optional[Callable[[dict], torch.Tensor]] = None):
        guide_log_prob = guide_log_prob or site_log_prob
        self.log_lik = 0.0
        self.log_prior = 0.0
        self.log_q = 0.0
        self.log_q_nonreparam = 0.0
        self.nonreparam = False
        guide_sites = sample_sites(guide_trace) if guide_trace is not None else {}
        for name, site in sample_sites(model_trace).items():
            _check_local(name, site)
            if site["is_observed"]:
                self.log_lik = self.log_lik + site_log_prob(site)
            elif name in guide_sites:
                self.log_prior = self.log_prior + site_log_prob(site)
        for name, site in guide_sites.items():
            _check_local(name, site)
            lq = guide_log_prob(site)
            self.log_q = self.log_q + lq
            if not site["fn"].has_rsample:
                self.nonreparam = True
                self.log_q_nonreparam = self.log_q_nonreparam + lq

    def log_weight(self, kl_weight: float = 1.0) -> torch.Tensor:
        r""":math:`\log p(x \mid z) + w\,(\log p(z) - \log q(z \mid x))`."""
        return self.log_lik + kl_weight * (self.log_prior - self.log_q)


def detach_distribution(d: Distribution) -> Distribution:
    """A copy of ``d`` whose parameters are detached from the autograd graph.

    Used for the doubly reparameterized gradient, where :math:`\\log q` is
    evaluated with stopped parameters. Handles ``Independent`` and any
    distribution built from its ``arg_constraints`` parameters.
    """
    if isinstance(d, Independent):
        return Independent(detach_distribution(d.base_dist), d.reinterpreted_batch_ndims,
                           validate_args=False)
    params = {k: d.__dict__[k] for k in d.arg_constraints if k in d.__dict__}
    if "probs" in params and "logits" in params:
        params.pop("probs")
    for both in (("covariance_matrix", "scale_tril"), ("precision_matrix", "scale_tril")):
        if both[0] in params and both[1] in params:
            params.pop(both[0])
    if not params:
        raise NotImplementedError(f"cannot detach the parameters of {type(d).__name__}")
    try:
        return type(d)(**{k: v.detach() if isinstance(v, torch.Tensor) else v
                          for k, v in params.items()}, validate_args=False)
    except TypeError as e:
        raise NotImplementedError(
            f"cannot rebuild {type(d).__name__} with detached parameters: {e}"
        ) from e

