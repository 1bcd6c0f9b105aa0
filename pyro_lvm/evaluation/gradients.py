r"""Mean, variance and bias of the encoder gradient under each discrete gradient estimator.

For a trained discrete-latent VAE and one batch :math:`x`, each estimator
:math:`e` is run ``num_draws`` times with the same parameters; from the
draws :math:`g^{(1)}, \dots, g^{(R)}` of the gradient of the loss with
respect to the encoder's parameters it reports

* ``mean_norm``: :math:`\lVert \bar g \rVert`,
* ``variance``: the total variance :math:`\sum_j \widehat{\mathrm{Var}}(g_j)`
  (trace of the covariance of one draw),
* ``snr``: :math:`\lVert \bar g \rVert / \sqrt{\text{variance}}`,
* where the latent space can be enumerated (``catvae`` with one categorical
  latent): the exact gradient of the ELBO by ``enum``, and for the
  estimators that target the ELBO (``reinforce``, ``st``, ``gumbel``,
  ``st-gumbel``) ``relative_bias`` :math:`\lVert \bar g - g^\star \rVert /
  \lVert g^\star \rVert` and ``bias_z``, the largest
  :math:`|\bar g_j - g^\star_j| / \mathrm{se}_j`: a value much above 4 says
  the estimator is biased beyond Monte Carlo error. ``vimco`` targets the
  importance-weighted bound, not the ELBO, so no bias against ``enum`` is
  reported for it.

The ``reinforce`` copy gets a freshly initialised baseline network unless the
model was trained with ``reinforce``: the baselines change the variance, not
the mean. ``gumbel`` and ``st-gumbel`` use the model's current temperature.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Dict, Optional, Sequence

import pyro
import torch

from pyro_lvm.objectives import OBJECTIVES

#: estimators whose expected gradient is the gradient of the ELBO
ELBO_TARGETS = ("reinforce", "st", "gumbel", "st-gumbel")


def _with_estimator(model, estimator: str):
    copy = type(model)(replace(model.config, estimator=estimator))
    copy.load_state_dict(model.state_dict(), strict=False)  # a baseline exists only for reinforce
    return copy.to(next(model.parameters()).device).train()


def _encoder_grad(model, objective, x) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    objective.terms(model.model, model.guide, x).surrogate.backward()
    return torch.cat([p.grad.flatten() for p in model.encoder.parameters()])


def can_enumerate(model) -> bool:
    """Whether the exact ELBO gradient is available (one categorical latent)."""
    return getattr(model.config, "num_latents", None) == 1


def gradient_diagnostics(model, x: torch.Tensor, estimators: Optional[Sequence[str]] = None,
                         num_draws: int = 100, vimco_particles: int = 5, seed: int = 0
                         ) -> Dict[str, Dict[str, float]]:
    """Per-estimator statistics of the encoder gradient on the batch ``x``.

    :param model: a :class:`~pyro_lvm.models.BernVAE` or :class:`~pyro_lvm.models.CatVAE`.
    :param estimators: default: every estimator of the model except ``enum``.
    :returns: ``{estimator: {"mean_norm", "variance", "snr", ...}}``, plus
        ``"enum": {"exact_norm"}`` where the latent can be enumerated.

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import CatVAE
        >>> from pyro_lvm.evaluation import gradient_diagnostics
        >>> m = CatVAE(input_dim=6, num_latents=1, num_classes=3, hidden=(8,))
        >>> x = torch.bernoulli(torch.full((4, 6), 0.5))
        >>> d = gradient_diagnostics(m, x, ["st", "vimco"], num_draws=5)
        >>> sorted(d), sorted(d["st"])
        (['enum', 'st', 'vimco'], ['bias_z', 'mean_norm', 'relative_bias', 'snr', 'variance'])
    """
    from pyro_lvm.models.discrete_vae import ESTIMATOR_OBJECTIVES, DiscreteVAE

    if not isinstance(model, DiscreteVAE):
        raise TypeError(f"gradient diagnostics apply to discrete-latent VAEs, got {type(model).__name__}")
    x = model.check_data(x)
    if num_draws < 2:
        raise ValueError(f"num_draws must be at least 2 to estimate a variance, got {num_draws}")
    if estimators is None:
        estimators = [e for e in ESTIMATOR_OBJECTIVES if e != "enum"]
    unknown = sorted(set(estimators) - set(ESTIMATOR_OBJECTIVES))
    if unknown:
        raise ValueError(f"unknown estimators {unknown}; expected some of {sorted(ESTIMATOR_OBJECTIVES)}")
    pyro.set_rng_seed(seed)
    results: Dict[str, Dict[str, float]] = {}
    exact = None
    if can_enumerate(model):
        m = _with_estimator(model, "enum")
        exact = _encoder_grad(m, OBJECTIVES.get("enum")(), x)
        results["enum"] = {"exact_norm": exact.norm().item()}
    with pyro.validation_enabled(False):
        for est in estimators:
            if est == "enum":
                continue
            m = _with_estimator(model, est)
            options = {"num_particles": vimco_particles} if est == "vimco" else {}
            objective = OBJECTIVES.get(m.default_objective)(**options)
            draws = torch.stack([_encoder_grad(m, objective, x) for _ in range(num_draws)])
            mean, var = draws.mean(0), draws.var(0)
            row = {"mean_norm": mean.norm().item(), "variance": var.sum().item()}
            row["snr"] = row["mean_norm"] / math.sqrt(max(row["variance"], 1e-30))
            if exact is not None and est in ELBO_TARGETS:
                se = (var / num_draws).sqrt()
                row["relative_bias"] = ((mean - exact).norm() / exact.norm().clamp_min(1e-30)).item()
                # a coordinate with no spread but an error is infinitely far off
                row["bias_z"] = ((mean - exact).abs() / se).nan_to_num(nan=0.0).max().item()
            results[est] = row
    return results


def format_table(results: Dict[str, Dict[str, float]]) -> str:
    """The diagnostics as a Markdown table."""
    lines = ["| estimator | mean norm | total variance | SNR | relative bias vs enum | bias z |",
             "|---|---|---|---|---|---|"]
    for est, r in results.items():
        if est == "enum":
            lines.append(f"| enum (exact) | {r['exact_norm']:.4g} | 0 | - | 0 | - |")
            continue
        bias = f"{r['relative_bias']:.3f}" if "relative_bias" in r else "-"
        z = f"{r['bias_z']:.1f}" if "bias_z" in r else "-"
        lines.append(f"| {est} | {r['mean_norm']:.4g} | {r['variance']:.4g} | {r['snr']:.3f} | {bias} | {z} |")
    return "\n".join(lines)
