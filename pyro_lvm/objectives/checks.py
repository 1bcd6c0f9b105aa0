r"""Whether an objective is valid for the model and guide it is given, read off their traces.

A model does not list the objectives it may be trained with. It declares what
it needs through its sample sites, and every objective, ours or one of
Pyro's, is checked against them:

* a model latent that the guide does not sample must be summed out: only an
  enumerating objective (``TraceEnum_ELBO``, ``enum``) may run it, and only when
  the site is marked for enumeration;
* a guide site marked for enumeration needs an enumerating objective;
* a guide site without ``rsample`` needs an objective with a score-function
  term (not ``TraceMeanField_ELBO``/``meanfield``, DReG or ``RenyiELBO``);
* a guide sample outside the support of the model's distribution for the same
  site (a relaxed Gumbel-softmax sample against a discrete prior) has no
  density there: only a closed-form KL (``TraceMeanField_ELBO``,
  ``meanfield``) may score it;
* a ``pyro.factor`` in the guide (an observed guide site) is not a latent:
  ``TraceMeanField_ELBO`` cannot take it;
* ``RenyiELBO`` puts every scale (a minibatch's :math:`N/B`, a KL weight)
  inside its log-sum-exp, so no site may be scaled;
* a guide site marked ``infer={"parents": (...)}`` makes the guide not
  mean-field: no closed-form KL objective may take it;
* an objective that evaluates :math:`\log q` at stopped parameters (DReG)
  cannot take a guide site marked ``infer={"parents": (...)}``, whose
  parameters are computed from the guide's own samples of other sites:
  stopping them would also stop the pathwise gradient through those samples;
* a ``Jit*`` ELBO freezes the model at its first call: the model must not
  say :attr:`~pyro_lvm.base.LatentVariableModel.not_traceable`.

Each objective states its :class:`Traits`. The checks run at the end of every
``model`` call of a :class:`~pyro_lvm.base.LatentVariableModel`, on the model
trace being recorded and the guide trace being replayed (both on Pyro's
handler stack), against the traits of the pyro_lvm objective in charge (see
:func:`objective_in_charge`) or, for Pyro's own ELBOs, of the ``ELBO`` found on
the Python call stack. A check runs its value-level tests once per trace
structure and objective, so a training step pays only for reading the sites.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import weakref
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from pyro.infer import (
    ELBO,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceGraph_ELBO,
    JitTraceMeanField_ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.poutine.replay_messenger import ReplayMessenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence


@dataclass(frozen=True)
class Traits:
    """What an objective does with the sites of a model and guide.

    :param str name: how messages name the objective.
    :param bool enumerates: sums out sites marked ``infer={"enumerate": ...}``.
    :param bool analytic_kl: scores a latent by ``kl_divergence(q, p)`` where
        torch has it (else by ``log q - log p`` at the sample).
    :param reparam_only: ``None``, or why guide sites without ``rsample``
        get no correct gradient (then they are refused).
    :param bool pathwise_only: refuses guide sites whose ``rsample`` is no true
        reparameterization (discrete values: straight-through estimators), whose
        pathwise gradient inside importance weights is no gradient of the bound.
    :param bool guide_factors: accepts observed sites (``pyro.factor``) in the guide.
    :param bool scaled_sites: accepts scaled sites (minibatch ``N/B``, KL weights).
    :param bool traced: compiles the model with ``torch.jit.trace``.
    :param bool stops_guide_parameters: evaluates ``log q`` with the guide's distribution
        parameters detached (DReG).
    :param str instead: what to use when the check fails, appended to messages.
    """

    name: str
    enumerates: bool = False
    analytic_kl: bool = False
    reparam_only: Optional[str] = None
    pathwise_only: bool = False
    guide_factors: bool = True
    scaled_sites: bool = True
    traced: bool = False
    stops_guide_parameters: bool = False
    instead: str = ""


MEANFIELD_REPARAM = ("its closed-form KL carries no score-function term, so the encoder of a "
                      "discrete site would get no gradient: use Trace_ELBO/TraceGraph_ELBO "
                      "(objectives 'elbo', 'tracegraph') or VIMCO")
RENYI_REPARAM = ("RenyiELBO gives a site without rsample no score-function gradient at alpha=0 "
                  "(pyro issue 3104): use pyro_lvm.objectives.VIMCO, the importance-weighted bound "
                  "with per-sample baselines")
RENYI_SCALE = ("RenyiELBO applies the minibatch scale N/B (and any KL weight) inside its "
                "log-sum-exp, so with data_size > batch size or annealing its value is not the "
                "importance-weighted bound: use pyro_lvm.objectives.IWAE, which scales the "
                "per-data-point bound")

#: Pyro's ELBOs, most specific first (the Jit classes subclass the plain ones)
STOCK_TRAITS: List[Tuple[type, Traits]] = [
    (JitTraceEnum_ELBO, Traits("JitTraceEnum_ELBO", enumerates=True, traced=True)),
    (TraceEnum_ELBO, Traits("TraceEnum_ELBO", enumerates=True)),
    (JitTraceMeanField_ELBO, Traits("JitTraceMeanField_ELBO", analytic_kl=True, traced=True,
                                    reparam_only=MEANFIELD_REPARAM, guide_factors=False)),
    (TraceMeanField_ELBO, Traits("TraceMeanField_ELBO", analytic_kl=True, reparam_only=MEANFIELD_REPARAM,
                                 guide_factors=False)),
    (JitTraceGraph_ELBO, Traits("JitTraceGraph_ELBO", traced=True)),
    (TraceGraph_ELBO, Traits("TraceGraph_ELBO")),
    (JitTrace_ELBO, Traits("JitTrace_ELBO", traced=True)),
    (Trace_ELBO, Traits("Trace_ELBO")),
    (RenyiELBO, Traits("RenyiELBO", reparam_only=RENYI_REPARAM, pathwise_only=True, scaled_sites=False)),
]


def stock_traits(elbo: ELBO) -> Optional[Traits]:
    """The traits of one of Pyro's ELBOs (``None`` for a class this module does not know)."""
    traits = getattr(elbo, "traits", None)
    if isinstance(traits, Traits):  # a pyro_lvm objective
        return traits
    for cls, traits in STOCK_TRAITS:
        if isinstance(elbo, cls):
            return traits
    return None


