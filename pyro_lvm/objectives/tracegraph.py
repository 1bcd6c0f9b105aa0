r"""The ELBO with variance-reduced score-function gradients, Pyro's ``TraceGraph_ELBO``.

For a guide site :math:`z` without ``rsample`` the gradient estimator is

.. math::

    \nabla_\phi \mathcal{L} \approx \big(\hat{\ell}(z) - b\big)\,
    \nabla_\phi \log q_\phi(z \mid x) + \ldots,

where :math:`\hat{\ell}` keeps only the downstream cost terms (Rao-Blackwellized
by the dependency graph) and :math:`b` is a baseline declared on the guide
site: ``infer={"baseline": {"nn_baseline": net, "nn_baseline_input": x}}`` for
a learned input-dependent baseline or ``{"use_decaying_avg_baseline": True}``
(Mnih & Gregor 2014; Schulman et al. 2015).
"""

from __future__ import annotations

from typing import Optional

import torch
from pyro.infer import TraceGraph_ELBO

from pyro_lvm.objectives.annealing import Schedule
from pyro_lvm.objectives.base import OBJECTIVES, LossTerms, Objective
from pyro_lvm.objectives.checks import Traits
from pyro_lvm.objectives.kl_weight import weight_latents


@OBJECTIVES.register("tracegraph")
class TraceGraphELBO(Objective):
    """Negative ELBO by ``pyro.infer.TraceGraph_ELBO`` (REINFORCE with baselines).

    :param int num_particles: samples per data point.
    :param float beta: KL weight.
    :param annealing: KL annealing schedule.

    >>> import torch
    >>> from pyro_lvm.models import VAE
    >>> vae = VAE(input_dim=4, latent_dim=2, hidden=(8,))
    >>> x = torch.bernoulli(torch.full((3, 4), 0.5))
    >>> TraceGraphELBO().terms(vae.model, vae.guide, x).loss.isfinite().item()
    True
    """

    traits = Traits("objective 'tracegraph'")
    not_replayable = "a decaying-average baseline lives in Pyro's param store from step to step"

    def __init__(self, num_particles: int = 1, beta: float = 1.0,
                 annealing: Optional[Schedule] = None, max_plate_nesting: int = 1):
        super().__init__(beta, annealing, max_plate_nesting, num_particles)
        self._elbo = TraceGraph_ELBO(
            num_particles=self.num_particles,
            vectorize_particles=self.num_particles > 1,
            max_plate_nesting=self.max_plate_nesting,
        )

    def loss_terms(self, model, guide, args, kwargs, kl_weight):
        # TraceGraph_ELBO exposes (elbo, surrogate loss) only through this method;
        # its public loss_and_grads would call backward itself.
        elbo, surrogate = self._elbo._loss_and_surrogate_loss(
            weight_latents(model, kl_weight), weight_latents(guide, kl_weight), args, kwargs
        )
        return LossTerms(-torch.as_tensor(elbo).detach(), surrogate)
