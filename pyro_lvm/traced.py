r"""A training loss recorded once as a graph of tensor operations and replayed every step.

Running a Pyro model and guide costs Python time on every step: the handlers
and their messages at each site, the distributions' argument handling and
shape checks, the objective's walk over the traces. When the networks are
small, or on a GPU where the kernels are fast, that fixed cost sets the pace
(``bench/vae_overhead.py``, configuration ``overhead``).

Yet for most models the step computes the same operations every time:
:math:`\text{loss}(\theta, x, \epsilon, w)` is a fixed function of the parameters
:math:`\theta`, the minibatch :math:`x`, the noise :math:`\epsilon` and the KL
weight :math:`w`. :class:`TracedLoss` records it once per input shape with
``torch.fx``'s ``make_fx`` on fake tensors (nothing is computed and no random
number is drawn while recording) and then replays the recorded operations:

* the random operations are part of the graph, so each replay draws fresh
  noise, the very draws the eager step would have made from the same state
  of the random number generator;
* gradients flow through the replay by autograd as through the eager step;
* the KL weight is an input, so an annealing schedule needs no new recording;
* a Python branch on a tensor's value cannot be recorded: it raises while
  recording, and the loss then runs eagerly (:attr:`TracedLoss.failed` says
  why) instead of freezing one branch;
* the first step of each input shape runs both ways on the same noise, and
  the recording is kept only if its loss and gradients agree with Pyro's.

Whether a pair can be recorded is declared by both sides: the model by
:attr:`~pyro_lvm.base.LatentVariableModel.not_recordable` (``None``: fixed shapes,
no Python state that changes between steps, no gradients of its own) and the objective by
:attr:`~pyro_lvm.objectives.base.Objective.not_replayable` (``None``). Engines that run the
graph: ``"jit"`` (TorchScript's interpreter, which runs the operations in C++;
the default), ``"fx"`` (the graph's Python code) or a ``torch.compile`` mode
(inductor fuses the whole loss and its backward; one compilation per shape).

    >>> import torch
    >>> from pyro_lvm.models import VAE
    >>> from pyro_lvm.objectives import ELBO
    >>> model = VAE(input_dim=6, latent_dim=2, hidden=(5,))
    >>> loss = TracedLoss(model, ELBO(), data_size=100)
    >>> x = torch.bernoulli(torch.full((10, 6), 0.5))
    >>> first = loss(x)  # recorded, and run eagerly this once
    >>> terms = loss(x)  # replayed
    >>> terms.surrogate.backward()
    >>> loss.graphs, terms.loss.shape
    (1, torch.Size([]))
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import pyro
import torch
from torch import nn

from pyro_lvm.base import LatentVariableModel, param_store_registration
from pyro_lvm.objectives.base import LossTerms, Objective, scale_gradients

#: the engines that replay a recorded graph besides ``torch.compile``'s modes
ENGINES = ("jit", "fx")
#: recorded graphs kept per loss (input shapes; a model whose shapes vary more runs eagerly)
MAX_GRAPHS = 8


def why_not_traced(model, objective, engine: str = "jit") -> Optional[str]:
    """Why the training loss of ``model`` under ``objective`` cannot be recorded and replayed by
    ``engine`` (see :class:`TracedLoss`), or ``None`` when it can."""
    if not isinstance(objective, Objective):
        return f"{type(objective).__name__} is one of Pyro's ELBOs, which run as SVI runs them"
    reason = objective.why_not_replayable()
    if reason:
        return f"objective {type(objective).__name__}: {reason}"
    if objective.rescales_gradients and engine not in ENGINES:
        return (f"objective {type(objective).__name__} rescales the gradients of intermediate values with hooks "
                f"(DReG), which a graph compiled whole ({engine}) does not expose")
    if not isinstance(model, LatentVariableModel):
        return f"{type(model).__name__} is not a pyro_lvm model"
    if model.not_recordable:
        return f"model {model.registry_name or type(model).__name__}: {model.not_recordable}"
    return None


class _Step(nn.Module):
    """The objective's loss of ``model`` as a module, so that ``torch.func.functional_call`` can
    run it on parameters given as inputs."""

    def __init__(self, model: LatentVariableModel, objective: Objective, data_size: int):
        super().__init__()
        self.model = model
        self.objective = objective
        self.data_size = data_size

    def forward(self, x: torch.Tensor, kl_weight: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(loss, surrogate, z_1, w_1, z_2, w_2, ...)``: the terms, and the gradient scales that
        a hook applies after each replay (DReG's)."""
        m = self.model
        with param_store_registration(False), pyro.validation_enabled(False):
            # no checks while recording: they run in the eager first step of each shape (__call__)
            terms, scales = self.objective.recorded_terms(m.model, m.guide, (x,), {"data_size": self.data_size},
                                                          kl_weight)
        return (terms.loss, terms.surrogate) + tuple(t for pair in scales for t in pair)


def _terms(outputs: Tuple[torch.Tensor, ...]) -> LossTerms:
    """The loss terms from a recorded graph's outputs, with its gradient scales applied as hooks."""
    rest = outputs[2:]
    scale_gradients(tuple(zip(rest[0::2], rest[1::2])))
    return LossTerms(outputs[0], outputs[1])