class InvalidObjectiveError(TypeError):
    """An objective that would not optimise a bound for this model and guide.

    A ``TypeError`` (an objective of the wrong kind for the model): Pyro's trace
    handlers append a table of shapes to a ``ValueError`` raised inside a model,
    and this message should stay one line.
    """


class CheckCache:
    """What an objective has already checked: trace structures that passed, and the model
    instances that passed in each mode (``training``, gradients on), which need no second look."""

    def __init__(self):
        self.structures: set = set()
        self.passed: Dict[tuple, "weakref.WeakSet"] = {}


# ---------------------------------------------------------------- who runs us
_IN_CHARGE: contextvars.ContextVar[Optional[Tuple[Traits, "CheckCache"]]] = contextvars.ContextVar("pyro_lvm_objective",
                                                                                          default=None)
_STOCK_CHECKED: "weakref.WeakKeyDictionary[ELBO, CheckCache]" = weakref.WeakKeyDictionary()
#: method names of pyro.infer.ELBO subclasses that run model and guide
_ELBO_FRAMES = frozenset({"_get_traces", "_get_trace", "_get_vectorized_trace", "loss", "loss_and_grads",
                          "differentiable_loss", "_guess_max_plate_nesting", "_loss_and_surrogate_loss"})


@contextlib.contextmanager
def objective_in_charge(traits: Traits, checked: "CheckCache") -> Iterator[None]:
    """Inside, model runs are checked against ``traits`` (a pyro_lvm objective running
    them, possibly through one of Pyro's ELBOs); ``checked`` remembers what passed."""
    token = _IN_CHARGE.set((traits, checked))
    try:
        yield
    finally:
        _IN_CHARGE.reset(token)


