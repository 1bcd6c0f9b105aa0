r"""The ELBO with the KL term in closed form, Pyro's ``TraceMeanField_ELBO``.

.. math::

    \mathcal{L}(x) = \mathbb{E}_{q_\phi(z \mid x)}[\log p_\theta(x \mid z)]
    - \beta a(t)\, \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big),

with the KL computed exactly wherever ``torch.distributions.kl_divergence``
knows the pair (Gaussian vs Gaussian, categorical vs categorical, ...) and
estimated by one sample otherwise. Lower variance than :class:`ELBO`; every
guide site must be reparameterizable.
"""

from __future__ import annotations

from pyro.infer import TraceMeanField_ELBO

from pyro_lvm.objectives.base import OBJECTIVES
from pyro_lvm.objectives.checks import MEANFIELD_REPARAM, Traits
from pyro_lvm.objectives.elbo import ELBO


@OBJECTIVES.register("meanfield")
class MeanFieldELBO(ELBO):
    """Negative ELBO with analytic KL; same options as :class:`~pyro_lvm.objectives.ELBO`.

    >>> import torch
    >>> from pyro_lvm.models import VAE
    >>> vae = VAE(input_dim=4, latent_dim=2, hidden=(8,))
    >>> x = torch.bernoulli(torch.full((3, 4), 0.5))
    >>> MeanFieldELBO(free_bits=0.1).terms(vae.model, vae.guide, x).loss.isfinite().item()
    True
    """

    analytic_kl = True
    _pyro_elbo_class = TraceMeanField_ELBO
    traits = Traits("objective 'meanfield'", analytic_kl=True, reparam_only=MEANFIELD_REPARAM,
                    guide_factors=False)
