"""What every objective shares: Pyro's ELBO interface, the step count, the KL weight, the registry."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import torch
from pyro.infer import ELBO as PyroELBO
from pyro.util import warn_if_nan

from pyro_lvm.objectives.annealing import ConstantSchedule, Schedule
from pyro_lvm.objectives.checks import CheckCache, Traits, objective_in_charge
from pyro_lvm.objectives.traces import trace_pair
from pyro_lvm.registry import Registry

#: Every objective, by name (``"elbo"``, ``"iwae"``, ...).
OBJECTIVES: Registry = Registry("objective")


class LossTerms(NamedTuple):
    """What an objective computes for one batch.

    :ivar loss: the value of the objective (a negative bound, scaled to the
        full data set), detached.
    :ivar surrogate: a scalar whose gradient is the gradient estimator; its
        value need not equal ``loss``.
    """

    loss: torch.Tensor
    surrogate: torch.Tensor


#: pairs ``(z, w)``: multiply the gradient that reaches the tensor ``z`` by ``w`` (broadcast)
GradientScales = Tuple[Tuple[torch.Tensor, torch.Tensor], ...]


def scale_gradients(scales: GradientScales) -> None:
    """Register, on each ``z`` that requires a gradient, a hook multiplying its gradient by ``w``."""
    for z, w in scales:
        if z.requires_grad:
            z.register_hook(lambda g, w=w: g * w)


class Objective(PyroELBO):
    r"""Base class of the training objectives: each one is a ``pyro.infer.ELBO``.

    So any of them can be the ``loss`` of ``pyro.infer.SVI``
    (:meth:`loss_and_grads`, :meth:`loss`) or be differentiated in a user's own
    loop (:meth:`differentiable_loss`), and :meth:`terms` gives the value and the
    gradient estimator separately. ``args`` and ``kwargs`` go to both ``model``
    and ``guide``. The latent terms :math:`\log p(z) - \log q(z \mid x)` are
    weighted by :math:`\beta \cdot a(t)`, with :math:`a` the annealing schedule
    and :math:`t` = :attr:`step`, the number of training steps taken:
    :meth:`loss_and_grads` (one ``SVI.step``) adds one;
    :class:`~pyro_lvm.train.Trainer` sets it before each step; set it yourself
    (``objective.step = t``) in a loop of your own.

    Every run of a pyro_lvm model under an objective is checked against the
    objective's :attr:`traits` (:mod:`pyro_lvm.objectives.checks`): a pair that
    is not valid raises :class:`~pyro_lvm.objectives.checks.InvalidObjectiveError`.

    :param float beta: weight of the KL term (:math:`\beta`-VAE); non-negative.
    :param annealing: a :class:`~pyro_lvm.objectives.annealing.Schedule`, or
        ``None`` for a constant 1.
    :param int max_plate_nesting: plates the model uses (1: the data plate).
    :param int num_particles: samples per data point.
    """

    #: what the objective does with the model's sites (checked against the traces)
    traits: Traits = Traits("objective")
    #: why :mod:`pyro_lvm.traced` cannot record the loss once and replay it, or ``None`` when it
    #: is a function of the parameters, the data, the noise and the KL weight alone, with no
    #: state carried from step to step and no backward hooks. A class that defines ``terms`` or
    #: ``loss_terms`` says so in its own body (see :meth:`why_not_replayable`).
    not_replayable: Optional[str] = None

    def __init__(self, beta: float = 1.0, annealing: Optional[Schedule] = None,
                 max_plate_nesting: int = 1, num_particles: int = 1):
        if int(num_particles) < 1 or int(num_particles) != num_particles:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles}")
        super().__init__(num_particles=int(num_particles), max_plate_nesting=int(max_plate_nesting))
        beta = float(beta)
        if not beta >= 0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        self.beta = beta
        self.annealing = annealing if annealing is not None else ConstantSchedule()
        #: training steps taken (sets the annealing weight)
        self.step = 0
        self._checked = CheckCache()

    def kl_weight(self, step: Optional[float] = None) -> float:
        """The weight of the latent terms at training step ``step`` (default: :attr:`step`;
        ``math.inf``: the final weight, as used for validation)."""
        return self.beta * self.annealing(self.step if step is None else step)

    # --------------------------------------------------------- pyro_lvm API
    def terms(self, model: Callable, guide: Callable, *args, step: Optional[float] = None,
              **kwargs) -> LossTerms:
        """Value and gradient estimator on one batch, at step ``step`` (default :attr:`step`)."""
        with objective_in_charge(self.traits, self._checked):
            return self.loss_terms(model, guide, args, kwargs, self.kl_weight(step))

    def loss_terms(self, model, guide, args, kwargs, kl_weight: float) -> LossTerms:
        raise NotImplementedError

    #: whether :meth:`scaled_loss_terms` may return gradient scales (hooks on intermediate values,
    #: which a graph compiled whole by ``torch.compile`` does not expose)
    rescales_gradients = False

    def scaled_loss_terms(self, model, guide, args, kwargs, kl_weight: float) -> Tuple[LossTerms, GradientScales]:
        """:meth:`loss_terms` and the gradient scales it leaves to its caller: pairs ``(z, w)``
        whose gradient must be multiplied by ``w`` (:func:`scale_gradients`). :meth:`loss_terms`
        applies them itself; a recorded loss (:mod:`pyro_lvm.traced`) returns ``z`` and ``w`` from
        its graph and applies them after each replay, since a recording cannot hold a hook. None here."""
        return self.loss_terms(model, guide, args, kwargs, kl_weight), ()

    def recorded_terms(self, model, guide, args, kwargs, kl_weight: float) -> Tuple[LossTerms, GradientScales]:
        """What a recording of the loss runs: :meth:`scaled_loss_terms`, unless a subclass
        redefines :meth:`loss_terms` below the class that defines :meth:`scaled_loss_terms`; then
        that :meth:`loss_terms` itself, without scales (so a hook it registers is lost in the
        recording, and the recording's check against the eager step finds it)."""
        mro = type(self).__mro__
        scaled = next(c for c in mro if "scaled_loss_terms" in vars(c))
        loss = next(c for c in mro if "loss_terms" in vars(c))
        if loss is not scaled and issubclass(loss, scaled):
            return self.loss_terms(model, guide, args, kwargs, kl_weight), ()
        return self.scaled_loss_terms(model, guide, args, kwargs, kl_weight)

    def why_not_replayable(self) -> Optional[str]:
        """Why the loss cannot be recorded and replayed (:mod:`pyro_lvm.traced`), or ``None``.

        The class that computes the loss (the last to define ``terms`` or ``loss_terms``) must set
        :attr:`not_replayable` in its own body: a subclass that adds Python logic, e.g. one that
        looks at :attr:`step`, is not recorded until it says that it may be."""
        if "not_replayable" in vars(self):
            return self.not_replayable
        owner = next(c for c in type(self).__mro__
                     if {"terms", "loss_terms", "scaled_loss_terms"} & set(vars(c)))
        if "not_replayable" not in vars(owner):
            return (f"{owner.__name__} computes the loss without saying whether it may be recorded "
                    "(set not_replayable in its class)")
        return self.not_replayable

    # ------------------------------------------------------------ Pyro's API
    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The loss as a tensor whose value is :meth:`terms`' ``loss`` and whose gradient
        is the estimator's (``loss + surrogate - surrogate.detach()``)."""
        t = self.terms(model, guide, *args, **kwargs)
        if not t.surrogate.requires_grad:
            return t.loss
        return t.loss + (t.surrogate - t.surrogate.detach())

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The loss as a number, without gradients."""
        with torch.no_grad():
            return self.terms(model, guide, *args, **kwargs).loss.item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss as a number; accumulates the estimator's gradients (``.grad``) and counts
        one training step (what ``SVI.step`` calls)."""
        t = self.terms(model, guide, *args, **kwargs)
        if t.surrogate.requires_grad:
            t.surrogate.backward()
        self.step += 1
        loss = t.loss.item()
        warn_if_nan(loss, "loss")
        return loss

    def _get_trace(self, model, guide, args, kwargs):
        """One model trace run against one guide trace (``pyro.infer.ELBO``'s hook)."""
        return trace_pair(model, guide, args, kwargs, None, self.max_plate_nesting)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta={self.beta}, annealing={self.annealing!r})"
