"""The one ArviZ adapter: arviz 0.2x (Python 3.11) and arviz 1.x (Python >= 3.12).

arviz 0.2x's ``from_dict`` takes each group as a keyword and returns an
``InferenceData``; arviz 1.x's takes one dict of groups and returns an xarray
``DataTree``. Both write netCDF with ``to_netcdf`` and read it back with
``arviz.from_netcdf``. Arrays are ``(chain, draw, ...)`` for the posterior and
the log-likelihood.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch


def _major_version() -> int:
    import arviz

    return int(arviz.__version__.split(".")[0])


#: the groups :func:`to_inference_data` writes, in ArviZ's own names
GROUPS = ("posterior", "posterior_predictive", "log_likelihood", "prior", "prior_predictive", "observed_data")


def to_inference_data(posterior: Optional[Dict[str, np.ndarray]] = None,
                      log_likelihood: Optional[Dict[str, np.ndarray]] = None,
                      observed_data: Optional[Dict[str, np.ndarray]] = None,
                      dims: Optional[Dict[str, list]] = None, coords: Optional[Dict[str, list]] = None,
                      **groups: Dict[str, np.ndarray]):
    """Build ArviZ data from arrays ``(chain, draw, ...)`` (``observed_data``: no chain, draw).

    The groups are those of :data:`GROUPS`: ``posterior``, ``log_likelihood`` and
    ``observed_data`` by name, ``posterior_predictive``, ``prior`` and
    ``prior_predictive`` as keywords; ``None`` or empty groups are left out.

    >>> import numpy as np
    >>> idata = to_inference_data({"mu": np.zeros((2, 5))}, {"x": np.zeros((2, 5, 3))},
    ...                           {"x": np.zeros(3)})
    >>> sorted(group_names(idata))
    ['log_likelihood', 'observed_data', 'posterior']
    """
    import arviz

    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown ArviZ groups {unknown}; expected some of {list(GROUPS)}")
    given = dict(groups, posterior=posterior, log_likelihood=log_likelihood, observed_data=observed_data)
    groups = {name: {k: np.asarray(v) for k, v in given[name].items()} for name in GROUPS if given.get(name)}
    if _major_version() >= 1:
        return arviz.from_dict(groups, dims=dims, coords=coords)
    return arviz.from_dict(**groups, dims=dims, coords=coords)


def add_variable(idata, group: str, name: str, values: np.ndarray, dims: list, coords=None) -> None:
    """Add a variable with its own dims (no ``chain``/``draw``) to a group of ArviZ data of
    either major version, e.g. a per-point estimate beside the per-draw values."""
    import xarray

    array = xarray.DataArray(np.asarray(values), dims=dims, coords=coords)
    if hasattr(idata, "groups") and callable(idata.groups):  # arviz 0.2x InferenceData
        getattr(idata, group)[name] = array
    else:  # arviz 1.x DataTree
        idata[group][name] = array


def group_names(idata) -> list:
    """The group names of ArviZ data of either major version."""
    if hasattr(idata, "groups") and callable(idata.groups):
        return [g.strip("/") for g in idata.groups()]
    return [name for name in idata.children]


def save_netcdf(idata, path) -> None:
    """Write ArviZ data to a netCDF file readable by ``arviz.from_netcdf`` (atomically)."""
    from pyro_lvm.files import atomic_path

    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp))


def loo(idata):
    """PSIS-LOO of ArviZ data (``arviz.loo`` in 0.2x, ``arviz_stats.loo`` in 1.x)."""
    if _major_version() >= 1:
        import arviz_stats

        return arviz_stats.loo(idata)
    import arviz

    return arviz.loo(idata)



def _stored(values, support: str) -> np.ndarray:
    """An array as stored: binary data as int8, word indices as int32, the rest as float32."""
    values = values.detach().cpu()
    dtype = {"tokens": torch.int32, "binary": torch.int8}.get(support, torch.float32)
    return values.to(dtype).numpy()


def from_model(model, x, num_samples: int = 10, num_particles: int = 1000, point_index=None,
               batch_size: int = 100, progress: bool = False):
    """ArviZ data of a trained amortized model on the data points ``x``.

    Groups (one chain of ``num_samples`` draws; ``point`` indexes the rows of ``x``,
    labelled by ``point_index`` when given):

    * ``posterior``: the local latents of every point, drawn from the guide;
    * ``posterior_predictive``: the observation replicated from the model given each draw;
    * ``log_likelihood``: ``x``, :math:`\\log p(x_n \\mid z_n^{(s)})` per draw and point, and
      ``log_marginal``, the importance-sampled :math:`\\log p(x_n)` with ``num_particles``
      particles per point (its own dims: pass ``var_name="x"`` to ArviZ's ``loo``/``waic``);
    * ``prior`` and ``prior_predictive``: as many latents and observations from the prior;
    * ``observed_data``: ``x``.

    Binary observations are stored as int8, word indices as int32.

    >>> import torch
    >>> from pyro_lvm.models import VAE
    >>> vae = VAE(input_dim=6, latent_dim=2, hidden=(8,))
    >>> idata = from_model(vae, torch.bernoulli(torch.full((5, 6), 0.5)), num_samples=4, num_particles=10)
    >>> sorted(group_names(idata))
    ['log_likelihood', 'observed_data', 'posterior', 'posterior_predictive', 'prior', 'prior_predictive']
    >>> idata.posterior["z"].dims, idata.log_likelihood["log_marginal"].dims
    (('chain', 'draw', 'point', 'z_dim_0'), ('point',))
    """
    from pyro_lvm.evaluation.marginal_likelihood import log_marginal_likelihood
    from pyro_lvm.evaluation.predictive import as_evaluated, posterior_predictive, prior_predictive
    from pyro_lvm.objectives.traces import LogDensities, trace_pair

    x = model.check_data(x)
    if not model.latent_sites:
        name = type(model).registry_name or type(model).__name__
        raise ValueError(f"{name} has no latent variables: there is no posterior to export")
    n, support, obs = x.shape[0], model.data_support, model.observed_site
    per_point = x[0].numel() * model.evaluation_width * num_samples
    chunk = max(1, min(batch_size, 2**24 // per_point))
    latents = {site: [] for site in model.latent_sites}
    log_lik = []
    with as_evaluated(model):  # one vectorized guide trace per chunk: the draws and their likelihoods
        for start in range(0, n, chunk):
            model_trace, guide_trace = trace_pair(model.model, model.guide, (x[start:start + chunk],), {},
                                                  num_samples, model.max_plate_nesting)
            rows = min(chunk, n - start)
            for site in latents:
                value = guide_trace.nodes[site]["value"] if site in guide_trace.nodes else None
                if value is None or value.dim() < 2 or value.shape[1] != rows:
                    name = type(model).registry_name or type(model).__name__
                    raise ValueError(f"{name}'s guide does not draw {site!r} for every row of x (it scores "
                                     "some rows apart, e.g. labelled ones); export rows it treats alike, "
                                     "e.g. with every label unknown (-1)")
                latents[site].append(value)
            log_lik.append(LogDensities(model_trace, guide_trace).log_lik)
    latents = {site: torch.cat(v, dim=1) for site, v in latents.items()}  # (S, N, ...)
    replicated = posterior_predictive(model, x, num_samples, latents=latents)[obs]
    prior = prior_predictive(model, n, num_samples)
    marginal = log_marginal_likelihood(model.model, model.guide, x, num_particles=num_particles,
                                       max_plate_nesting=model.max_plate_nesting, progress=progress,
                                       max_elements=max(1, 2**24 // model.evaluation_width))

    def draws(values, site_support=None):  # (draw, point, ...) -> (chain, draw, point, ...)
        values = values.unsqueeze(0)
        return _stored(values, site_support) if site_support else values.detach().cpu().float().numpy()

    dims = {site: ["point"] + [f"{site}_dim_{i}" for i in range(v.dim() - 2)] for site, v in latents.items()}
    dims[obs] = ["point"] + [f"{obs}_dim_{i}" for i in range(x.dim() - 1)]
    points = list(range(n)) if point_index is None else [int(i) for i in point_index]
    idata = to_inference_data(
        posterior={site: draws(v) for site, v in latents.items()},
        posterior_predictive={obs: draws(replicated, support)},
        log_likelihood={obs: draws(torch.cat(log_lik, dim=1)).astype(np.float64)},
        prior={site: draws(prior[site]) for site in model.latent_sites},
        prior_predictive={obs: draws(prior[obs], support)},
        observed_data={obs: _stored(x, support)},
        dims=dims, coords={"point": points})
    add_variable(idata, "log_likelihood", "log_marginal", marginal.cpu().double().numpy(), ["point"],
                 coords={"point": points})
    return idata
