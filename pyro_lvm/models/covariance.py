r"""The covariance structures of the Gaussian mixture: ``full``, ``diag`` and ``spherical``.

A structure says everything that depends on the shape of the covariances
:math:`\Sigma_k = L_k L_k^\top` of the :math:`K` components in :math:`D` dimensions:

* how the fitted model holds them unconstrained (``raw``), and the Cholesky
  factors :math:`L_k` that ``raw`` gives, with the floor :math:`\sqrt{r}`
  (``reg_covar`` :math:`r`) added to every standard deviation;
* EM's M-step: the weighted covariance of the data under the responsibilities,
  restricted to the structure, plus :math:`r I`;
* the Bayesian model's prior on :math:`L_k` (inside the ``components`` plate)
  and the values that start NUTS at a fitted model.

=============  ====================================  ==========================================
structure      :math:`\Sigma_k`                      ``raw``
=============  ====================================  ==========================================
``full``       any positive definite matrix          :math:`L_k` below the diagonal, inverse
                                                     softplus on it
``diag``       :math:`\mathrm{diag}(\sigma_k^2)`     :math:`\log \sigma_k`, shape ``(K, D)``
``spherical``  :math:`\sigma_k^2 I`                  :math:`\log \sigma_k`, shape ``(K,)``
=============  ====================================  ==========================================

.. doctest::

    >>> import torch
    >>> from pyro_lvm.models.covariance import COVARIANCES
    >>> diag = COVARIANCES["diag"]
    >>> raw = diag.raw_from(torch.diag_embed(torch.tensor([[4.0, 9.0]])), floor=0.0)
    >>> diag.scale_tril(raw, floor=0.0, dim=2)
    tensor([[[2., 0.],
             [0., 3.]]])
"""

from __future__ import annotations

from typing import Dict

import pyro
import pyro.distributions as dist
import torch

from pyro_lvm.nn.functional import inverse_softplus

__all__ = ["COVARIANCES", "CovarianceStructure", "Diagonal", "Full", "Spherical"]


def _standard_deviations(covariances: torch.Tensor) -> torch.Tensor:
    return covariances.diagonal(dim1=-2, dim2=-1).sqrt()


