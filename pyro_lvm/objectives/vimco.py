r"""VIMCO: the importance-weighted bound with per-sample baselines for discrete latents.

The bound is IWAE's, per data point,
:math:`\hat{\mathcal{L}} = \log \frac1K \sum_k w_k`. For guide sites without
``rsample`` its score-function gradient uses, for particle :math:`k`, the
learning signal

.. math::

    \hat{\mathcal{L}} - \hat{\mathcal{L}}_{-k}, \qquad
    \hat{\mathcal{L}}_{-k} = \log \frac1K \Big(\sum_{j \ne k} w_j + \hat w_{-k}\Big),
    \quad \log \hat w_{-k} = \frac{1}{K-1} \sum_{j \ne k} \log w_j,

i.e. the bound with :math:`w_k` replaced by the geometric mean of the others.
:math:`\hat{\mathcal{L}}_{-k}` does not depend on :math:`z_k`, so the
estimator

.. math::

    \nabla_\phi \hat{\mathcal{L}} \approx \sum_k \big(\hat{\mathcal{L}} - \hat{\mathcal{L}}_{-k}\big)
    \nabla_\phi \log q_\phi(z_k \mid x) + \sum_k \tilde w_k \nabla_\phi \log w_k

is unbiased, and the baseline is local to each sample [1]. Reparameterized
sites get the pathwise gradient, as in :class:`~pyro_lvm.objectives.IWAE`.
Unlike ``pyro.infer.RenyiELBO`` (whose discrete guide sites get no score
term at :math:`\alpha = 0`), discrete encoders get a real gradient.

References

[1] Mnih & Rezende, *Variational Inference for Monte Carlo Objectives*, ICML 2016.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from pyro_lvm.objectives.annealing import Schedule
from pyro_lvm.objectives.base import OBJECTIVES, LossTerms, Objective
from pyro_lvm.objectives.checks import Traits
from pyro_lvm.objectives.traces import LogDensities, data_scale, trace_pair


def leave_one_out_bounds(log_w: torch.Tensor) -> torch.Tensor:
    """:math:`\\hat{\\mathcal{L}}_{-k}` for every particle ``k``; ``log_w`` is ``(K, B)``.

    >>> import torch
    >>> lw = torch.tensor([[0.0], [2.0]])
    >>> leave_one_out_bounds(lw).squeeze(-1).tolist()  # each w_k replaced by the other one
    [2.0, 0.0]
    """
    K = log_w.shape[0]
    if K < 2:
        raise ValueError("VIMCO needs at least two particles")
    others_mean = (log_w.sum(0, keepdim=True) - log_w) / (K - 1)  # (K, B)
    eye = torch.eye(K, dtype=torch.bool, device=log_w.device).unsqueeze(-1)  # (K, K, 1)
    replaced = torch.where(eye, others_mean.unsqueeze(1), log_w.unsqueeze(0))  # (k, j, B)
    return torch.logsumexp(replaced, dim=1) - math.log(K)


@OBJECTIVES.register("vimco")
class VIMCO(Objective):
    """Negative importance-weighted bound with VIMCO's per-sample baselines.

    :param int num_particles: :math:`K \\ge 2`.
    :param float beta: weight of the latent terms inside :math:`\\log w_k`.
    :param annealing: KL annealing schedule.

    >>> import torch, pyro
    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", len(x)):
    ...         z = pyro.sample("z", dist.Bernoulli(0.5))
    ...         pyro.sample("x", dist.Normal(2 * z - 1, 1.0), obs=x)
    >>> logit = torch.zeros(1, requires_grad=True)
    >>> def guide(x):
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("z", dist.Bernoulli(logits=logit * x))
    >>> terms = VIMCO(num_particles=4).terms(model, guide, torch.tensor([-1.0, 1.0]))
    >>> terms.surrogate.backward()
    >>> bool(logit.grad != 0)
    True
    """

    traits = Traits("objective 'vimco'", pathwise_only=True)
    not_replayable = None  # a function of parameters, data, noise and KL weight

    def __init__(self, num_particles: int = 5, beta: float = 1.0, annealing: Optional[Schedule] = None,
                 max_plate_nesting: int = 1):
        if not num_particles == int(num_particles) or int(num_particles) < 2:
            raise ValueError(f"VIMCO needs an integer num_particles >= 2, got {num_particles}")
        super().__init__(beta, annealing, max_plate_nesting, num_particles)

    def loss_terms(self, model, guide, args, kwargs, kl_weight):
        K = self.num_particles
        model_trace, guide_trace = trace_pair(model, guide, args, kwargs, K, self.max_plate_nesting)
        scale = data_scale(model_trace)
        dens = LogDensities(model_trace, guide_trace)
        log_w = dens.log_weight(kl_weight)  # (K, B)
        bound = torch.logsumexp(log_w, 0) - math.log(K)  # (B,)
        surrogate = bound
        if dens.nonreparam:
            signal = (bound.unsqueeze(0) - leave_one_out_bounds(log_w)).detach()  # (K, B)
            surrogate = surrogate + (signal * dens.log_q_nonreparam).sum(0)
        loss = -scale * bound.sum()
        return LossTerms(loss.detach(), -scale * surrogate.sum())
