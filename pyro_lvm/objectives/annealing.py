r"""KL annealing schedules :math:`a(t) \in (0, 1]`.

A schedule multiplies the latent terms of the ELBO at step :math:`t`
(Bowman et al. 2016). Schedules start above zero: a zero weight would let the
guide drift freely for the first steps (and ``poutine.scale(0)`` raises).

>>> LinearSchedule(steps=100, start=0.1)(50)
0.55
>>> round(SigmoidSchedule(steps=100, start=0.01)(50), 3)
0.505
>>> SigmoidSchedule(steps=100)(1000)
1.0
"""

from __future__ import annotations

import math

from pyro_lvm.registry import Registry

#: a ramp's length in steps and its starting weight when a schedule is named without them
DEFAULT_ANNEAL_STEPS, DEFAULT_ANNEAL_START = 10000, 0.01

#: Every schedule, by name (``"none"``, ``"linear"``, ``"sigmoid"``).
SCHEDULES: Registry = Registry("KL annealing schedule")


class Schedule:
    """Maps a training step to a weight in (0, 1]."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError


@SCHEDULES.register("none")
class ConstantSchedule(Schedule):
    """No annealing: the weight is 1 throughout."""

    def __init__(self, steps: int = 0, start: float = 1.0):
        pass

    def __call__(self, step: int) -> float:
        return 1.0

    def __repr__(self) -> str:
        return "ConstantSchedule()"


class _RampSchedule(Schedule):
    def __init__(self, steps: int, start: float = 0.01):
        if int(steps) <= 0:
            raise ValueError(f"annealing steps must be positive, got {steps}")
        if not 0.0 < start <= 1.0:
            raise ValueError(f"annealing must start in (0, 1], got {start}")
        self.steps = int(steps)
        self.start = float(start)

    def __call__(self, step: int) -> float:
        if step >= self.steps:
            return 1.0
        return self.start + (1.0 - self.start) * self._shape(max(step, 0) / self.steps)

    def _shape(self, u: float) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, start={self.start})"


@SCHEDULES.register("linear")
class LinearSchedule(_RampSchedule):
    r""":math:`a(t) = a_0 + (1 - a_0) \min(t / T, 1)`."""

    def _shape(self, u: float) -> float:
        return u


@SCHEDULES.register("sigmoid")
class SigmoidSchedule(_RampSchedule):
    r"""A logistic ramp centred at :math:`T/2`, rescaled to run from :math:`a_0` to 1.

    :math:`a(t) = a_0 + (1 - a_0)\,\frac{s(t) - s(0)}{s(T) - s(0)}` with
    :math:`s(t) = 1 / (1 + e^{-k (t/T - 1/2)})` and :math:`k = 10`.
    """

    sharpness = 10.0

    def _shape(self, u: float) -> float:
        def s(v):
            return 1.0 / (1.0 + math.exp(-self.sharpness * (v - 0.5)))

        return (s(u) - s(0.0)) / (s(1.0) - s(0.0))


class PretrainSchedule(Schedule):
    r"""Weight 0 for the first ``pretrain_steps`` steps (an autoencoder phase, as in
    Li et al. 2019's encoder pretraining), then ``after(t - pretrain_steps)``.

    >>> s = PretrainSchedule(100, LinearSchedule(steps=10, start=0.5))
    >>> s(99), s(100), s(105), s(200)
    (0.0, 0.5, 0.75, 1.0)
    """

    def __init__(self, pretrain_steps: int, after: Schedule):
        if int(pretrain_steps) < 0:
            raise ValueError(f"pretrain_steps must be non-negative, got {pretrain_steps}")
        self.pretrain_steps = int(pretrain_steps)
        self.after = after

    def __call__(self, step: int) -> float:
        return 0.0 if step < self.pretrain_steps else self.after(step - self.pretrain_steps)

    def __repr__(self) -> str:
        return f"PretrainSchedule({self.pretrain_steps}, {self.after!r})"


def make_schedule(name: str, steps: int = 0, start: float = 0.01, pretrain_steps: int = 0) -> Schedule:
    """Build a schedule by name; ``steps`` and ``start`` are ignored by ``"none"``;
    ``pretrain_steps > 0`` puts a zero-weight phase in front."""
    schedule = SCHEDULES.get(name)(steps=steps, start=start)
    return PretrainSchedule(pretrain_steps, schedule) if pretrain_steps > 0 else schedule