class CovarianceStructure:
    """What one covariance structure fixes; see the module docstring."""

    name: str

    def raw_init(self, components: int, dim: int) -> torch.Tensor:
        """``raw`` of identity covariances (before the floor)."""
        raise NotImplementedError

    def free_parameters(self, dim: int) -> int:
        """Free parameters of one component's covariance in ``dim`` dimensions (for the BIC)."""
        raise NotImplementedError

    def scale_tril(self, raw: torch.Tensor, floor: float, dim: int) -> torch.Tensor:
        """The Cholesky factors :math:`L_k` that ``raw`` holds, shape ``(K, D, D)`` with ``D = dim``,
        every standard deviation raised by ``floor``."""
        raise NotImplementedError

    def raw_from(self, covariances: torch.Tensor, floor: float) -> torch.Tensor:
        """``raw`` that gives back ``covariances`` (shape ``(K, D, D)``) with the floor ``floor``
        (:math:`\\sqrt{r}`); a structure coarser than the matrices keeps what it can hold."""
        raise NotImplementedError

    def m_step(self, x: torch.Tensor, resp: torch.Tensor, locs: torch.Tensor, counts: torch.Tensor,
               reg: float) -> torch.Tensor:
        """EM's covariances, shape ``(K, D, D)``: the data's covariance about ``locs`` weighted by
        the responsibilities ``resp`` (``(N, K)``, column sums ``counts``), plus ``reg`` :math:`I`."""
        var = (resp.T @ (x * x)) / counts[:, None] - locs ** 2
        return torch.diag_embed(self._pool(var.clamp_min(0) + reg))

    def _pool(self, variances: torch.Tensor) -> torch.Tensor:
        return variances

    def sample_scale_tril(self, loc: torch.Tensor, scale: torch.Tensor, lkj_concentration: float) -> torch.Tensor:
        """Sample :math:`L_k` from its prior, inside the ``components`` plate: standard deviations
        log-normal about the data's ``scale`` (and an LKJ correlation where the structure has one)."""
        return torch.diag_embed(self._sample_scales(scale))

    @staticmethod
    def _sample_scales(scale: torch.Tensor) -> torch.Tensor:
        """Each coordinate's standard deviation, log-normal about the data's ``scale``."""
        return pyro.sample("scales", dist.LogNormal(scale.log(), 1.0).to_event(1))

    def initial_values(self, covariances: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The prior's sites at ``covariances`` (to start NUTS at a fitted model)."""
        return {"scales": _standard_deviations(covariances)}

    def scale_tril_of_draws(self, draws: Dict[str, torch.Tensor], dim: int) -> torch.Tensor:
        """:math:`L_k` of posterior draws of :meth:`sample_scale_tril`'s sites."""
        return torch.diag_embed(draws["scales"])


class Full(CovarianceStructure):
    """Any covariance: :math:`L_k` free below the diagonal, positive on it (softplus)."""

    name = "full"

    def free_parameters(self, dim):
        return dim * (dim + 1) // 2

    def raw_init(self, components, dim):
        raw = torch.zeros(components, dim, dim)
        raw.diagonal(dim1=-2, dim2=-1).fill_(inverse_softplus(torch.tensor(1.0)).item())  # softplus(raw) = 1
        return raw

    def scale_tril(self, raw, floor, dim):
        diag = torch.nn.functional.softplus(raw.diagonal(dim1=-2, dim2=-1)) + floor
        return raw.tril(-1) + torch.diag_embed(diag)

    def raw_from(self, covariances, floor):
        L = torch.linalg.cholesky(covariances)
        diag = (L.diagonal(dim1=-2, dim2=-1) - floor).clamp_min(1e-12)
        return L.tril(-1) + torch.diag_embed(inverse_softplus(diag))

    def m_step(self, x, resp, locs, counts, reg):
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        covs = []
        for k in range(resp.shape[1]):
            diff = x - locs[k]
            covs.append((resp[:, k:k + 1] * diff).T @ diff / counts[k])
        return torch.stack(covs) + reg * eye

    def sample_scale_tril(self, loc, scale, lkj_concentration):
        tau = self._sample_scales(scale)
        if scale.shape[-1] == 1:  # one dimension: no correlation to sample
            return torch.diag_embed(tau)
        omega = pyro.sample("corr_cholesky", dist.LKJCholesky(
            scale.shape[-1], torch.tensor(lkj_concentration, dtype=loc.dtype, device=loc.device)))
        return tau[..., :, None] * omega

    def initial_values(self, covariances):
        std = _standard_deviations(covariances)
        values = {"scales": std}
        if covariances.shape[-1] > 1:
            values["corr_cholesky"] = torch.linalg.cholesky(covariances / (std[..., :, None] * std[..., None, :]))
        return values

    def scale_tril_of_draws(self, draws, dim):
        if "corr_cholesky" not in draws:  # one dimension
            return super().scale_tril_of_draws(draws, dim)
        return draws["scales"][..., :, None] * draws["corr_cholesky"]


class Diagonal(CovarianceStructure):
    """Independent coordinates: :math:`\\Sigma_k = \\mathrm{diag}(\\sigma_k^2)`."""

    name = "diag"

    def free_parameters(self, dim):
        return dim

    def raw_init(self, components, dim):
        return torch.zeros(components, dim)

    def scale_tril(self, raw, floor, dim):
        return torch.diag_embed(raw.exp() + floor)

    def raw_from(self, covariances, floor):
        return (_standard_deviations(covariances) - floor).clamp_min(1e-12).log()


class Spherical(CovarianceStructure):
    """One variance per component: :math:`\\Sigma_k = \\sigma_k^2 I`."""

    name = "spherical"

    def free_parameters(self, dim):
        return 1

    def raw_init(self, components, dim):
        return torch.zeros(components)

    def scale_tril(self, raw, floor, dim):
        eye = torch.eye(dim, dtype=raw.dtype, device=raw.device)
        return (raw.exp() + floor)[:, None, None] * eye.expand(raw.shape[0], dim, dim)

    def raw_from(self, covariances, floor):
        return (_standard_deviations(covariances) - floor).clamp_min(1e-12).mean(-1).log()

    def _pool(self, variances):
        return variances.mean(-1, keepdim=True).expand_as(variances)

    def sample_scale_tril(self, loc, scale, lkj_concentration):
        tau = pyro.sample("scales", dist.LogNormal(scale.log().mean(), 1.0))
        return tau[..., None, None] * torch.eye(scale.shape[-1], dtype=loc.dtype, device=loc.device)

    def initial_values(self, covariances):
        return {"scales": _standard_deviations(covariances).mean(-1)}

    def scale_tril_of_draws(self, draws, dim):
        tau = draws["scales"]
        return tau[..., None, None] * torch.eye(dim, dtype=tau.dtype, device=tau.device)


#: name -> structure
COVARIANCES: Dict[str, CovarianceStructure] = {s.name: s for s in (Full(), Diagonal(), Spherical())}
