r"""k-means by Lloyd's algorithm, the shallow vector-quantization baseline, and k-means++ seeding
(for the GMM's EM and the VQ-VAE's codebook); a leaf module that the models and the fitting
methods both use.

Minimises :math:`\sum_n \min_k \lVert x_n - c_k \rVert^2` by alternating
assignment and centroid updates from a k-means++ start. Used as the shallow
VQ autoencoder of the VQ-VAE paper: each input replaced by its nearest
centroid, so :math:`K` codes describe whole inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


def kmeans_plusplus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): ``k`` rows of ``x``, spread out."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator, device=generator.device).to(x.device)
    centers = [x[first[0]]]
    d2 = ((x - centers[0]) ** 2).sum(-1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            idx = torch.randint(n, (1,), generator=generator, device=generator.device).to(x.device)[0]
        else:
            idx = torch.multinomial((d2 / total).to(generator.device), 1, generator=generator).to(x.device)[0]
        centers.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(-1))
    return torch.stack(centers)


@dataclass
class KMeansResult:
    centers: torch.Tensor  #: ``(K, D)``
    inertia: float  #: mean squared distance of the training points to their centroid
    iterations: int

    def assign(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Index of the nearest centroid of each row of ``x``."""
        return torch.cat([torch.cdist(x[i:i + batch_size], self.centers).argmin(-1)
                          for i in range(0, x.shape[0], batch_size)])

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Each row of ``x`` replaced by its nearest centroid."""
        return self.centers[self.assign(x)]


def kmeans(x: torch.Tensor, k: int, max_iter: int = 100, tol: float = 1e-6,
           generator: Optional[torch.Generator] = None, batch_size: int = 4096,
           restarts: int = 1) -> KMeansResult:
    """Lloyd's k-means with k-means++ seeding; the best of ``restarts`` runs.

    An empty cluster is re-seeded at the worst-fit point.

    >>> import torch
    >>> x = torch.cat([torch.zeros(50, 2), torch.full((50, 2), 5.0)]) + 0.1 * torch.randn(100, 2)
    >>> r = kmeans(x, 2, generator=torch.Generator().manual_seed(0))
    >>> sorted(round(c) for c in r.centers[:, 0].tolist())
    [0, 5]
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (N, D), got shape {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"need 1 <= k <= N = {x.shape[0]}, got k={k}")
    if restarts < 1:
        raise ValueError(f"restarts must be positive, got {restarts}")
    generator = generator or torch.Generator().manual_seed(0)
    runs = [_lloyd(x, k, max_iter, tol, generator, batch_size) for _ in range(restarts)]
    return min(runs, key=lambda r: r.inertia)


def _lloyd(x, k, max_iter, tol, generator, batch_size) -> KMeansResult:
    centers = kmeans_plusplus(x, k, generator).clone()
    previous = float("inf")
    for it in range(1, max_iter + 1):
        labels, d2 = _assign(x, centers, batch_size)
        inertia = d2.mean().item()
        if previous - inertia <= tol * abs(inertia):  # converged: keep the centers just scored
            return KMeansResult(centers, inertia, it)
        previous = inertia
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        centers = sums / counts.clamp_min(1).unsqueeze(-1)
        for j in torch.nonzero(counts == 0).flatten().tolist():  # re-seed an empty cluster
            worst = d2.argmax()
            centers[j] = x[worst]
            d2[worst] = 0
    _, d2 = _assign(x, centers, batch_size)
    return KMeansResult(centers, d2.mean().item(), max_iter)


def _assign(x, centers, batch_size):
    labels, d2 = [], []
    for i in range(0, x.shape[0], batch_size):
        dist = torch.cdist(x[i:i + batch_size], centers) ** 2
        best = dist.min(-1)
        labels.append(best.indices)
        d2.append(best.values)
    return torch.cat(labels), torch.cat(d2)