def running_elbo(max_depth: int = 80) -> Optional[ELBO]:
    """The innermost ``pyro.infer.ELBO`` on the Python call stack, or ``None``.

    Only frames of the ELBO methods that run a model are looked into.
    """
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        if frame.f_code.co_name in _ELBO_FRAMES:
            obj = frame.f_locals.get("self")
            if isinstance(obj, ELBO):
                return obj
        frame = frame.f_back
    return None


def _current_traces():
    """``(model_trace, guide_trace)`` of the run in progress: the innermost recording trace
    on Pyro's stack and the trace being replayed; ``None`` where there is none."""
    model_trace = guide_trace = None
    for messenger in reversed(_PYRO_STACK):
        if model_trace is None and isinstance(messenger, TraceMessenger) and not messenger.param_only:
            model_trace = messenger.trace
        elif guide_trace is None and isinstance(messenger, ReplayMessenger) and messenger.trace is not None:
            guide_trace = messenger.trace
        if model_trace is not None and guide_trace is not None:
            break
    return model_trace, guide_trace


def check_model_run(model) -> None:
    """Check the model run that is ending against the objective that runs it (if any).

    Called at the end of every ``model`` of a
    :class:`~pyro_lvm.base.LatentVariableModel`.
    """
    in_charge = _IN_CHARGE.get()
    if in_charge is not None:
        traits, checked = in_charge
    else:
        elbo = running_elbo()
        if elbo is None:
            return  # Predictive, evaluation, plain calls: no objective to check
        traits = stock_traits(elbo)
        if traits is None:
            return
        checked = _STOCK_CHECKED.setdefault(elbo, CheckCache())
    # a model instance that passed in this mode needs no second look; a verdict on scales
    # depends on each call's data_size, so objectives that refuse scaled sites always look
    mode = (model.training, torch.is_grad_enabled())
    passed = None
    if traits.scaled_sites:
        passed = checked.passed.setdefault(mode, weakref.WeakSet())
        if model in passed:
            return
    model_trace, guide_trace = _current_traces()
    if model_trace is None or guide_trace is None:
        return
    check_traces(traits, model_trace, guide_trace, model, checked.structures)
    if passed is not None and not torch._C._get_tracing_state():
        passed.add(model)


# ------------------------------------------------------------------- the rules
def _sample_sites(trace) -> Dict[str, dict]:
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)}


def _is_one(scale) -> bool:
    if isinstance(scale, torch.Tensor):
        return scale.numel() == 1 and float(scale) == 1.0
    return scale == 1.0


def _structure(model_sites, guide_sites, model) -> tuple:
    def describe(site):
        return (type(site["fn"]), bool(site["is_observed"]), site["infer"].get("enumerate"),
                _is_one(site["scale"]))
    return (type(model),
            tuple((n, describe(s)) for n, s in model_sites.items()),
            tuple((n, describe(s)) for n, s in guide_sites.items()),
            torch.is_grad_enabled(), bool(torch._C._get_tracing_state()))


def _dist_name(d) -> str:
    while hasattr(d, "base_dist"):  # Independent, expanded and masked wrappers
        d = d.base_dist
    return type(d).__name__


def _fail(traits: Traits, model, message: str) -> None:
    name = type(model).registry_name or type(model).__name__
    tail = f" {traits.instead}" if traits.instead else ""
    raise InvalidObjectiveError(f"{traits.name} is not a valid objective for {name}: {message}.{tail}")


