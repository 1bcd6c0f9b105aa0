r"""Per-datapoint (non-amortized) variational inference for a trained model.

An amortized guide computes every point's variational parameters with one
encoder, :math:`\phi_n = f_\phi(x_n)`. The *local* guide gives each of the
:math:`N` points its own free parameters,

.. math::

    q_n(z) = \mathcal{N}\big(\mu_n, \operatorname{diag} \sigma_n^2\big)
    \quad\text{or}\quad \mathcal{N}(\mu_n, L_n L_n^\top),

in the family of the model's encoder, initialised at the encoder's output and
optimised by SVI with the model held fixed. Its optimum is the best member of
the family for each point, so it separates the two parts of the gap between
:math:`\log p(x)` and the amortized ELBO (Cremer, Li & Duvenaud 2018): see
:func:`pyro_lvm.evaluation.amortization.amortization_gap`.

The gradient is the "sticking the landing" estimator (Roeder et al. 2017; DReG
with one particle, :class:`~pyro_lvm.objectives.IWAE`), whose variance is zero
where :math:`q_n` is the exact posterior.
"""

from __future__ import annotations

import itertools
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from pyro_lvm.base import param_store_registration
from pyro_lvm.nn.functional import inverse_softplus
from pyro_lvm.objectives.iwae import IWAE

_NAMES = itertools.count()


def _gaussian_family(q) -> str:
    if isinstance(q, dist.MultivariateNormal):
        return "full"
    if isinstance(q, torch.distributions.Independent) and isinstance(q.base_dist, torch.distributions.Normal) \
            and q.reinterpreted_batch_ndims == 1:
        return "diagonal"
    return ""


class LocalGaussianGuide(nn.Module):
    """A Gaussian guide with its own parameters for each of the ``N`` rows of ``x``.

    Called like the model's guide, with those same ``N`` points (or, after
    :meth:`select`, with the selected ones).

    :param model: a trained :class:`~pyro_lvm.base.LatentVariableModel` whose encoder is a
        diagonal or full-covariance Gaussian over its one latent site.
    :param x: the data points.

    >>> import torch
    >>> from pyro_lvm.models import VAE
    >>> vae = VAE(input_dim=6, latent_dim=2, hidden=(8,))
    >>> x = torch.bernoulli(torch.full((5, 6), 0.5))
    >>> guide = LocalGaussianGuide(vae, x)
    >>> torch.allclose(guide.distribution().mean, vae.encode(x).mean)   # starts at the encoder
    True
    """

    def __init__(self, model, x: torch.Tensor):
        super().__init__()
        x = model.check_data(x)
        if len(model.latent_sites) != 1:
            raise ValueError(f"a local guide needs a model with one latent site, got {list(model.latent_sites)}")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                q = model.encode(x)
        finally:
            model.train(was_training)
        self.family = _gaussian_family(q)
        if not self.family:
            name = type(model).registry_name or type(model).__name__
            raise ValueError(f"per-datapoint inference needs a Gaussian guide (Normal or MultivariateNormal); "
                             f"{name}'s is {type(getattr(q, 'base_dist', q)).__name__}")
        self.model_ref = [model]  # not a submodule: its parameters are not the guide's
        self.site = model.latent_sites[0]
        self.name = f"{model.pyro_name}_local_{next(_NAMES)}"
        self.loc = nn.Parameter(q.mean.detach().clone())
        if self.family == "diagonal":
            self.raw_scale = nn.Parameter(inverse_softplus(q.base_dist.scale.detach().clamp_min(1e-6)).clone())
        else:
            tril = q.scale_tril.detach().expand(q.batch_shape + q.event_shape * 2)
            raw = tril.tril(-1) + torch.diag_embed(inverse_softplus(tril.diagonal(dim1=-2, dim2=-1)))
            self.raw_tril = nn.Parameter(raw.clone())

    @property
    def num_points(self) -> int:
        return self.loc.shape[0]

    def distribution(self, index: Optional[torch.Tensor] = None) -> dist.Distribution:
        """:math:`q_n(z)` for all points, or for the points ``index``; batch shape ``(N,)``."""
        def rows(t):
            return t if index is None else t[index]

        if self.family == "diagonal":
            return dist.Normal(rows(self.loc), F.softplus(rows(self.raw_scale))).to_event(1)
        raw = rows(self.raw_tril)
        tril = raw.tril(-1) + torch.diag_embed(F.softplus(raw.diagonal(dim1=-2, dim2=-1)))
        return dist.MultivariateNormal(rows(self.loc), scale_tril=tril)

    def _sample(self, x, data_size, index):
        with self.model_ref[0].data_plate(x.shape[0], data_size, x.device):
            return pyro.sample(self.site, self.distribution(index))

    def select(self, index: torch.Tensor):
        """The guide of the points ``index`` alone, as a function called like a guide (no parameters
        of its own: for evaluation in chunks)."""
        def guide(x, *, data_size=None, num_samples=None):
            if x.shape[0] != index.shape[0]:
                raise ValueError(f"the selection holds {index.shape[0]} points, got {x.shape[0]}")
            return self._sample(x, data_size, index)

        return guide

    def forward(self, x: torch.Tensor, *, data_size: Optional[int] = None, num_samples: Optional[int] = None):
        if x.shape[0] != self.num_points:
            raise ValueError(f"this local guide holds {self.num_points} points, got {x.shape[0]}; "
                             "use select(index) for a subset")
        pyro.module(self.name, self)
        return self._sample(x, data_size, None)


def fit_local_guide(model, x: torch.Tensor, steps: int = 1000, lr: float = 1e-2,
                    progress: bool = False) -> LocalGaussianGuide:
    """A :class:`LocalGaussianGuide` for ``x``, optimised by ``pyro.infer.SVI`` for ``steps``
    full-batch steps of Adam with the model held fixed (``eval()`` mode). The learning rate
    decays geometrically from ``lr`` to ``lr / 10`` at the last step, so the per-point
    optima are reached rather than circled (Pyro's ``ClippedAdam``).

    Pyro's param store is left as it was.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    guide = LocalGaussianGuide(model, x)
    x = model.check_data(x)
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:  # the model registers nothing: only the guide's parameters are stepped
        with pyro.get_param_store().scope(), param_store_registration(False), pyro.validation_enabled(False):
            optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / int(steps)), "clip_norm": 100.0})
            svi = SVI(model.model, guide, optim, IWAE(num_particles=1, gradient="dreg"))
            for _ in tqdm(range(int(steps)), desc="local guide", disable=not progress, leave=False):
                svi.step(x)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return guide
