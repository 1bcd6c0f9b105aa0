"""Training objectives, one per file; none of them lives inside a model.

Every objective is a ``pyro.infer.ELBO``: the ``loss`` of ``pyro.infer.SVI``
(``loss_and_grads``, ``loss``, ``differentiable_loss``), and
``objective.terms(model, guide, *args, **kwargs)`` returns the value and the
gradient estimator as :class:`~pyro_lvm.objectives.base.LossTerms`. Which
objectives fit a model is read off its traces (:mod:`pyro_lvm.objectives.checks`).
"""

from pyro_lvm.objectives.annealing import (
    SCHEDULES,
    ConstantSchedule,
    LinearSchedule,
    Schedule,
    SigmoidSchedule,
    make_schedule,
)
from pyro_lvm.objectives.base import OBJECTIVES, LossTerms, Objective
from pyro_lvm.objectives.checks import InvalidObjectiveError, Traits
from pyro_lvm.objectives.elbo import ELBO
from pyro_lvm.objectives.enum import EnumELBO
from pyro_lvm.objectives.free_bits import free_bits_kl
from pyro_lvm.objectives.iwae import IWAE
from pyro_lvm.objectives.kl_weight import LatentScaleMessenger, weight_latents
from pyro_lvm.objectives.meanfield import MeanFieldELBO
from pyro_lvm.objectives.tracegraph import TraceGraphELBO
from pyro_lvm.objectives.vimco import VIMCO

__all__ = [
    "ConstantSchedule", "ELBO", "EnumELBO", "IWAE", "InvalidObjectiveError", "LatentScaleMessenger", "LinearSchedule", "LossTerms",
    "MeanFieldELBO", "OBJECTIVES", "Objective", "SCHEDULES", "Schedule", "SigmoidSchedule",
    "TraceGraphELBO", "Traits", "VIMCO", "free_bits_kl", "make_schedule", "weight_latents",
]