def check_traces(traits: Traits, model_trace, guide_trace, model, checked: Optional[set] = None) -> None:
    """Raise :class:`InvalidObjectiveError` if ``traits`` does not fit the traces.

    ``checked`` (a set) skips trace structures that already passed.
    """
    model_sites, guide_sites = _sample_sites(model_trace), _sample_sites(guide_trace)
    key = _structure(model_sites, guide_sites, model)
    if checked is not None and key in checked:
        return
    gradients, tracing = key[-2:]  # the rules on gradients hold only where some are computed
    if traits.traced and model.not_traceable:
        _fail(traits, model, f"torch.jit.trace would freeze it at its first call ({model.not_traceable}); "
                             f"use {traits.name.replace('Jit', '')} instead")
    for name, site in model_sites.items():
        if site["is_observed"] or name in guide_sites:
            continue
        marked = site["infer"].get("enumerate") is not None
        if not (marked and traits.enumerates):
            how = ("it is marked for enumeration: use TraceEnum_ELBO or objective 'enum', which sum it out"
                   if marked else "the objective would draw it from the prior, which is no posterior "
                   "approximation: sample it in the guide")
            _fail(traits, model, f"the latent site {name!r} is not sampled by the guide; {how}")
    for name, site in guide_sites.items():
        if site["is_observed"]:
            if not traits.guide_factors and name not in model_sites:
                _fail(traits, model, f"the guide adds the factor {name!r} (pyro.factor), which "
                                     f"{traits.name} cannot score; use Trace_ELBO or objective 'elbo'")
            continue
        if site["infer"].get("enumerate") is not None and not traits.enumerates:
            _fail(traits, model, f"the guide site {name!r} is marked for enumeration; use TraceEnum_ELBO or "
                                 "objective 'enum', which sum it out")
        parents = site["infer"].get("parents")
        if traits.analytic_kl and parents:
            _fail(traits, model, f"the guide computes its distribution of {name!r} from its samples of "
                                 f"{', '.join(map(repr, parents))}, so it is not mean-field: a closed-form KL "
                                 "would integrate out a value that another guide site was computed from; "
                                 "use Trace_ELBO or objective 'elbo'")
        if traits.stops_guide_parameters and gradients and parents:
            _fail(traits, model, f"the guide's distribution of {name!r} is computed from its samples of "
                                 f"{', '.join(map(repr, parents))}; stopping its parameters would also stop the "
                                 "pathwise gradient through them; use gradient='reparam'")
        if traits.reparam_only and gradients and not site["fn"].has_rsample:
            _fail(traits, model, f"the guide site {name!r} ({_dist_name(site['fn'])}) has no rsample; "
                                 f"{traits.reparam_only}")
        if traits.pathwise_only and gradients and site["fn"].has_rsample and site["fn"].support.is_discrete:
            _fail(traits, model, f"the guide site {name!r} draws discrete values with a straight-through "
                                 "gradient, which is no gradient of an importance-weighted bound; use objective "
                                 "'meanfield' or 'elbo', or a guide without rsample (estimator 'vimco')")
    if not traits.scaled_sites:
        for name, site in list(model_sites.items()) + list(guide_sites.items()):
            if not _is_one(site["scale"]):
                _fail(traits, model, f"site {name!r} is scaled by {float(site['scale']):.4g}; {RENYI_SCALE}")
    if not tracing:  # value checks read tensors, which a jit trace must not do
        for name, site in guide_sites.items():
            if site["is_observed"] or name not in model_sites:
                continue
            _check_support(traits, model, name, site, model_sites[name])
    if checked is not None:
        checked.add(key)


def _check_support(traits: Traits, model, name: str, guide_site: dict, model_site: dict) -> None:
    q, p = guide_site["fn"], model_site["fn"]
    if traits.analytic_kl:
        try:
            kl_divergence(q, p)
            return  # scored by the closed form; log p at the sample is never used
        except NotImplementedError:
            pass
    value = guide_site["value"]
    try:
        inside = bool(p.support.check(value).all())
    except (NotImplementedError, RuntimeError):  # a support without a check: nothing to test
        return
    if not inside:
        _fail(traits, model, f"the guide's sample of {name!r} ({_dist_name(q)}) lies outside the support "
                             f"of the model's {_dist_name(p)}, so log p({name}) is not a density there; "
                             "a relaxed sample is scored only by the closed-form KL of its logits "
                             "(Jang et al.): use TraceMeanField_ELBO or objective 'meanfield'")
