r"""Prior and posterior predictive draws, and posterior predictive checks.

For an amortized model, the *posterior predictive* of data :math:`x` replicates
each point from its own posterior approximation,

.. math::

    z^{(s)}_n \sim q_\phi(z \mid x_n), \qquad x^{\mathrm{rep}, (s)}_n \sim p_\theta(x \mid z^{(s)}_n),
    \qquad s = 1, \dots, S,

and the *prior predictive* draws :math:`z \sim p(z)`, :math:`x \sim p_\theta(x \mid z)`.
Both run the model's own ``model``/``guide`` through ``pyro.infer.Predictive``,
in ``eval()`` mode (exact discrete latents, no word dropout).

A posterior predictive check compares a statistic :math:`T` of the data with
its replicates (Gelman, Meng & Stern 1996). For a statistic with one value per
data point (an image's mean intensity, a sentence's length) the check compares
the distribution over points: the mean and the standard deviation of
:math:`T` get the posterior predictive p-value
:math:`p = \Pr\big(T(x^{\mathrm{rep}}) \ge T(x)\big)` over the :math:`S` draws.
For a statistic with one value per feature (the pixel marginals, the unigram
distribution) the discrepancy :math:`D(x) = \lVert T(x) - \bar T \rVert_1`
from the replicates' mean :math:`\bar T` is compared with the same distance of
each replicate, :math:`p = \Pr\big(D(x^{\mathrm{rep}}) \ge D(x)\big)`. A p-value
near 0 or 1 says the model does not reproduce that aspect of the data.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pyro
import torch
from pyro.infer import Predictive

from pyro_lvm.base import param_store_registration
from pyro_lvm.data.text import PAD_INDEX, lengths


@contextlib.contextmanager
def as_evaluated(model) -> Iterator[None]:
    """The model as it is evaluated: ``eval()`` mode, no gradients, no validation or registration."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), pyro.validation_enabled(False), param_store_registration(False):
            yield
    finally:
        model.train(was_training)


def prior_predictive(model, num_points: int, num_samples: int = 1) -> Dict[str, torch.Tensor]:
    """``num_samples`` draws of ``num_points`` points from the prior and the likelihood.

    :returns: ``{site: tensor}`` for the latent sites and the observed site, each of
        shape ``(num_samples, num_points, ...)``.

    >>> import torch
    >>> from pyro_lvm.models import VAE
    >>> draws = prior_predictive(VAE(input_dim=6, latent_dim=2, hidden=(8,)), num_points=4, num_samples=3)
    >>> draws["z"].shape, draws["x"].shape
    (torch.Size([3, 4, 2]), torch.Size([3, 4, 6]))
    """
    _check_counts(num_points=num_points, num_samples=num_samples)
    sites = list(model.latent_sites) + [model.observed_site]
    with as_evaluated(model):
        return Predictive(model.model, num_samples=int(num_samples), return_sites=sites)(
            num_samples=int(num_points))


def posterior_latents(model, x: torch.Tensor, num_samples: int = 1) -> Dict[str, torch.Tensor]:
    """``num_samples`` draws of the latent sites from the guide (the model's
    :meth:`~pyro_lvm.base.LatentVariableModel.predictive_guide`) for every row of ``x``,
    each of shape ``(num_samples, len(x), ...)``."""
    x = model.check_data(x)
    _check_counts(num_samples=num_samples)
    if not model.latent_sites:
        return {}
    with as_evaluated(model):
        draws = Predictive(model.predictive_guide, num_samples=int(num_samples),
                           return_sites=list(model.latent_sites))(x)
    missing = [s for s in model.latent_sites if s not in draws]
    if missing:
        name = type(model).registry_name or type(model).__name__
        raise ValueError(f"{name}'s guide does not sample {missing}: a posterior predictive needs an "
                         "amortized guide (a mixture's assignment is summed out, not sampled)")
    return draws


