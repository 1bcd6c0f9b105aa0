"""Training objectives, one per file; none of them lives inside a model.

Every objective is called as ``objective(model, guide, *args, step=t, **kwargs)``
and returns :class:`~pyro_lvm.objectives.base.LossTerms`.
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
from pyro_lvm.objectives.elbo import ELBO
from pyro_lvm.objectives.enum import EnumELBO
from pyro_lvm.objectives.free_bits import free_bits_kl
from pyro_lvm.objectives.iwae import IWAE
from pyro_lvm.objectives.kl_weight import LatentScaleMessenger, weight_latents
from pyro_lvm.objectives.meanfield import MeanFieldELBO
from pyro_lvm.objectives.tracegraph import TraceGraphELBO
from pyro_lvm.objectives.vimco import VIMCO

__all__ = [
    "ConstantSchedule", "ELBO", "EnumELBO", "IWAE", "LatentScaleMessenger", "LinearSchedule", "LossTerms",
    "MeanFieldELBO", "OBJECTIVES", "Objective", "SCHEDULES", "Schedule", "SigmoidSchedule",
    "TraceGraphELBO", "VIMCO", "free_bits_kl", "make_schedule", "weight_latents",
]
