r"""The ELBO with discrete latents summed out exactly, Pyro's ``TraceEnum_ELBO``.

Sites marked for parallel enumeration (``config_enumerate``) are summed over
all their values instead of sampled:

.. math::

    \mathcal{L}(x) = \mathbb{E}_{q(z_c)}\Big[\log \sum_{z_d} p(x, z_d, z_c) - \log q(z_c)\Big],

so for a model whose only latent is enumerated (a mixture) the objective is
the exact :math:`\log p(x)`. It is also the ground truth against which the
discrete-latent estimators are checked.
"""

from __future__ import annotations

from typing import Optional

import torch
from pyro.infer import TraceEnum_ELBO

from pyro_lvm.objectives.annealing import Schedule
from pyro_lvm.objectives.base import OBJECTIVES, LossTerms, Objective
from pyro_lvm.objectives.checks import Traits
from pyro_lvm.objectives.kl_weight import weight_latents


@OBJECTIVES.register("enum")
class EnumELBO(Objective):
    """Negative ELBO by ``pyro.infer.TraceEnum_ELBO``.

    :param int num_particles: samples of the non-enumerated latents.
    :param float beta: weight of the latent sites the guide samples.
    :param annealing: KL annealing schedule.
    :param int max_plate_nesting: plates of the model (enumeration uses dims left of them).
    """

    traits = Traits("objective 'enum'", enumerates=True)
    not_replayable = None  # a function of parameters, data, noise and KL weight

    def __init__(self, num_particles: int = 1, beta: float = 1.0,
                 annealing: Optional[Schedule] = None, max_plate_nesting: int = 1):
        super().__init__(beta, annealing, max_plate_nesting, num_particles)
        self._elbo = TraceEnum_ELBO(num_particles=self.num_particles,
                                    vectorize_particles=self.num_particles > 1,
                                    max_plate_nesting=self.max_plate_nesting)

    def loss_terms(self, model, guide, args, kwargs, kl_weight):
        model, guide = weight_latents(model, kl_weight), weight_latents(guide, kl_weight)
        if not torch.is_grad_enabled():  # differentiable_loss refuses to run without autograd
            loss = torch.tensor(self._elbo.loss(model, guide, *args, **kwargs))
            return LossTerms(loss, loss)
        loss = self._elbo.differentiable_loss(model, guide, *args, **kwargs)
        return LossTerms(loss.detach(), loss)
