r"""The Monte Carlo ELBO, Pyro's ``Trace_ELBO``.

.. math::

    \mathcal{L}(x) = \mathbb{E}_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)
    + \beta a(t) (\log p(z) - \log q_\phi(z \mid x))\big]
    \le \log p_\theta(x) \quad (\beta a(t) = 1),

estimated with reparameterized samples (score-function terms for sites
without ``rsample``). With ``free_bits`` the KL part is replaced by
:func:`~pyro_lvm.objectives.free_bits.free_bits_kl` of the per-dimension KL,
in closed form where one exists (see :mod:`pyro_lvm.objectives.free_bits`).
"""

from __future__ import annotations

from typing import Optional

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.util import is_identically_zero
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence

from pyro_lvm.objectives.annealing import Schedule
from pyro_lvm.objectives.base import OBJECTIVES, LossTerms, Objective
from pyro_lvm.objectives.checks import Traits
from pyro_lvm.objectives.free_bits import free_bits_loss
from pyro_lvm.objectives.kl_weight import weight_latents
from pyro_lvm.objectives.traces import sample_sites, site_log_prob, trace_pair


def _pyro_particle_terms(pyro_elbo, model_trace, guide_trace, num_particles: int):
    """Pyro's per-particle loss and surrogate (``TraceMeanField_ELBO``) on traces already
    recorded: score-function terms, Rao-Blackwellized over plates, analytic KLs."""
    model_trace, guide_trace = prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_score_parts()
    loss, surrogate = pyro_elbo._differentiable_loss_particle(model_trace, guide_trace)
    loss = torch.as_tensor(loss, dtype=surrogate.dtype, device=surrogate.device)
    return loss / num_particles, surrogate / num_particles


def score_function_terms_from_traces(model_trace, guide_trace, num_particles: int = 1):
    r"""``Trace_ELBO``'s loss and surrogate on traces with guide sites that have no ``rsample``:

    .. math::

        \text{loss} = -\Big(\sum_{\text{model}} \log p - \sum_{\text{guide}} \log q\Big), \qquad
        \text{surrogate} = -\Big(\sum_{\text{model}} \log p - \sum_{s\,\text{reparam.}} \log q_s
        + \sum_{s\,\text{not}} \bar{r}_s \log q_s\Big),

    each term scaled and summed over its site; the score :math:`\log q_s` of a site without
    ``rsample`` is weighted by :math:`\bar{r}_s`, the detached :math:`\log p - \log q` of all the
    sites summed down to the plates of :math:`s` (Pyro's ``score_parts`` and ``_compute_log_r``).
    These are ``Trace_ELBO._differentiable_loss_particle``'s numbers, except that the loss stays a
    tensor: Pyro adds it up site by site as Python numbers (``torch_item``), a host
    synchronisation per site and step.
    """
    model_trace, guide_trace = prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_score_parts()
    elbo = surrogate = 0.0
    for site in sample_sites(model_trace).values():
        elbo = elbo + site["log_prob_sum"].detach()
        surrogate = surrogate + site["log_prob_sum"]
    log_r = None
    for site in sample_sites(guide_trace).values():
        _, score_function_term, entropy_term = site["score_parts"]
        elbo = elbo - site["log_prob_sum"].detach()
        if not is_identically_zero(entropy_term):
            surrogate = surrogate - entropy_term.sum()
        if not is_identically_zero(score_function_term):
            if log_r is None:
                log_r = _compute_log_r(model_trace, guide_trace)
            surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * score_function_term).sum()
    return -elbo / num_particles, -surrogate / num_particles


