r"""Bayesian Gaussian mixture by NUTS, the assignment marginalized exactly.

NUTS runs on the globals of :meth:`~pyro_lvm.models.GMM.bayesian_model`;
Pyro sums the enumerated assignment out of the potential, so each step sees
the exact :math:`\log p(x \mid w, \mu, \Sigma) + \log p(w, \mu, \Sigma)`.
Chains run one after another (no multiprocessing), each from the EM solution
with jitter.

Label switching: the likelihood is invariant to permuting the components, so
draws are relabelled by sorting the components on the first coordinate of
their means, in every draw, before any summary; r-hat is then meaningful.
The pointwise log-likelihood stored for LOO is the exact marginal
:math:`\log \sum_k w_k \mathcal{N}(x_n \mid \mu_k, \Sigma_k)` per draw.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide import init_to_value

from pyro_lvm.models.gmm import GMM


def _init_values(model: GMM, jitter: float, generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """The EM solution in the Bayesian model's parametrization, means jittered."""
    with torch.no_grad():
        noise = torch.randn(model.locs.shape, generator=generator, dtype=model.locs.dtype)
        return {"weights": model.weights.detach(),
                "locs": model.locs.detach() + jitter * model.data_scale * noise,
                **model.covariance_structure.initial_values(model.covariances().detach())}


def relabel(samples: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Sort the components of every draw by the first coordinate of their means."""
    order = samples["locs"][..., 0].argsort(-1)  # (S, K)
    out = {}
    for name, value in samples.items():
        idx = order.reshape(order.shape + (1,) * (value.dim() - order.dim()))
        out[name] = torch.take_along_dim(value, idx, dim=1)
    return out


def component_scale_tril(model: GMM, samples: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The components' Cholesky factors :math:`L_k` of each draw, shape ``(S, K, D, D)``."""
    return model.covariance_structure.scale_tril_of_draws(samples, model.config.input_dim)


def pointwise_log_likelihood(model: GMM, samples: Dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Exact marginal :math:`\\log p(x_n \\mid \\text{draw})`, shape ``(S, N)``."""
    L = component_scale_tril(model, samples)  # (S, K, D, D)
    comp = dist.MultivariateNormal(samples["locs"].unsqueeze(-3), scale_tril=L.unsqueeze(-4))
    lp = comp.log_prob(x[None, :, None, :])  # (S, N, K)
    return torch.logsumexp(samples["weights"].log().unsqueeze(-2) + lp, -1)


def fit_nuts(model: GMM, x: torch.Tensor, num_samples: int = 500, warmup: int = 300, num_chains: int = 2,
             seed: int = 0, progress: bool = False, target_accept: float = 0.8):
    """Run NUTS chains; returns ``(samples by chain, pointwise log-likelihood by chain)``.

    ``samples[name]`` has shape ``(chains, draws, ...)`` after relabelling;
    the log-likelihood has shape ``(chains, draws, N)``. ``model`` should be
    fitted by EM first (chains start there) and have its data scale set.
    """
    x = model.check_data(x)
    if num_samples < 1 or warmup < 0 or num_chains < 1:
        raise ValueError("num_samples and num_chains must be positive, warmup non-negative")
    generator = torch.Generator().manual_seed(seed)
    chains, logliks = [], []
    for chain in range(num_chains):
        pyro.set_rng_seed(seed + chain)
        kernel = NUTS(model.bayesian_model, max_plate_nesting=1, target_accept_prob=target_accept,
                      init_strategy=init_to_value(values=_init_values(model, 0.05, generator)))
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, num_chains=1,
                    disable_progbar=not progress)
        mcmc.run(x)
        draws = relabel({k: v.detach() for k, v in mcmc.get_samples().items()})
        chains.append(draws)
        logliks.append(pointwise_log_likelihood(model, draws, x))
    samples = {k: torch.stack([c[k] for c in chains]) for k in chains[0]}
    return samples, torch.stack(logliks)


def to_arviz(model: GMM, samples: Dict[str, torch.Tensor], loglik: torch.Tensor, x: torch.Tensor):
    """ArviZ data with ``posterior``, ``log_likelihood`` (exact, marginal) and ``observed_data``."""
    from pyro_lvm.export.arviz import to_inference_data

    posterior = {k: v.cpu().numpy() for k, v in samples.items()}
    return to_inference_data(posterior, {"x": loglik.cpu().numpy()}, {"x": x.cpu().numpy()})


def rhat_max(samples: Dict[str, torch.Tensor]) -> float:
    """Largest split r-hat over every scalar of the posterior (``samples`` by chain)."""
    from pyro.ops.stats import split_gelman_rubin

    worst = 0.0
    for name, value in samples.items():
        r = split_gelman_rubin(value, chain_dim=0, sample_dim=1)
        r = r[torch.isfinite(r)]
        if r.numel():
            worst = max(worst, float(r.max()))
    return worst


def as_numpy(samples: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    return {k: v.cpu().numpy() for k, v in samples.items()}
