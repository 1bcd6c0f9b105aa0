"""The base class that every latent-variable model implements."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from typing import Any, ClassVar, Dict, Iterator, Optional, Tuple

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule
from torch.distributions import Distribution

from pyro_lvm.objectives.checks import check_model_run

_INSTANCE_NAMES = itertools.count()
#: while > 0, ``model``/``guide`` do not register parameters (the Trainer with a
#: pyro_lvm objective optimizes ``model.parameters()`` itself)
_REGISTRATION_OFF = [0]


@contextlib.contextmanager
def param_store_registration(enabled: bool) -> Iterator[None]:
    """Turn the registration of parameters in Pyro's param store off (or back on) inside.

    Registration is on by default, which is what ``pyro.infer.SVI`` needs. The
    :class:`~pyro_lvm.train.Trainer` turns it off around its own objectives,
    whose optimizer holds ``model.parameters()`` directly (one message per
    parameter and call saved).
    """
    delta = 0 if enabled else 1
    _REGISTRATION_OFF[0] += delta
    try:
        yield
    finally:
        _REGISTRATION_OFF[0] -= delta


def _registered(method, check: bool):
    """Wrap a subclass's ``model`` or ``guide``: validate the data (while Pyro's validation is
    on, as it is by default) and register the parameters first and, for the model, check the
    traces it runs in against the objective (see
    :func:`pyro_lvm.objectives.checks.check_model_run`) at the end."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        x = args[0] if args else kwargs.get("x")
        if x is not None and is_validation_enabled() and not torch._C._get_tracing_state():
            self.check_data(x, f"the data given to {type(self).__name__}.{method.__name__}")
        if not _REGISTRATION_OFF[0]:
            pyro.module(self.pyro_name, self, update_module_params=True)
        result = method(self, *args, **kwargs)
        if check:
            check_model_run(self)
        return result

    wrapper._pyro_lvm_wrapped = True
    return wrapper


#: the recompile limit of dynamo that :meth:`LatentVariableModel.compile_networks` sets at least
RECOMPILE_LIMIT = 64


