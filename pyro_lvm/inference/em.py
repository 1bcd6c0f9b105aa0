r"""Expectation-maximization for the Gaussian mixture, in closed form, in torch.

E step: responsibilities :math:`r_{nk} = w_k \mathcal{N}(x_n \mid \mu_k,
\Sigma_k) / \sum_j w_j \mathcal{N}(x_n \mid \mu_j, \Sigma_j)`.

M step, with :math:`N_k = \sum_n r_{nk}`:

.. math::

    w_k = N_k / N, \qquad \mu_k = \frac{1}{N_k} \sum_n r_{nk} x_n, \qquad
    \Sigma_k = \frac{1}{N_k} \sum_n r_{nk} (x_n - \mu_k)(x_n - \mu_k)^\top + \epsilon I,

(diagonal: keep the diagonal; spherical: its mean), with the floor
:math:`\epsilon` = ``reg_covar``. Each iteration cannot decrease the mean
log-likelihood :math:`\frac1N \sum_n \log p(x_n)` (up to the floor); EM stops
when it changes by less than ``tol``. Batched over points on any device;
initialized by k-means++ with several restarts, keeping the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from pyro_lvm.clustering import kmeans_plusplus
from pyro_lvm.models.covariance import COVARIANCES
from pyro_lvm.models.gmm import GMM


@dataclass
class EMResult:
    """Outcome of :func:`fit_em`: the best restart's parameters and log-likelihood trace."""

    weights: torch.Tensor
    locs: torch.Tensor
    covariances: torch.Tensor
    loglik_per_point: float
    iterations: int
    converged: bool
    history: List[float] = field(default_factory=list)
    restart_logliks: List[float] = field(default_factory=list)
    degenerate_restarts: int = 0


def _log_gauss(x, locs, covariances):
    """:math:`\\log \\mathcal{N}(x_n \\mid \\mu_k, \\Sigma_k)`, shape ``(N, K)``, via Cholesky."""
    L = torch.linalg.cholesky(covariances)  # (K, D, D)
    D = x.shape[-1]
    diff = (x.unsqueeze(0) - locs.unsqueeze(1)).transpose(-1, -2)  # (K, D, N)
    sol = torch.linalg.solve_triangular(L, diff, upper=False)  # (K, D, N)
    maha = (sol**2).sum(-2).T  # (N, K)
    log_det = 2 * torch.log(L.diagonal(dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (D * math.log(2 * math.pi) + log_det + maha)


def _m_step(x, resp, covariance: str, reg: float):
    nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps
    weights = nk / x.shape[0]
    locs = (resp.T @ x) / nk[:, None]
    return weights, locs, COVARIANCES[covariance].m_step(x, resp, locs, nk, reg)


def _e_step(x, weights, locs, cov):
    log_joint = weights.log() + _log_gauss(x, locs, cov)
    log_norm = torch.logsumexp(log_joint, -1)
    return torch.exp(log_joint - log_norm[:, None]), log_norm.mean().item()


def _run(x, k, covariance, reg, tol, max_iter, generator):
    centers = kmeans_plusplus(x, k, generator)
    resp = torch.zeros(x.shape[0], k, dtype=x.dtype, device=x.device)
    resp[torch.arange(x.shape[0], device=x.device), torch.cdist(x, centers).argmin(-1)] = 1.0
    params = _m_step(x, resp, covariance, reg)
    history, converged = [], False
    prev = -math.inf
    it = 0
    for it in range(1, max_iter + 1):
        resp, ll = _e_step(x, *params)
        history.append(ll)
        if abs(ll - prev) < tol:
            converged = True
            break
        prev = ll
        params = _m_step(x, resp, covariance, reg)
    else:  # the cap was hit: report the log-likelihood of the parameters returned
        _, ll = _e_step(x, *params)
        history.append(ll)
    return params, ll, it, converged, history


def is_degenerate(covariances: torch.Tensor, reg_covar: float) -> bool:
    """A component collapsed onto a subspace: its smallest variance sits at the floor.

    Such solutions have an unbounded likelihood in the limit (a Gaussian on a
    few coincident or collinear points) and are artefacts, not fits.
    """
    floor = max(reg_covar, 1e-12)
    return bool((torch.linalg.eigvalsh(covariances).min(-1).values <= 10 * floor).any())


@torch.no_grad()
def fit_em(model: GMM, x: torch.Tensor, restarts: int = 1, tol: float = 1e-3, max_iter: int = 100,
           seed: int = 0, dtype: Optional[torch.dtype] = torch.float64,
           allow_degenerate: bool = False) -> EMResult:
    """Fit ``model``'s globals by EM and set them; returns the best restart.

    :param model: a :class:`~pyro_lvm.models.GMM`; its ``components``,
        ``covariance`` and ``reg_covar`` are used.
    :param x: data, shape ``(N, D)``, on any device.
    :param int restarts: k-means++ initializations; the highest final
        log-likelihood wins.
    :param float tol: stop when the mean log-likelihood changes by less.
    :param int max_iter: iterations per restart at most.
    :param dtype: computation dtype (float64 by default, as scikit-learn).
    :param bool allow_degenerate: keep restarts in which a component collapsed
        onto a subspace (:func:`is_degenerate`); by default the best
        non-degenerate restart wins, and a ``ValueError`` says so when every
        restart degenerated.

    >>> import torch
    >>> from pyro_lvm.models import GMM
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.cat([torch.randn(200, 2, generator=g) - 4, torch.randn(200, 2, generator=g) + 4])
    >>> gmm = GMM(input_dim=2, components=2)
    >>> result = fit_em(gmm, x, restarts=2)
    >>> result.converged, sorted(result.weights.round(decimals=1).tolist())
    (True, [0.5, 0.5])
    """
    x = model.check_data(x)
    if restarts < 1 or max_iter < 1 or not tol > 0:
        raise ValueError("restarts and max_iter must be positive and tol > 0")
    work = x.to(dtype) if dtype is not None else x
    c = model.config
    generator = torch.Generator(device="cpu").manual_seed(seed)
    runs, degenerate, singular = [], [], 0
    for _ in range(restarts):
        try:
            run = _run(work, c.components, c.covariance, c.reg_covar, tol, max_iter, generator)
        except torch.linalg.LinAlgError:  # a covariance became singular: the restart degenerated
            singular += 1
            continue
        runs.append(run)
        degenerate.append(is_degenerate(run[0][2], c.reg_covar))
    candidates = [r for r, bad in zip(runs, degenerate) if allow_degenerate or not bad]
    if not candidates:
        raise ValueError(f"every one of the {restarts} EM restart(s) collapsed a component onto a few "
                         f"coincident or collinear points (an unbounded likelihood, not a fit): use fewer "
                         f"components than {c.components}, a larger covariance floor (reg_covar "
                         f"{c.reg_covar:g}) or more restarts")
    (weights, locs, cov), ll, it, converged, history = max(candidates, key=lambda r: r[1])
    model.set_parameters(weights, locs, cov)
    model.set_data_scale(x)
    return EMResult(weights.to(x.dtype), locs.to(x.dtype), cov.to(x.dtype), ll, it, converged, history,
                    [r[1] for r in runs], sum(degenerate) + singular)
