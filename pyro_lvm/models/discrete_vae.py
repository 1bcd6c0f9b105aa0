r"""VAEs with discrete latents: Bernoulli (``bernvae``) and categorical (``catvae``).

Generative story, for each data point :math:`x_n \in \{0, 1\}^D`:

.. math::

    z_n \sim \prod_{i=1}^{d} \mathrm{Bernoulli}(\tfrac12)
    \quad\text{or}\quad
    z_n \sim \prod_{i=1}^{N} \mathrm{Categorical}(\tfrac1K 1_K),
    \qquad x_n \mid z_n \sim \mathrm{Bernoulli}\big(\sigma(f_\theta(z_n))\big),

with a mean-field guide :math:`q_\phi(z_{ni} = 1 \mid x_n) = \sigma(\ell_{ni}(x_n))`
(Bernoulli) or :math:`q_\phi(z_{ni} = k \mid x_n) = \mathrm{softmax}(\ell_{ni}(x_n))_k`
(categorical) from an MLP encoder. The reparameterization trick does not
apply; the ``estimator`` option chooses the way around it, which fixes the
guide's distributions and the objective:

============  ======================================================  ==============
estimator     guide sample (forward / backward)                       objective
============  ======================================================  ==============
reinforce     hard sample / score function with a learned             ``tracegraph``
              input-dependent baseline
vimco         hard samples / per-sample leave-one-out baselines       ``vimco``
st            hard sample / identity through the probabilities        ``meanfield``
gumbel        Concrete relaxation at temperature :math:`\tau`; KL is  ``meanfield``
              the categorical KL of the logits (Jang et al.), or
              with ``relaxed_kl="concrete"`` the Monte Carlo KL to a
              Concrete prior (Maddison et al.; objective ``elbo``)
st-gumbel     hard sample / Concrete gradient                         ``meanfield``
enum          summed out exactly (one categorical latent only)        ``enum``
============  ======================================================  ==============

The temperature anneals as :math:`\tau_t = \max(\tau_{\min}, \tau_0 e^{-r t})`.
In ``eval()`` mode the model and guide use the exact discrete distributions
whatever the estimator, so :func:`pyro_lvm.evaluation.evaluate` reports the
negative ELBO with hard samples (a true bound) and importance-sampled
:math:`\log p(x)` with the discrete guide as proposal.

References: Jang, Gu & Poole, *Categorical Reparameterization with
Gumbel-Softmax*, 2016; Maddison, Mnih & Teh, *The Concrete Distribution*,
2016; Bengio, Leonard & Courville 2013 (straight-through); Mnih & Gregor 2014
(REINFORCE baselines); Mnih & Rezende 2016 (VIMCO).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_lvm.base import LatentVariableModel, batch_size_of
from pyro_lvm.distributions import (
    BernoulliStraightThrough,
    HardRelaxedBernoulliStraightThrough,
    HardRelaxedOneHotCategoricalStraightThrough,
    RelaxedBernoulliCategoricalKL,
    RelaxedOneHotCategoricalCategoricalKL,
)
from pyro_lvm.nn import ACTIVATIONS, MLP, check_network, decoder_network, encoder_network, parse_hidden
from pyro_lvm.registry import MODELS

#: estimator -> the objective that goes with it
ESTIMATOR_OBJECTIVES = {"reinforce": "tracegraph", "vimco": "vimco", "st": "meanfield",
                        "gumbel": "meanfield", "st-gumbel": "meanfield", "enum": "enum"}

#: how the ``gumbel`` estimator scores its relaxed samples
RELAXED_KL = ("categorical", "concrete")


@dataclass
class DiscreteVAEConfig:
    input_dim: int = 784
    hidden: Tuple[int, ...] = (512, 256)
    activation: str = "relu"
    estimator: str = "gumbel"
    temperature: float = 1.0
    min_temperature: float = 0.5
    anneal_rate: float = 1e-4
    relaxed_kl: str = "categorical"
    #: ``"mlp"`` or ``"conv"`` (strided convolutions with ``channels``; needs ``image_shape``)
    network: str = "mlp"
    channels: Tuple[int, ...] = (32, 64)
    #: ``(C, H, W)`` of one data point when it is an image (taken from the data by the command line)
    image_shape: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        self.hidden = parse_hidden(self.hidden)
        self.channels = parse_hidden(self.channels)
        self.image_shape = check_network(self.network, self.input_dim, self.image_shape, self.channels)
        if self.relaxed_kl not in RELAXED_KL:
            raise ValueError(f"relaxed_kl must be one of {RELAXED_KL}, got {self.relaxed_kl!r}")
        if self.estimator not in ESTIMATOR_OBJECTIVES:
            raise ValueError(f"estimator must be one of {sorted(ESTIMATOR_OBJECTIVES)}, got {self.estimator!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if not 0 < self.min_temperature <= self.temperature:
            raise ValueError("need 0 < min_temperature <= temperature")
        if self.anneal_rate < 0:
            raise ValueError("anneal_rate must be non-negative")


@dataclass
class BernVAEConfig(DiscreteVAEConfig):
    """Hyperparameters of :class:`BernVAE`; ``latent_dim`` Bernoulli latents."""

    latent_dim: int = 200

    def __post_init__(self):
        super().__post_init__()
        if self.latent_dim < 1:
            raise ValueError("latent_dim must be positive")
        if self.estimator == "enum":
            raise ValueError("estimator 'enum' needs a small latent space: use catvae with num_latents=1")


@dataclass
class CatVAEConfig(DiscreteVAEConfig):
    """Hyperparameters of :class:`CatVAE`; ``num_latents`` categorical latents of ``num_classes``."""

    num_latents: int = 20
    num_classes: int = 10

    def __post_init__(self):
        super().__post_init__()
        if self.num_latents < 1 or self.num_classes < 2:
            raise ValueError("need num_latents >= 1 and num_classes >= 2")
        if self.estimator == "enum" and self.num_latents != 1:
            raise ValueError("estimator 'enum' sums the latent out exactly: it needs num_latents=1 "
                             f"({self.num_classes} states), not {self.num_latents}")


class _Baseline(nn.Module):
    """Input-dependent baseline b(x) for the score-function estimator, shape ``(batch,)``."""

    def __init__(self, input_dim: int, hidden: int, activation: str):
        super().__init__()
        self.net = MLP(input_dim, (hidden,), 1, activation)

    def forward(self, x):
        return self.net(x).squeeze(-1)


class DiscreteVAE(LatentVariableModel):
    """Shared machinery of :class:`BernVAE` and :class:`CatVAE`; see the module docstring."""

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.encoder = encoder_network(c.network, c.input_dim, c.image_shape, c.hidden, c.channels,
                                       self.code_size, c.activation)
        self.decoder = decoder_network(c.network, self.code_size, c.input_dim, c.image_shape, c.hidden,
                                       c.channels, 1, c.activation)
        self.baseline = _Baseline(c.input_dim, c.hidden[-1] if c.hidden else 64, c.activation) \
            if c.estimator == "reinforce" else None
        self.register_buffer("temperature", torch.tensor(float(c.temperature)))
        if c.estimator == "reinforce":  # the decaying-average baseline, held where a checkpoint sees it
            self.register_buffer("average_cost", torch.zeros(()))
        self._average_in_store = False  # has this model's average been written to Pyro's store yet?

    # ------------------------------------------------------------ subclasses
    code_shape: Tuple[int, ...]

    @property
    def code_size(self) -> int:
        return math.prod(self.code_shape)

    def _exact(self, logits, validate=None) -> dist.Distribution:
        raise NotImplementedError

    def _estimator_dist(self, logits) -> dist.Distribution:
        raise NotImplementedError

    def _relaxed_prior(self, batch: int) -> dist.Distribution:
        raise NotImplementedError

    # --------------------------------------------------------------- options
    @property
    def data_support(self) -> str:
        return "binary"

    @property
    def not_traceable(self):
        if self.config.estimator == "reinforce":
            return "the decaying-average baseline is carried from step to step in Python"
        return None

    @property
    def not_recordable(self):
        if self.config.estimator == "st-gumbel":
            return "Pyro's straight-through Gumbel sample has its own backward (an autograd.Function)"
        return self.not_traceable

    @property
    def default_objective(self) -> str:
        c = self.config
        if c.estimator == "gumbel" and c.relaxed_kl == "concrete":
            return "elbo"  # Concrete vs Concrete has no closed-form KL
        return ESTIMATOR_OBJECTIVES[c.estimator]

    def set_step(self, step: int) -> None:
        c = self.config
        self.temperature.fill_(max(c.min_temperature, c.temperature * math.exp(-c.anneal_rate * step)))

    @property
    def _relaxed(self) -> bool:
        return self.training and self.config.estimator == "gumbel"

    @property
    def _concrete_prior(self) -> bool:
        return self._relaxed and self.config.relaxed_kl == "concrete"

    # ------------------------------------------------------------- densities
    def encoder_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).reshape(x.shape[:-1] + self.code_shape)

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """The exact discrete :math:`q_\\phi(z \\mid x)`."""
        return self._exact(self.encoder_logits(x))

    def prior(self, num: int) -> dist.Distribution:
        uniform = torch.zeros(self.code_shape, device=self.temperature.device)
        return self._exact(uniform).expand([num])

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        flat = z.reshape(z.shape[:z.dim() - len(self.code_shape)] + (self.code_size,))
        return dist.Bernoulli(logits=self.decoder(flat)).to_event(1)

    def model(self, x=None, *, data_size=None, num_samples=None):
        batch = batch_size_of(x, num_samples)
        with self.data_plate(batch, data_size, self.temperature.device):
            if self._concrete_prior:
                prior = self._relaxed_prior(batch)
            elif self._relaxed:
                # soft samples meet a discrete prior only through the registered
                # categorical KL; its log_prob of a soft value is never used
                prior = self._exact(torch.zeros(self.code_shape, device=self.temperature.device),
                                    validate=False).expand([batch])
            else:
                prior = self.prior(batch)
            z = pyro.sample("z", prior)
            return pyro.sample("x", self.decode(z), obs=x)

    def guide(self, x, *, data_size=None, num_samples=None):
        logits = self.encoder_logits(x)
        site = self._TRAINING_SITES[self.config.estimator] if self.training else DiscreteVAE._exact_site
        q, infer = site(self, logits, x)
        with self.data_plate(x.shape[0], data_size, x.device):
            return pyro.sample("z", q, infer=infer)

    # the guide's site z: its distribution given the encoder's logits, and its ``infer``
    def _exact_site(self, logits, x):
        """The exact posterior, as scored by VIMCO in training and by every objective in evaluation."""
        return self._exact(logits), {}

    def _baseline_site(self, logits, x):
        """The exact posterior with REINFORCE's baselines: the network :math:`b(x)` and a decaying average."""
        self._sync_average_baseline(x.shape[0])
        return self._exact(logits), {"baseline": {"nn_baseline": self.baseline, "nn_baseline_input": x,
                                                  "use_decaying_avg_baseline": True}}

    def _enumerated_site(self, logits, x):
        """The exact posterior, summed over in parallel by ``TraceEnum_ELBO``."""
        return self._exact(logits), {"enumerate": "parallel"}

    def _sampled_site(self, logits, x):
        """The estimator's own distribution, straight-through or relaxed: ``st``, ``gumbel``, ``st-gumbel``."""
        return self._estimator_dist(logits), {}

    #: estimator -> how the guide builds its site ``z`` in training
    _TRAINING_SITES = {"vimco": _exact_site, "reinforce": _baseline_site, "enum": _enumerated_site,
                       "st": _sampled_site, "gumbel": _sampled_site, "st-gumbel": _sampled_site}

    #: where Pyro's TraceGraph_ELBO keeps the decaying-average baseline of site ``z``
    _AVERAGE_PARAM = "__baseline_avg_downstream_cost_z"

    @torch.no_grad()
    def collect_state(self) -> None:
        """Fold the decaying-average baseline of Pyro's param store into :attr:`average_cost`."""
        stored = pyro.get_param_store().get_state()["params"].get(self._AVERAGE_PARAM)
        if self.config.estimator == "reinforce" and self._average_in_store and stored is not None:
            self.average_cost.fill_(stored.detach().mean())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._average_in_store = False  # the loaded average is the truth, not the store's
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @torch.no_grad()
    def _sync_average_baseline(self, batch: int) -> None:
        """Keep the decaying-average baseline one number, in :attr:`average_cost`.

        ``TraceGraph_ELBO`` keeps it in Pyro's param store with the batch's shape:
        one average per position in the batch, which under shuffled minibatches is
        the same average spread over the slots, which breaks on a shorter last
        batch and which a checkpoint does not hold. Before each step the stored
        value is folded into the model's buffer (its mean) and written back at this
        batch's size, so the state is the buffer, saved and restored with the model.
        The first time after the model was built or loaded, the buffer is written
        (the store may hold another model's average: Pyro names it by the site alone).
        """
        store = pyro.get_param_store()
        shape = (batch,)
        if self._AVERAGE_PARAM in store and self._average_in_store:
            self.collect_state()
            shape = tuple(store[self._AVERAGE_PARAM].shape[:-1]) + (batch,)
        store[self._AVERAGE_PARAM] = self.average_cost.expand(shape).clone()
        self._average_in_store = True

    def generate(self, num: int, mean: bool = True) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            return super().generate(num, mean)
        finally:
            self.train(was)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the most probable code of each input."""
        with torch.no_grad():
            return self.decode(self._mode(self.encoder_logits(x))).mean


@MODELS.register("bernvae")
class BernVAE(DiscreteVAE):
    r"""VAE with ``latent_dim`` Bernoulli(1/2) latents; see :mod:`pyro_lvm.models.discrete_vae`.

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import BernVAE
        >>> from pyro_lvm.objectives import OBJECTIVES
        >>> vae = BernVAE(input_dim=12, latent_dim=4, hidden=(16,), estimator="st")
        >>> objective = OBJECTIVES.get(vae.default_objective)()
        >>> x = torch.bernoulli(torch.full((5, 12), 0.5))
        >>> objective.terms(vae.model, vae.guide, x).surrogate.backward()
        >>> bool(vae.encoder[0].weight.grad.abs().sum() > 0)   # the encoder learns
        True
    """

    Config = BernVAEConfig

    @property
    def code_shape(self):
        return (self.config.latent_dim,)

    def _exact(self, logits, validate=None):
        return dist.Bernoulli(logits=logits, validate_args=validate).to_event(1)

    def _estimator_dist(self, logits):
        c, t = self.config, self.temperature
        relaxed = {"categorical": RelaxedBernoulliCategoricalKL,
                   "concrete": dist.RelaxedBernoulli}[c.relaxed_kl]
        make = {"st": lambda: BernoulliStraightThrough(logits=logits),
                "gumbel": lambda: relaxed(t, logits=logits),
                "st-gumbel": lambda: HardRelaxedBernoulliStraightThrough(t, logits=logits)}
        return make[c.estimator]().to_event(1)

    def _relaxed_prior(self, batch):
        zeros = torch.zeros(batch, self.config.latent_dim, device=self.temperature.device)
        return dist.RelaxedBernoulli(self.temperature, logits=zeros).to_event(1)

    def _mode(self, logits):
        return (logits > 0).to(logits.dtype)


@MODELS.register("catvae")
class CatVAE(DiscreteVAE):
    r"""VAE with ``num_latents`` uniform categorical latents of ``num_classes`` (one-hot codes).

    Defaults follow Jang et al. (2016): 20 latents of 10 classes, encoder
    784-512-256, decoder 200-256-512-784.
    """

    Config = CatVAEConfig

    @property
    def code_shape(self):
        c = self.config
        return (c.num_classes,) if c.num_latents == 1 else (c.num_latents, c.num_classes)

    def _event(self, d):
        # one latent: a plain categorical, which Pyro can enumerate (it cannot enumerate a product)
        return d if self.config.num_latents == 1 else d.to_event(1)

    def _exact(self, logits, validate=None):
        return self._event(dist.OneHotCategorical(logits=logits, validate_args=validate))

    def _estimator_dist(self, logits):
        c, t = self.config, self.temperature
        relaxed = {"categorical": RelaxedOneHotCategoricalCategoricalKL,
                   "concrete": dist.RelaxedOneHotCategorical}[c.relaxed_kl]
        make = {"st": lambda: dist.OneHotCategoricalStraightThrough(logits=logits),
                "gumbel": lambda: relaxed(t, logits=logits, validate_args=False),
                "st-gumbel": lambda: HardRelaxedOneHotCategoricalStraightThrough(t, logits=logits,
                                                                                 validate_args=False)}
        return self._event(make[c.estimator]())

    def _relaxed_prior(self, batch):
        zeros = torch.zeros((batch,) + self.code_shape, device=self.temperature.device)
        return self._event(dist.RelaxedOneHotCategorical(self.temperature, logits=zeros, validate_args=False))

    def _mode(self, logits):
        return torch.nn.functional.one_hot(logits.argmax(-1), self.config.num_classes).to(logits.dtype)

    @torch.no_grad()
    def category_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded means with one categorical variable changed at a time.

        Starting from the most probable code of the single input ``x`` (shape
        ``(input_dim,)``), row :math:`i` sets latent :math:`i` to each class
        :math:`k` in turn; returns ``(num_latents * num_classes, input_dim)``.
        """
        c = self.config
        base = self._mode(self.encoder_logits(x.unsqueeze(0)))[0].reshape(c.num_latents, c.num_classes)
        codes = base.expand(c.num_latents, c.num_classes, c.num_latents, c.num_classes).clone()
        eye = torch.eye(c.num_classes, dtype=base.dtype, device=base.device)
        for i in range(c.num_latents):
            codes[i, :, i] = eye
        return self.decode(codes.reshape((-1,) + self.code_shape)).mean

    def image_grids(self, data) -> Dict[str, Any]:
        """``category_grid`` (:meth:`category_grid` at the first test image), ``num_classes`` to a row."""
        was = self.training
        self.eval()
        try:
            images = self.category_grid(data.test[0])
        finally:
            self.train(was)
        return {"category_grid": (images, "row i: latent i set to class 1..K, the others at a test image's code",
                                  self.config.num_classes)}

