r"""The importance-weighted bound (IWAE), per data point, with DReG gradients.

For each data point, with :math:`K` particles :math:`z_k \sim q_\phi(z \mid x)`,

.. math::

    \mathcal{L}_K(x) = \log \frac{1}{K} \sum_{k=1}^{K} w_k, \qquad
    \log w_k = \log p_\theta(x \mid z_k) + \beta a(t)\,
    \big(\log p(z_k) - \log q_\phi(z_k \mid x)\big),

and :math:`\log p(x) \ge \mathcal{L}_K \ge \mathcal{L}_{K-1} \ge \dots \ge
\mathcal{L}_1 = \mathrm{ELBO}` when :math:`\beta a(t) = 1` [1]. The bound is
computed *per data point* and only then scaled by :math:`N/B` for a
minibatch, unlike ``pyro.infer.RenyiELBO``, which puts plate scales inside
the log-sum-exp. Particles are vectorized by an outer plate.

Gradients:

* ``"reparam"``: the pathwise gradient of :math:`\mathcal{L}_K` [1];
* ``"dreg"``: the doubly reparameterized estimator [2]. The model gets
  :math:`\sum_k \tilde w_k \nabla_\theta \log w_k` and the guide
  :math:`\sum_k \tilde w_k^2 \frac{\partial \log w_k}{\partial z_k}
  \frac{\partial z_k}{\partial \phi}` with :math:`\log q` evaluated at
  stopped parameters and :math:`\tilde w` the normalized weights; its
  variance for the guide does not grow with :math:`K`.

Guide sites without ``rsample`` (discrete latents) get the plain
score-function term :math:`\mathcal{L}_K \sum_k \nabla_\phi \log q_\phi(z_k
\mid x)` with ``"reparam"``; ``"dreg"`` needs reparameterized latents.

References

[1] Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.

[2] Tucker, Lawson, Gu & Maddison, *Doubly Reparameterized Gradient
Estimators for Monte Carlo Objectives*, ICLR 2019.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, get_args

import torch

from pyro_lvm.objectives.annealing import Schedule
from pyro_lvm.objectives.base import OBJECTIVES, LossTerms, Objective, scale_gradients
from pyro_lvm.objectives.checks import InvalidObjectiveError, Traits
from pyro_lvm.objectives.traces import (
    LogDensities,
    data_scale,
    detach_distribution,
    sample_sites,
    site_log_prob,
    trace_pair,
)

Gradient = Literal["reparam", "dreg"]
GRADIENTS = get_args(Gradient)


def _detached_log_prob(site: dict) -> torch.Tensor:
    try:
        q = detach_distribution(site["fn"])
    except NotImplementedError as e:
        raise InvalidObjectiveError(
            f"objective 'iwae' with DReG gradients evaluates log q({site['name']}) at stopped parameters, "
            f"which needs the guide's distribution rebuilt from them ({e}); use gradient='reparam'") from None
    return q.log_prob(site["value"])


@OBJECTIVES.register("iwae")
class IWAE(Objective):
    """Negative importance-weighted bound with ``num_particles`` particles.

    :param int num_particles: :math:`K`.
    :param str gradient: the gradient estimator, reparam (pathwise) or dreg (doubly reparameterized).
    :param float beta: weight of the latent terms inside :math:`\\log w_k`.
    :param annealing: KL annealing schedule.

    >>> import pyro, torch
    >>> from pyro_lvm.models import PPCA
    >>> pyro.set_rng_seed(0)
    >>> m = PPCA(input_dim=2, latent_dim=1)
    >>> x = torch.randn(8, 2)
    >>> iwae = IWAE(num_particles=5, gradient="dreg")
    >>> losses = torch.stack([iwae.terms(m.model, m.guide, x).loss for _ in range(200)])
    >>> bool(losses.mean() >= -m.log_marginal(x).sum())  # in expectation, a bound on log p(x)
    True
    """

    traits = Traits("objective 'iwae'", pathwise_only=True)
    not_replayable = None  # a function of parameters, data, noise and KL weight

    def __init__(self, num_particles: int = 5, gradient: Gradient = "reparam", beta: float = 1.0,
                 annealing: Optional[Schedule] = None, max_plate_nesting: int = 1):
        super().__init__(beta, annealing, max_plate_nesting, num_particles)
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        self.gradient = gradient
        #: DReG reweights the gradient reaching each sample (scaled_loss_terms)
        self.rescales_gradients = gradient == "dreg"
        if gradient == "dreg":  # log q at stopped parameters: a guide factor would lose its gradient
            self.traits = Traits("objective 'iwae' with DReG gradients", pathwise_only=True, guide_factors=False,
                                 stops_guide_parameters=True, reparam_only="the doubly reparameterized gradient needs continuous, "
                                 "reparameterized latents: use gradient='reparam' or VIMCO")

    def bound(self, model, guide, *args, kl_weight: float = 1.0, **kwargs) -> torch.Tensor:
        """:math:`\\mathcal{L}_K(x_n)` for each data point (no minibatch scaling)."""
        model_trace, guide_trace = trace_pair(model, guide, args, kwargs, self.num_particles,
                                              self.max_plate_nesting)
        log_w = LogDensities(model_trace, guide_trace).log_weight(kl_weight)
        return torch.logsumexp(log_w, 0) - math.log(self.num_particles)

    def loss_terms(self, model, guide, args, kwargs, kl_weight):
        terms, scales = self.scaled_loss_terms(model, guide, args, kwargs, kl_weight)
        scale_gradients(scales)
        return terms

    def scaled_loss_terms(self, model, guide, args, kwargs, kl_weight):
        """The terms, and for DReG the samples' gradient scales :math:`\\tilde w_k` (applied by
        :meth:`loss_terms` as hooks, or by a recorded loss after each replay)."""
        K = self.num_particles
        model_trace, guide_trace = trace_pair(model, guide, args, kwargs, K, self.max_plate_nesting)
        scale = data_scale(model_trace)
        dreg = self.gradient == "dreg"
        dens = LogDensities(model_trace, guide_trace,
                            guide_log_prob=_detached_log_prob if dreg else site_log_prob)
        log_w = dens.log_weight(kl_weight)  # (K, B)
        bound = torch.logsumexp(log_w, 0) - math.log(K)  # (B,)
        loss = -scale * bound.sum()
        if not dreg:
            surrogate = bound
            if dens.nonreparam:
                surrogate = surrogate + bound.detach() * dens.log_q_nonreparam.sum(0)
            return LossTerms(loss.detach(), -scale * surrogate.sum()), ()
        w_tilde = torch.softmax(log_w.detach(), dim=0)
        scales = tuple((site["value"], w_tilde.reshape(w_tilde.shape + (1,) * (site["value"].dim() - w_tilde.dim())))
                       for site in sample_sites(guide_trace).values() if site["value"].requires_grad)
        surrogate = -scale * (w_tilde * log_w).sum()
        return LossTerms(loss.detach(), loss.detach() + surrogate - surrogate.detach()), scales
