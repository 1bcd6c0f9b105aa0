r"""Observation models :math:`p_\theta(x \mid z)` for one data point, by name.

A decoder network outputs ``params`` numbers per data value, parameter-major
(see :func:`pyro_lvm.nn.decoder_network`); a likelihood turns them into a
distribution with one event of ``input_dim`` values:

* ``bernoulli``: logits, for binary data;
* ``gaussian``: location and softplus scale (learned, per value), for real data;
* ``discretized_logistic``: location and softplus scale of
  :class:`~pyro_lvm.distributions.DiscretizedLogistic`, for 8-bit data scaled to [0, 1]
  (a probability mass, so the NLL can be read in bits per dimension).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

import pyro.distributions as dist
import torch
from torch.nn import functional as F

from pyro_lvm.distributions import BernoulliRow, DiscretizedLogistic
from pyro_lvm.nn import ACTIVATIONS, set_output_bias
from pyro_lvm.validation import positive_int


@dataclass(frozen=True)
class Likelihood:
    """One observation model.

    :ivar params: decoder outputs per data value.
    :ivar support: what the data must be (see :meth:`~pyro_lvm.base.LatentVariableModel.check_data`).
    :ivar discrete: a probability mass (the NLL is a code length).
    :ivar make: ``(out, min_scale) -> distribution``.
    :ivar location: ``mean -> out``: the first decoder output whose distribution has mean
        (or location) ``mean`` per value, for :func:`initial_output_bias`.
    """

    params: int
    support: str
    discrete: bool
    make: Callable[[torch.Tensor, float], dist.Distribution]
    location: Callable[[torch.Tensor], torch.Tensor]


def _bernoulli(out, min_scale):
    return BernoulliRow(out)


def _gaussian(out, min_scale):
    loc, raw = out.chunk(2, dim=-1)
    return dist.Normal(loc, F.softplus(raw) + min_scale).to_event(1)


def _discretized_logistic(out, min_scale):
    loc, raw = out.chunk(2, dim=-1)
    return DiscretizedLogistic(torch.sigmoid(loc), F.softplus(raw) + min_scale).to_event(1)


def _logit(mean):
    return torch.logit(mean.clamp(1e-3, 1 - 1e-3))


LIKELIHOODS: Dict[str, Likelihood] = {
    "bernoulli": Likelihood(1, "binary", True, _bernoulli, _logit),
    "gaussian": Likelihood(2, "real", False, _gaussian, lambda mean: mean),
    "discretized_logistic": Likelihood(2, "eight_bit", True, _discretized_logistic, _logit),
}


def initial_output_bias(decoder, likelihood: Likelihood, values: torch.Tensor) -> None:
    r"""Start a decoder at the data's mean: the bias of its location output is set so that
    :math:`p(x \mid z)` has, per value, the mean of ``values`` (training rows), as Burda et
    al. initialise the IWAE's output biases to the marginal log-odds. Without it the first few
    hundred steps only learn the mean image, and in that stretch the KL term can switch the
    latent code off for good (a hierarchy or the VampPrior never recovers in 10 epochs).
    """
    set_output_bias(decoder, likelihood.location(values.float().mean(0)))


#: the data supports each likelihood's support takes (the Gaussian takes any real values)
_TAKES = {"binary": ("binary",), "eight_bit": ("eight_bit", "binary"),
          "unit_interval": ("unit_interval", "eight_bit", "binary")}


def likelihood_for(support: str, default: str) -> str:
    """``default`` if it can score data of this support, else the likelihood made for them:
    Bernoulli for binary data, the discretized logistic for 8-bit values, else the Gaussian.

    >>> likelihood_for("binary", "bernoulli"), likelihood_for("eight_bit", "bernoulli")
    ('bernoulli', 'discretized_logistic')
    >>> likelihood_for("unit_interval", "bernoulli")
    'gaussian'
    """
    own = LIKELIHOODS.get(default)
    if own is None or own.support == "real" or support in _TAKES.get(own.support, ()):
        return default
    exact = [name for name, lik in LIKELIHOODS.items() if lik.support == support]
    return exact[0] if exact else "gaussian"


def check_decoder_options(config, positive: tuple = ()) -> None:
    """Validate the options that the deep models' configs share: ``likelihood``, ``activation``,
    ``min_scale``, and the fields named in ``positive`` (whole numbers of at least 1).

    >>> from types import SimpleNamespace
    >>> check_decoder_options(SimpleNamespace(likelihood="poisson", activation="tanh", min_scale=1e-3))
    Traceback (most recent call last):
    ...
    ValueError: likelihood must be one of ['bernoulli', 'discretized_logistic', 'gaussian'], got 'poisson'
    """
    for name in positive:
        positive_int(name, getattr(config, name))
    if config.likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {sorted(LIKELIHOODS)}, got {config.likelihood!r}")
    if config.activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {config.activation!r}")
    if not config.min_scale > 0:
        raise ValueError(f"min_scale must be positive, got {config.min_scale!r}")
