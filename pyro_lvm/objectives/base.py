"""What every objective shares: the call signature, the KL weight, the registry."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch

from pyro_lvm.objectives.annealing import ConstantSchedule, Schedule
from pyro_lvm.registry import Registry

#: Every objective, by name (``"elbo"``, ``"iwae"``, ...).
OBJECTIVES: Registry = Registry("objective")


class LossTerms(NamedTuple):
    """What an objective returns.

    :ivar loss: the value of the objective (a negative bound, scaled to the
        full data set), detached.
    :ivar surrogate: a scalar whose gradient is the gradient estimator; its
        value need not equal ``loss``.
    """

    loss: torch.Tensor
    surrogate: torch.Tensor


class Objective:
    r"""Base class of the training objectives.

    An objective is called as ``objective(model, guide, *args, step=0,
    **kwargs)``; ``args`` and ``kwargs`` go to both ``model`` and ``guide``.
    It weights the latent terms :math:`\log p(z) - \log q(z \mid x)` by
    :math:`\beta \cdot a(t)` where :math:`a` is the annealing schedule and
    :math:`t` the training step.

    :param float beta: weight of the KL term (:math:`\beta`-VAE); non-negative.
    :param annealing: a :class:`~pyro_lvm.objectives.annealing.Schedule`, or
        ``None`` for a constant 1.
    :param int max_plate_nesting: plates the model uses (1: the data plate).
    """

    def __init__(self, beta: float = 1.0, annealing: Optional[Schedule] = None,
                 max_plate_nesting: int = 1):
        beta = float(beta)
        if not beta >= 0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        self.beta = beta
        self.annealing = annealing if annealing is not None else ConstantSchedule()
        self.max_plate_nesting = int(max_plate_nesting)

    def kl_weight(self, step: int) -> float:
        """The weight of the latent terms at training step ``step``."""
        return self.beta * self.annealing(step)

    def __call__(self, model: Callable, guide: Callable, *args, step: int = 0, **kwargs) -> LossTerms:
        return self.loss_terms(model, guide, args, kwargs, self.kl_weight(step))

    def loss_terms(self, model, guide, args, kwargs, kl_weight: float) -> LossTerms:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta={self.beta}, annealing={self.annealing!r})"