class LatentVariableModel(PyroModule):
    r"""A Pyro model/guide pair with the helpers the library's machinery needs.

    A subclass describes a joint density :math:`p_\theta(x, z)` in :meth:`model`
    and an amortized approximate posterior :math:`q_\phi(z \mid x)` in
    :meth:`guide`. Both run inside :meth:`data_plate`, a ``pyro.plate`` over the
    data points whose ``size`` is the size of the whole data set, so that a
    minibatch of :math:`B` out of :math:`N` points is scaled by :math:`N/B`.
    The objective is never part of the model: any objective in
    :mod:`pyro_lvm.objectives`, and any of Pyro's ELBOs, takes ``(model.model,
    model.guide, x)``; ``pyro.infer.SVI(m.model, m.guide, optim, loss)`` trains it.

    Every parameter reaches Pyro's param store when ``model`` or ``guide`` runs
    (``pyro.module`` under :attr:`pyro_name`, unique per instance, so two models
    in one process never share parameters and ``pyro.clear_param_store()``
    between uses is harmless). At the end of every ``model`` run the traces are
    checked against the objective that runs them
    (:mod:`pyro_lvm.objectives.checks`): a pair that would optimise something
    other than a bound raises a :class:`ValueError` that says why and what to use.

    Subclasses set ``Config`` (a dataclass of hyperparameters) and implement
    :meth:`model`, :meth:`guide`, :meth:`encode`, :meth:`decode` and
    :meth:`prior`. Fitted state lives in parameters and buffers only, so
    ``state_dict`` plus the config rebuild a model exactly.

    :param config: an instance of the subclass's ``Config``; alternatively pass
        its fields as keyword arguments.
    """

    #: dataclass of hyperparameters; every field is a keyword argument.
    Config: ClassVar[type]
    #: number of ``pyro.plate`` dims the model uses (the data plate).
    max_plate_nesting: ClassVar[int] = 1
    #: name of the observed sample site.
    observed_site: ClassVar[str] = "x"
    #: name of the latent sample site(s) that the guide samples.
    latent_sites: ClassVar[Tuple[str, ...]] = ("z",)
    #: why ``torch.jit.trace`` (``JitTrace_ELBO``) cannot compile the model, or
    #: ``None`` when it can (static shapes, no Python branching on tensor values).
    not_traceable: ClassVar[Optional[str]] = None
    #: how the command line trains the model: ``"amortized"`` (a Trainer and an objective on a
    #: data set) or ``"tabular"`` (a CSV file, fitted by a method such as EM); see
    #: :data:`pyro_lvm.cli.TRAIN_FLOWS`.
    train_flow: ClassVar[str] = "amortized"
    #: numbers a model computes per observed value when scoring it (e.g. the
    #: vocabulary size for a softmax output); bounds evaluation chunks' memory.
    evaluation_width: ClassVar[int] = 1
    #: whether the model is inside :meth:`presized` (set there, on the instance)
    is_presized: bool = False
    #: the name under which the class is registered (set by the registry).
    registry_name: ClassVar[str] = ""
    #: a KL warm-up for runs of the command line that name no schedule (``--kl-anneal``): the
    #: fraction of the run's training steps over which the KL weight rises linearly to 1, or
    #: ``None`` for none. A model whose upper latents stay unused without one sets it; the
    #: Trainer, Pyro's SVI and the objectives never apply it on their own.
    default_kl_warmup: ClassVar[Optional[float]] = None

    def __init__(self, config: Any = None, **kwargs: Any):
        super().__init__()
        if config is None:
            config = self.Config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a config or keyword arguments, not both")
        elif isinstance(config, dict):
            config = self.Config(**config)
        if not isinstance(config, self.Config):
            raise TypeError(
                f"config must be a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.config = config

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("model", "guide"):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_pyro_lvm_wrapped", False):
                setattr(cls, name, _registered(method, check=name == "model"))

    @property
    def pyro_name(self) -> str:
        """The prefix of this instance's parameters in Pyro's param store.

        Unique per instance (a copy gets a new one), e.g. ``"vae_3"``.
        """
        entry = self.__dict__.get("_pyro_lvm_name")
        if entry is None or entry[0] != id(self):
            prefix = type(self).registry_name or type(self).__name__.lower()
            entry = (id(self), f"{prefix}_{next(_INSTANCE_NAMES)}")
            self.__dict__["_pyro_lvm_name"] = entry
        return entry[1]

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "LatentVariableModel":
        """Build a model from a dict as written by :meth:`config_dict`."""
        names = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = set(config) - names
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} options {sorted(unknown)}; expected some of {sorted(names)}"
            )
        kwargs = {}
        for f in dataclasses.fields(cls.Config):
            if f.name in config:
                value = config[f.name]
                kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)

    def config_dict(self) -> Dict[str, Any]:
        """The hyperparameters as a JSON-serializable dict."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self.config).items()
        }

    # ------------------------------------------------------------------ plates
    def data_plate(self, batch_size: int, data_size: Optional[int], device=None):
        """The plate over data points, scaled for minibatches.

        :param int batch_size: number of points in this call.
        :param data_size: number of points in the whole data set, or ``None``
            when the call sees all of it.
        """
        if data_size is None or data_size == batch_size:
            return pyro.plate("data", batch_size, dim=-1)
        if data_size < batch_size:
            raise ValueError(
                f"data_size ({data_size}) must be at least the batch size ({batch_size})"
            )
        return pyro.plate(
            "data", data_size, subsample=torch.arange(batch_size, device=device), dim=-1
        )

    # --------------------------------------------------------- to implement
    def model(self, x: Optional[torch.Tensor] = None, *, data_size: Optional[int] = None,
              num_samples: Optional[int] = None):
        r"""The generative model :math:`p_\theta(x, z)`.

        With ``x=None`` it generates ``num_samples`` points (the path that
        :class:`pyro.infer.Predictive` uses).
        """
        raise NotImplementedError

    def guide(self, x: torch.Tensor, *, data_size: Optional[int] = None,
              num_samples: Optional[int] = None):
        r"""The amortized guide :math:`q_\phi(z \mid x)`."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> Distribution:
        r""":math:`q_\phi(z \mid x)` as a distribution with batch shape ``x.shape[:1]``."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> Distribution:
        r""":math:`p_\theta(x \mid z)` as a distribution over one data point per ``z``."""
        raise NotImplementedError

    def prior(self, num: int) -> Distribution:
        r"""The prior :math:`p(z)` with batch shape ``(num,)``."""
        raise NotImplementedError

    @property
    def data_support(self) -> str:
        """What observed values must be: ``"binary"``, ``"eight_bit"`` (:math:`k/255`),
        ``"unit_interval"`` or ``"real"``."""
        return "real"

    @property
    def bits_per_dim(self) -> bool:
        """Whether the likelihood is a probability mass over 8-bit values, so that the NLL
        divided by :math:`D \\ln 2` is bits per dimension (``test_bpd`` in the metrics)."""
        return self.data_support == "eight_bit"

    @property
    def input_dim(self) -> int:
        return self.config.input_dim

    @property
    def default_objective(self) -> str:
        """The objective used when a command does not name one."""
        return "elbo"

    def predictive_guide(self, x: torch.Tensor, **kwargs):
        """The guide a posterior predictive draws its latents from: one over the latent sites of
        the model's generating path (``model(None, num_samples=len(x))``), a point per row of
        ``x``. The guide itself here; a model whose guide splits the rows (the M2 model's
        labelled and unlabelled parts) overrides it."""
        return self.guide(x, **kwargs)

    def prepare_data(self, data):
        """The :class:`~pyro_lvm.data.DataSplits` as this model reads it (e.g. with the class labels as a
        column); called by the command line after loading a data set; unchanged here."""
        return data

    def observed_values(self, x: torch.Tensor) -> torch.Tensor:
        """The part of data rows that the likelihood scores (all of a row here; not a label column)."""
        return x

    def evaluation_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The rows as :func:`~pyro_lvm.evaluation.evaluate` scores them: unchanged here. A model whose
        log-likelihood is that of the values alone (the M2 model hides its test labels) hides the
        labels of any rows it is given, so that its NLL means the same whatever labels they carry."""
        return x

    def initialize(self, train: torch.Tensor) -> None:
        """Called once with the training data before a new run trains (not on resume), for
        data-dependent starting values (e.g. the VampPrior's pseudo-inputs); no-op here."""

    def set_step(self, step: int) -> None:
        """Called by the trainer before every step (e.g. to anneal a temperature); no-op here."""

    def row_widths(self, data: torch.Tensor) -> Optional[torch.Tensor]:
        """For rows padded at their end (sentences), the width of each row without its padding;
        ``None`` (here) for rows that are read whole.

        A minibatch cut to its widest row computes the same loss as the whole rows, in less time.
        The :class:`~pyro_lvm.train.Trainer` reads these widths once, keeps them on the host and
        cuts every training minibatch there, then runs the step :meth:`presized`, so that the
        model never reads the width of a minibatch from the device (a synchronisation on a GPU)."""
        return None

    @contextlib.contextmanager
    def presized(self) -> Iterator[None]:
        """Within this context the model takes each minibatch at the width it is given, already
        cut to its widest row (:meth:`row_widths`), instead of cutting it itself. Only the time a
        step takes depends on it: a minibatch that was not cut gives the same loss."""
        before, self.is_presized = self.is_presized, True
        try:
            yield
        finally:
            self.is_presized = before

    @property
    def not_recordable(self) -> Optional[str]:
        """Why a training step cannot be recorded once and replayed (:mod:`pyro_lvm.traced`),
        or ``None`` when it can: all that :attr:`not_traceable` names, and gradients that a
        graph of tensor operations does not hold (a custom ``autograd.Function``, a backward
        hook). State that changes between steps must live in buffers (as a temperature that
        :meth:`set_step` fills), which the replay reads."""
        return self.not_traceable

    @property
    def not_recordable_yet(self) -> Optional[str]:
        """Why a training step cannot be recorded *now*, though it can once the first steps have
        set some state up (the VQ-VAE's codebook, initialised from the first training batch), or
        ``None``: the steps run eagerly while it says why, and are recorded after."""
        return None

    def collect_state(self) -> None:
        """Called by the trainer before a checkpoint: bring state that an objective keeps outside
        the model (in Pyro's param store) into its buffers; no-op here."""

    # ----------------------------------------------------------------- helpers
    def check_data(self, x: Any, name: str = "x") -> torch.Tensor:
        """Validate data at the public boundary and return it as a float tensor.

        Raises :class:`ValueError` that says what was expected and what came.
        """
        return self.check_values(x, name, self.input_dim)

    def check_values(self, x: Any, name: str, width: int) -> torch.Tensor:
        """:meth:`check_data` for rows of ``width`` values that the likelihood scores."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[-1] != width:
            raise ValueError(
                f"{name} must have shape (num_points, {width}), got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty")
        if not x.is_floating_point():
            x = x.float()
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        support = self.data_support
        if support == "binary" and not ((x == 0) | (x == 1)).all():
            raise ValueError(
                f"{name} must be binary (0/1) for a Bernoulli likelihood; got values in "
                f"[{x.min().item():.3g}, {x.max().item():.3g}]. Binarize the data "
                "(e.g. dataset 'dynamic_mnist'), or use likelihood='discretized_logistic' (8-bit images) or 'gaussian'."
            )
        if support in ("unit_interval", "eight_bit") and ((x < 0) | (x > 1)).any():
            raise ValueError(f"{name} must lie in [0, 1]; got values in [{x.min().item():.3g}, "
                             f"{x.max().item():.3g}]")
        if support == "eight_bit" and ((x * 255 - (x * 255).round()).abs() > 1e-3).any():
            raise ValueError(f"{name} must hold 8-bit values k/255 for a discretized likelihood (e.g. "
                             "data set 'fashion_mnist' or your own uint8 images); got other values in [0, 1]. "
                             "Use likelihood='gaussian' for continuous data.")
        return x

    def compile_networks(self, mode: str = "default") -> Tuple[str, ...]:
        """Compile the ``forward`` of each network of the model (each child module that holds
        parameters) with ``torch.compile(mode=mode)``, in place: the parameters, their names in
        the ``state_dict`` and in Pyro's param store stay as they were, and Pyro's handlers run
        around the compiled networks as before. ``mode="reduce-overhead"`` captures CUDA graphs
        on a GPU (fixed shapes: the last, smaller minibatch of an epoch compiles once more).
        Returns the names of the compiled children.

        (``nn.Module.compile`` is not used: in torch 2.13 it leaves the module uncompiled.) Every
        compiled ``forward`` runs through one wrapper function of torch's, whose cache of compiled
        graphs dynamo caps at ``torch._dynamo.config.recompile_limit`` entries (8 by default) for
        all networks and input shapes together, past which it runs them eagerly; the cap is raised
        to :data:`RECOMPILE_LIMIT`.
        """
        import torch._dynamo.config as dynamo_config

        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        names = []
        for name, child in self.named_children():
            if next(child.parameters(), None) is None or getattr(child.forward, "_pyro_lvm_compiled", False):
                continue
            compiled = torch.compile(child.forward, mode=None if mode == "default" else mode)
            compiled._pyro_lvm_compiled = True
            child.forward = compiled
            names.append(name)
        return tuple(names)

    def sample_prior(self, num: int) -> torch.Tensor:
        """Draw ``num`` latent codes from the prior."""
        return self.prior(num).sample()

    @torch.no_grad()
    def generate(self, num: int, mean: bool = True) -> torch.Tensor:
        """Decode ``num`` prior draws; the likelihood's mean when ``mean``, else a sample."""
        px = self.decode(self.sample_prior(num))
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        r"""Mean of :math:`p_\theta(x \mid z)` at the posterior mean of :math:`q_\phi(z \mid x)`."""
        return self.decode(self.encode(x).mean).mean

    def encoder_mutual_information(self, x: torch.Tensor) -> float:
        r""":math:`I_q(x; z)` under the encoder on ``x``
        (:func:`pyro_lvm.evaluation.mutual_information` unless a model knows better)."""
        from pyro_lvm.evaluation.latents import mutual_information

        return mutual_information(self.encode, x)

    def extra_metrics(self, train: torch.Tensor, test: torch.Tensor, metrics: Dict[str, Any],
                      labels: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, Any]:
        """Model-specific numbers for ``metrics.json``, given the generic ``metrics`` and the data set's
        class labels by split where known (none by default)."""
        return {}

    #: whether ``decode(z)`` takes a latent code alone (latent traversals are drawn for such models)
    decodes_codes_alone = True

    def image_grids(self, data: Any) -> Dict[str, Any]:
        """Model-specific grids of images for the run's figures of the
        :class:`~pyro_lvm.data.DataSplits` ``data``: ``{name: (images, title, columns)}``, rows of
        ``images`` laid out ``columns`` to a row, each drawn by the runs into ``name.png`` (none by
        default; the model computes, it never plots)."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config_dict().items())


def batch_size_of(x: Optional[torch.Tensor], num_samples: Optional[int]) -> int:
    """Number of points a model call covers: ``len(x)``, or ``num_samples`` when generating."""
    if x is not None:
        return x.shape[0]
    if num_samples is None:
        raise ValueError("model(x=None) generates data: pass num_samples")
    if int(num_samples) <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    return int(num_samples)