def posterior_predictive(model, x: torch.Tensor, num_samples: int = 1,
                         latents: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Latents from the guide for ``x``, then ``x`` replicated from the model given them.

    :param latents: draws from :func:`posterior_latents` to replicate from (default: new ones).
    :returns: ``{site: tensor}`` for the latent sites and the observed site, each of
        shape ``(num_samples, len(x), ...)``; a model without latents replicates from its prior.

    >>> import torch
    >>> from pyro_lvm.models import VAE
    >>> vae = VAE(input_dim=6, latent_dim=2, hidden=(8,))
    >>> x = torch.bernoulli(torch.full((4, 6), 0.5))
    >>> rep = posterior_predictive(vae, x, num_samples=3)
    >>> rep["z"].shape, rep["x"].shape, bool(((rep["x"] == 0) | (rep["x"] == 1)).all())
    (torch.Size([3, 4, 2]), torch.Size([3, 4, 6]), True)
    """
    x = model.check_data(x)
    latents = posterior_latents(model, x, num_samples) if latents is None else latents
    if not latents:
        draws = prior_predictive(model, x.shape[0], num_samples)
        return {model.observed_site: draws[model.observed_site]}
    with as_evaluated(model):
        replicated = Predictive(model.model, posterior_samples=latents,
                                return_sites=[model.observed_site])(None, num_samples=x.shape[0])
    return {**latents, model.observed_site: replicated[model.observed_site]}


def _check_counts(**counts) -> None:
    for name, value in counts.items():
        if value != int(value) or int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


# ----------------------------------------------------------------- the checks
@dataclass(frozen=True)
class Statistic:
    """A statistic of a data set for posterior predictive checks.

    :param str name: its key in the results.
    :param str description: what it is, for figures.
    :param str per: ``"point"`` (one value per data point, compared as a distribution)
        or ``"feature"`` (one value per coordinate or word, compared element by element).
    :param fn: ``fn(x, model) -> tensor`` of shape ``(N,)`` or ``(F,)``.
    """

    name: str
    description: str
    per: str
    fn: Callable[[torch.Tensor, object], torch.Tensor]


def _unigram(x: torch.Tensor, model) -> torch.Tensor:
    counts = torch.bincount(x.reshape(-1), minlength=model.input_dim).to(torch.float64)
    counts[PAD_INDEX] = 0.0
    return counts / counts.sum().clamp_min(1.0)


VECTOR_STATISTICS = (
    Statistic("mean_intensity", "mean of each data point's values (an image's mean intensity)", "point",
              lambda x, model: x.reshape(x.shape[0], -1).to(torch.float64).mean(-1)),
    Statistic("pixel_marginals", "mean of each coordinate over the data points (pixel marginals)", "feature",
              lambda x, model: x.reshape(x.shape[0], -1).to(torch.float64).mean(0)),
)
TEXT_STATISTICS = (
    Statistic("sentence_length", "words per sentence, <eos> included", "point",
              lambda x, model: lengths(x).to(torch.float64)),
    Statistic("unigram", "frequency of each vocabulary word", "feature", _unigram),
)
#: the default statistics for each kind of data (a model's ``data_support``)
STATISTICS: Dict[str, Sequence[Statistic]] = {"tokens": TEXT_STATISTICS, "binary": VECTOR_STATISTICS,
                                              "unit_interval": VECTOR_STATISTICS, "eight_bit": VECTOR_STATISTICS,
                                              "real": VECTOR_STATISTICS}


def _p_value(replicated: torch.Tensor, observed: float) -> float:
    return float((replicated >= observed).to(torch.float64).mean())


def _summary(observed: float, replicated: torch.Tensor) -> Dict[str, float]:
    return {"observed": float(observed), "replicated_mean": float(replicated.mean()),
            "replicated_sd": float(replicated.std()) if replicated.numel() > 1 else 0.0,
            "p_value": _p_value(replicated, observed)}


def posterior_predictive_check(model, x: torch.Tensor, num_samples: int = 20,
                               statistics: Optional[Sequence[Statistic]] = None,
                               replicated: Optional[torch.Tensor] = None) -> Dict[str, object]:
    """Compare statistics of ``x`` with those of its posterior predictive replicates.

    :param statistics: default: :data:`STATISTICS` for the model's kind of data.
    :param replicated: replicates of ``x`` to use, shape ``(S, len(x), ...)`` (default: drawn
        with :func:`posterior_predictive`).
    :returns: ``{"num_samples", "num_points", "statistics": {name: {"description", "per",
        "observed", "replicated", "summaries": {summary: {"observed", "replicated_mean",
        "replicated_sd", "p_value"}}}}}``; ``observed`` and ``replicated`` are tensors
        (see :func:`check_summary` for the numbers alone).

    >>> import torch
    >>> from pyro_lvm.models import VAE
    >>> vae = VAE(input_dim=6, latent_dim=2, hidden=(8,))
    >>> x = torch.bernoulli(torch.full((50, 6), 0.5))
    >>> check = posterior_predictive_check(vae, x, num_samples=10)
    >>> sorted(check["statistics"]), sorted(check["statistics"]["mean_intensity"]["summaries"])
    (['mean_intensity', 'pixel_marginals'], ['mean', 'sd'])
    """
    x = model.check_data(x)
    if x.shape[0] < 2:
        raise ValueError("a predictive check needs at least two data points")
    statistics = STATISTICS[model.data_support] if statistics is None else statistics
    if replicated is None:
        replicated = posterior_predictive(model, x, num_samples)[model.observed_site]
    results: Dict[str, object] = {}
    values = model.observed_values(x)  # without a label column
    for stat in statistics:
        observed = stat.fn(values, model).cpu()
        reps = torch.stack([stat.fn(r, model).cpu() for r in replicated])
        if stat.per == "point":
            summaries = {"mean": _summary(observed.mean(), reps.mean(-1)),
                         "sd": _summary(observed.std(), reps.std(-1))}
        else:
            centre = reps.mean(0)
            summaries = {"l1_distance": _summary((observed - centre).abs().sum(),
                                                 (reps - centre).abs().sum(-1))}
        results[stat.name] = {"description": stat.description, "per": stat.per, "observed": observed,
                              "replicated": reps, "summaries": summaries}
    return {"num_samples": int(replicated.shape[0]), "num_points": int(x.shape[0]), "statistics": results}


def check_summary(check: Dict[str, object]) -> Dict[str, object]:
    """The numbers of :func:`posterior_predictive_check`, without the arrays (JSON-ready)."""
    return {"num_samples": check["num_samples"], "num_points": check["num_points"],
            "statistics": {name: {"description": s["description"], "per": s["per"],
                                  "summaries": s["summaries"]}
                           for name, s in check["statistics"].items()}}


def extreme_p_values(check: Dict[str, object], level: float = 0.01) -> List[str]:
    """The summaries whose p-value is below ``level`` or above ``1 - level``."""
    return [f"{name}.{summary}" for name, s in check["statistics"].items()
            for summary, v in s["summaries"].items() if not level <= v["p_value"] <= 1 - level]


__all__ = ["STATISTICS", "Statistic", "check_summary", "extreme_p_values", "posterior_latents",
           "posterior_predictive", "posterior_predictive_check", "prior_predictive"]

