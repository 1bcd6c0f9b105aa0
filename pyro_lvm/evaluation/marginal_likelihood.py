r"""Marginal log-likelihood per data point by importance sampling.

.. math::

    \log p(x) \approx \log \frac{1}{K} \sum_{k=1}^{K}
    \frac{p(x, z_k)}{r(z_k)}, \qquad z_k \sim r,

with the proposal :math:`r = q_\phi(z \mid x)` (the guide, the usual
estimator, Burda et al. 2016) or :math:`r = p(z)` (the naive estimator, for
comparison: unbiased in :math:`p(x)` but of enormous variance in high
dimension). The estimate is a stochastic lower bound on :math:`\log p(x)`
that tightens as :math:`K` grows. The sum is accumulated over chunks of
particles with a running log-sum-exp, and data points are processed in
batches, so memory stays bounded for any :math:`K`.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import pyro
import torch
from tqdm.auto import tqdm

from pyro_lvm.objectives.traces import LogDensities, trace_pair
from pyro_lvm.validation import particle_count, positive_int

PROPOSALS = ("guide", "prior")


def importance_log_weights(model: Callable, guide: Optional[Callable], x: torch.Tensor,
                           num_particles: int, max_plate_nesting: int = 1) -> torch.Tensor:
    """Log importance weights, shape ``(num_particles, len(x))``.

    ``guide=None`` proposes from the prior: the weight is then :math:`p(x \\mid z)`.
    """
    model_trace, guide_trace = trace_pair(model, guide, (x,), {}, num_particles, max_plate_nesting)
    expected = (num_particles, x.shape[0])
    try:
        log_weight = LogDensities(model_trace, guide_trace).log_weight()
    except RuntimeError as e:  # sites in plates of other sizes than the rows: no sum point by point
        if isinstance(e, torch.cuda.OutOfMemoryError) or "size" not in str(e):
            raise
        raise ValueError(_NOT_PER_POINT.format(expected=expected, got="no shape")) from e
    if tuple(log_weight.shape) != expected:  # e.g. a plate of 1 row broadcast over the others
        raise ValueError(_NOT_PER_POINT.format(expected=expected, got=f"shape {tuple(log_weight.shape)}"))
    return log_weight


#: why importance weights cannot be per data point (the M2 model's rows, labelled and unlabelled,
#: lie in two plates: to score x alone, hide the labels, as :func:`~pyro_lvm.evaluation.evaluate` does)
_NOT_PER_POINT = ("the log importance weights should have shape {expected} (particles, rows) but have {got}: "
                  "the model's sites must lie in one plate over the rows of the data (for rows split between "
                  "plates, such as labelled and unlabelled ones, score them through evaluate(), or hide "
                  "the labels)")


def particle_chunk_size(num_points: int, point_size: int, max_elements: int) -> int:
    """Particles per chunk so that one chunk holds about ``max_elements`` values."""
    return max(1, max_elements // max(1, num_points * point_size))


@torch.no_grad()
def log_marginal_likelihood(model: Callable, guide: Optional[Callable], data: torch.Tensor,
                            num_particles: int = 1000, batch_size: int = 100,
                            proposal: str = "guide", max_elements: int = 2**24,
                            max_plate_nesting: int = 1, progress: bool = False) -> torch.Tensor:
    r"""Importance-sampling estimate of :math:`\log p(x_n)` for every row of ``data``.

    :param model: the model, called as ``model(x)``.
    :param guide: the guide, called as ``guide(x)``; ignored with ``proposal="prior"``.
    :param data: tensor of shape ``(N, ...)``.
    :param int num_particles: :math:`K`; any size, chunked internally.
    :param int batch_size: data points per batch.
    :param str proposal: ``"guide"`` or ``"prior"``.
    :param int max_elements: cap on ``particles x points x point size`` per chunk.
    :returns: tensor of shape ``(N,)``.

    >>> import torch
    >>> from pyro_lvm.models import PPCA
    >>> m = PPCA(input_dim=2, latent_dim=1)
    >>> x = torch.randn(5, 2)
    >>> m.set_exact_guide()  # a zero-variance proposal: exact for any K
    >>> est = log_marginal_likelihood(m.model, m.guide, x, num_particles=10)
    >>> torch.allclose(est, m.log_marginal(x), atol=1e-4)
    True
    """
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
    num_particles = particle_count("num_particles", num_particles)
    batch_size = positive_int("batch_size", batch_size)
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] == 0:
        raise ValueError(f"data must be a non-empty torch.Tensor of shape (num_points, ...), got "
                         f"{tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__}")
    owner = getattr(model, "__self__", None)  # a pyro_lvm model's bound method: its own data checks
    if hasattr(owner, "check_data"):
        data = owner.check_data(data, "data")
    elif data.is_floating_point() and not torch.isfinite(data).all():
        raise ValueError("data contains NaN or infinite values")
    proposal_fn = guide if proposal == "guide" else None
    out = torch.empty(data.shape[0], device=data.device)
    point_size = data[0].numel()
    starts = range(0, data.shape[0], batch_size)
    with pyro.validation_enabled(False):
        for start in tqdm(starts, desc=f"log p(x), K={num_particles}", disable=not progress,
                          leave=False):
            x = data[start:start + batch_size]
            chunk = particle_chunk_size(x.shape[0], point_size, max_elements)
            total = torch.full((x.shape[0],), -math.inf, device=data.device)
            done = 0
            while done < num_particles:
                k = min(chunk, num_particles - done)
                lw = importance_log_weights(model, proposal_fn, x, k, max_plate_nesting)
                total = torch.logaddexp(total, torch.logsumexp(lw, 0))
                done += k
            out[start:start + x.shape[0]] = total - math.log(num_particles)
    return out