_ATEN = torch.ops.aten
_SAME_VALUE = {  # op -> the scalar second argument with which it returns its first argument's values
    _ATEN.add.Tensor: 0, _ATEN.sub.Tensor: 0, _ATEN.mul.Tensor: 1, _ATEN.div.Tensor: 1,
}


def _simplify(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Drop operations that change nothing (an ``expand`` to the shape a tensor has; adding 0,
    multiplying or dividing by 1) and those whose results are unused."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        first = node.args[0] if node.args else None
        if not isinstance(first, torch.fx.Node) or not isinstance(first.meta.get("val"), torch.Tensor):
            continue
        val = first.meta["val"]
        out = node.meta.get("val")
        if not isinstance(out, torch.Tensor) or out.dtype != val.dtype or out.shape != val.shape:
            continue
        same = (node.target is _ATEN.expand.default
                or (node.target in _SAME_VALUE and len(node.args) == 2 and not node.kwargs
                    and not isinstance(node.args[1], torch.fx.Node) and node.args[1] == _SAME_VALUE[node.target]))
        if same:
            node.replace_all_uses_with(first)
            graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _rng_states(device: torch.device):
    return (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_states(states, device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


@contextlib.contextmanager
def _undone(device: torch.device, buffers: Tuple[torch.Tensor, ...] = ()):
    """Run a graph once without effect: its random draws on ``device``, and its in-place updates
    of ``buffers`` (moving averages), are undone at the end."""
    rng = _rng_states(device)
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        _set_rng_states(rng, device)
        with torch.no_grad():
            for b, before in zip(buffers, saved):
                b.copy_(before)


class TracedLoss:
    """The loss of ``model`` under ``objective`` on minibatches, recorded once per input shape
    and replayed (see the module's text).

    :param model: a :class:`~pyro_lvm.base.LatentVariableModel` whose ``not_recordable`` is ``None``.
    :param objective: an :class:`~pyro_lvm.objectives.base.Objective` whose ``not_replayable`` is ``None``.
    :param int data_size: the number of data points :math:`N` (the minibatch scale :math:`N/B`).
    :param str engine: ``"jit"``, ``"fx"`` or a ``torch.compile`` mode
        (:data:`pyro_lvm.train.COMPILE_MODES`).
    :raises ValueError: for a pair that cannot be recorded (:func:`why_not_traced` says why).
    """

    def __init__(self, model: LatentVariableModel, objective: Objective, data_size: int, engine: str = "jit"):
        reason = why_not_traced(model, objective, engine)
        if reason is not None:
            raise ValueError(f"the loss cannot be recorded and replayed: {reason}")
        self.model, self.objective, self.engine = model, objective, engine
        self._step = _Step(model, objective, int(data_size))
        self._graphs: Dict[tuple, Callable] = {}
        #: why recording failed (the loss then runs eagerly), or ``None``
        self.failed: Optional[str] = None
        self._last_weight: Optional[Tuple[float, torch.Tensor]] = None

    @property
    def graphs(self) -> int:
        """The number of graphs recorded so far (one per input shape)."""
        return len(self._graphs)

    def _state(self) -> Tuple[List[str], List[torch.Tensor]]:
        """The names (as the recording's module sees them) and the tensors of the graph's state inputs."""
        names = ["model." + n for n, _ in self.model.named_parameters()] + \
            ["model." + n for n, _ in self.model.named_buffers()]
        return names, self._tensors()

    def _tensors(self) -> List[torch.Tensor]:
        """The model's parameters and buffers, in the recording's order (every replay: no names)."""
        return [*self.model.parameters(), *self.model.buffers()]

    def _record(self, x: torch.Tensor, weight: torch.Tensor) -> torch.fx.GraphModule:
        """The operations of one loss evaluation, recorded on fake tensors (nothing runs)."""
        from torch.fx.experimental.proxy_tensor import make_fx

        names, tensors = self._state()
        step = self._step

        def loss(*flat):
            state = dict(zip(names, flat[:len(names)]))
            return torch.func.functional_call(step, state, flat[len(names):], strict=True)

        return _simplify(make_fx(loss, tracing_mode="fake")(*tensors, x, weight))

    def _engine(self, gm: torch.fx.GraphModule, inputs: tuple) -> Callable:
        """``gm`` as the engine runs it."""
        if self.engine == "fx":
            return gm
        if self.engine == "jit":
            # tracing runs the graph once: on copies of the state (whose buffers it may update, as
            # moving averages), with its random draws undone
            copies = tuple(t.detach().clone() if isinstance(t, torch.Tensor) else t for t in inputs)
            with _undone(inputs[-1].device), warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice
                scripted = torch.jit.trace(gm, copies, check_trace=False)

            def run(*args):
                # the interpreter alone: the operations and their gradients by autograd, as in
                # the eager step (bit for bit), without the graph executor's own derivatives
                with torch.jit.optimized_execution(False):
                    return scripted(*args)

            return run
        return torch.compile(gm, mode=self.engine, dynamic=False, fullgraph=True)

    def _eager_terms(self, x: torch.Tensor, step: Optional[float]) -> LossTerms:
        """The objective's terms, Pyro running the model and the guide (parameters kept out of
        Pyro's param store)."""
        m = self.model
        with param_store_registration(False):
            return self.objective.terms(m.model, m.guide, x, data_size=self._step.data_size, step=step)

    def __call__(self, x: torch.Tensor, step: Optional[float] = None) -> LossTerms:
        """The loss terms on the minibatch ``x`` at training step ``step`` (default: the objective's
        :attr:`~pyro_lvm.objectives.base.Objective.step`), as
        :meth:`~pyro_lvm.objectives.base.Objective.terms` gives them.

        The first call for an input shape runs eagerly, with the objective's checks, and
        records the graph; the graph is kept only if, run on the same noise, it gives the
        eager loss and gradients (a backward hook or a custom ``autograd.Function``, which a
        recording cannot hold, would make them differ). Later calls replay it. While the model's
        :attr:`~pyro_lvm.base.LatentVariableModel.not_recordable_yet` gives a reason, every call
        runs eagerly."""
        m = self.model
        if m.not_recordable_yet:  # e.g. state that the first step sets up: eagerly, as Pyro runs it
            return self._eager_terms(x, step)
        key = (tuple(x.shape), x.dtype, x.device, self.model.training, torch.is_grad_enabled())
        weight = self._weight(self.objective.kl_weight(step), x.device)
        graph = self._graphs.get(key)
        if graph is not None:
            outputs = graph(*self._tensors(), x, weight)
            if self.engine not in ENGINES:
                # a CUDA graph (reduce-overhead, max-autotune) writes its outputs into the same
                # memory at every replay: the loss, which the Trainer keeps until its next check,
                # is copied out (one scalar); the surrogate is consumed by this step's backward
                outputs = (outputs[0].clone(),) + tuple(outputs[1:])
            return _terms(outputs)
        gm = self._try_to_record(x, weight) if self.failed is None else None
        replayed = None
        if gm is not None:  # the graph on the noise and the buffers that the eager run below sees again
            with _undone(x.device, tuple(m.buffers())):
                replayed = self._gradients(_terms(gm(*self._tensors(), x, weight)))
        terms = self._eager_terms(x, step)
        if gm is not None:
            if _same(replayed, self._gradients(terms, retain=True)):
                self._graphs[key] = self._engine(gm, (*self._tensors(), x, weight))
            else:  # a bug to report: the model or objective should declare itself not recordable
                self._give_up("replayed, it gives another loss or other gradients than the eager step (a "
                              "backward hook or a custom autograd.Function in the model or the objective?)",
                              warn=True)
        return terms

    def _gradients(self, terms: LossTerms, retain: bool = False) -> List[torch.Tensor]:
        """The loss and the surrogate's gradients with respect to the parameters (zeros for
        parameters it does not reach)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        out = [terms.loss.detach().reshape(())]
        if torch.is_grad_enabled() and terms.surrogate.requires_grad and params:
            grads = torch.autograd.grad(terms.surrogate, params, retain_graph=retain, allow_unused=True)
            out += [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        return out

    def _weight(self, value: float, device: torch.device) -> torch.Tensor:
        """The KL weight as a tensor on ``device``, made anew only when it changes."""
        if self._last_weight is None or self._last_weight[0] != value or self._last_weight[1].device != device:
            # a fill on the device, not a copy from the host
            self._last_weight = (value, torch.full((), value, dtype=torch.get_default_dtype(), device=device))
        return self._last_weight[1]

    def _try_to_record(self, x: torch.Tensor, weight: torch.Tensor) -> Optional[torch.fx.GraphModule]:
        if len(self._graphs) >= MAX_GRAPHS:
            self._give_up(f"more than {MAX_GRAPHS} input shapes")
            return None
        try:
            return self._record(x, weight)
        except Exception as e:  # a Python branch on a value, an operation fake tensors lack, ...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self._give_up(f"{type(e).__name__}: {first}")
            return None

    def _give_up(self, reason: str, warn: bool = False) -> None:
        """Run eagerly from now on, for ``reason`` (kept in :attr:`failed`). A loss that cannot be
        recorded (a Python branch on a value, as in Pyro's score-function estimators) is no
        error: the eager step is the reference."""
        self.failed = reason
        if warn:
            warnings.warn(f"the training loss of {self.model.registry_name or type(self.model).__name__} under "
                          f"{type(self.objective).__name__} is not recorded ({reason}); it runs eagerly, "
                          "step by step", RuntimeWarning, stacklevel=4)


def _same(a: List[torch.Tensor], b: List[torch.Tensor], rtol: float = 1e-3) -> bool:
    """Whether two lists of tensors agree to ``rtol`` in norm (float32 sums in another order
    differ by far less; a lost gradient path differs by far more; NaN agrees with nothing)."""
    if len(a) != len(b):
        return False
    for u, v in zip(a, b):
        if u.shape != v.shape:
            return False
        if not float((u - v).double().norm()) <= rtol * float(max(u.double().norm(), v.double().norm())) + 1e-8:
            return False
    return True