def elbo_terms_from_traces(model_trace, guide_trace, num_particles: int = 1, analytic_kl: bool = False):
    r"""The negative ELBO of traces whose guide sites all have ``rsample``: the scaled log
    densities summed, as ``Trace_ELBO`` does, without its generic bookkeeping (score-function
    terms, shape checks), which costs about 15% of a small VAE's step. With ``analytic_kl``
    each latent's :math:`\log p(z) - \log q(z)` is replaced by its KL term in closed form where
    ``kl_divergence`` knows the pair, as ``TraceMeanField_ELBO`` does, without reading the value
    on the host (Pyro's ``torch_item``: a synchronisation per step that also keeps the loss from
    being recorded, :mod:`pyro_lvm.traced`)."""
    guide_sites = sample_sites(guide_trace)
    closed = {}  # latent name -> its closed-form KL, masked and scaled
    for name, q in guide_sites.items() if analytic_kl else ():
        if q["is_observed"] or name not in model_trace.nodes:
            continue
        try:
            kl = kl_divergence(q["fn"], model_trace.nodes[name]["fn"])
        except NotImplementedError:  # sampled: log p(z) - log q(z) at the guide's draw
            continue
        mask = q.get("mask")
        if isinstance(mask, torch.Tensor):
            kl = torch.where(mask, kl, torch.zeros_like(kl))
        closed[name] = q["scale"] * kl.sum() if mask is not False else 0.0
    elbo = 0.0
    for name, site in sample_sites(model_trace).items():
        if name in closed:
            elbo = elbo - closed[name]
        else:
            elbo = elbo + site["scale"] * site_log_prob(site).sum()
    for name, site in guide_sites.items():  # a guide factor adds to the loss too
        if name not in closed:
            elbo = elbo - site["scale"] * site_log_prob(site).sum()
    return -elbo / num_particles


@OBJECTIVES.register("elbo")
class ELBO(Objective):
    """Negative ELBO by ``pyro.infer.Trace_ELBO``, with beta, annealing and free bits.

    :param int num_particles: samples per data point (vectorized).
    :param float beta: KL weight.
    :param annealing: KL annealing schedule.
    :param free_bits: the KL floor of free bits in nats per latent dimension, or ``None``.

    >>> import torch
    >>> from pyro_lvm.models import PPCA
    >>> m = PPCA(input_dim=2, latent_dim=1)
    >>> terms = ELBO(beta=0.5).terms(m.model, m.guide, torch.randn(10, 2), data_size=100)
    >>> terms.loss.shape
    torch.Size([])
    """

    analytic_kl = False
    _pyro_elbo_class = Trace_ELBO
    traits = Traits("objective 'elbo'")
    not_replayable = None  # a function of parameters, data, noise and KL weight

    def __init__(self, num_particles: int = 1, beta: float = 1.0,
                 annealing: Optional[Schedule] = None, free_bits: Optional[float] = None,
                 max_plate_nesting: int = 1):
        super().__init__(beta, annealing, max_plate_nesting, num_particles)
        if free_bits is not None and not free_bits >= 0:
            raise ValueError(f"free_bits must be non-negative, got {free_bits}")
        self.free_bits = free_bits
        if free_bits is not None:  # closed-form KL per dimension: reparameterized latents only
            self.traits = Traits(f"{self.traits.name} with free bits", analytic_kl=True,
                                 reparam_only="free bits clamps the closed-form KL of reparameterized latents: "
                                 "use VIMCO or objective 'tracegraph' without free bits")
        self._elbo = self._pyro_elbo_class(
            num_particles=self.num_particles,
            vectorize_particles=self.num_particles > 1,
            max_plate_nesting=self.max_plate_nesting,
        )

    def loss_terms(self, model, guide, args, kwargs, kl_weight):
        if self.free_bits is not None:
            loss = free_bits_loss(model, guide, args, kwargs, kl_weight, self.free_bits,
                                  self.num_particles, self.max_plate_nesting)
            return LossTerms(loss.detach(), loss)
        # one guide trace and one model trace, the KL weight on the latent sites' scale
        vectorized = self.num_particles if self.num_particles > 1 else None
        model_trace, guide_trace = trace_pair(weight_latents(model, kl_weight), weight_latents(guide, kl_weight),
                                              args, kwargs, vectorized, self.max_plate_nesting)
        if all(s["fn"].has_rsample for s in sample_sites(guide_trace).values()):
            loss = elbo_terms_from_traces(model_trace, guide_trace, self.num_particles, self.analytic_kl)
            return LossTerms(loss.detach(), loss)
        # a site scored by its score function: Trace_ELBO's estimator on these traces (Pyro's own
        # where KLs are closed-form)
        if not self.analytic_kl:
            return LossTerms(*score_function_terms_from_traces(model_trace, guide_trace, self.num_particles))
        return LossTerms(*_pyro_particle_terms(self._elbo, model_trace, guide_trace, self.num_particles))
