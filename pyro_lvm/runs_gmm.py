"""Gaussian-mixture runs from a CSV file: fit by EM, SVI or NUTS (:data:`MIXTURE_FITS`); choose K.

A run folder holds ``config.json``, ``checkpoint.pt`` (the fitted globals),
``params.json``, ``assignments.csv`` (responsibilities and MAP assignment of
every row), ``metrics.json``, ``scatter.png`` and, for NUTS,
``posterior.nc`` (ArviZ: ``posterior``, ``log_likelihood``, ``observed_data``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import pyro
import torch

from pyro_lvm import __version__
from pyro_lvm.checkpoint import save_checkpoint
from pyro_lvm.files import atomic_write, claim_output_folder, write_json
from pyro_lvm.data.tabular import read_csv_table
from pyro_lvm.inference.em import fit_em
from pyro_lvm.models.covariance import COVARIANCES
from pyro_lvm.models.gmm import GMM
from pyro_lvm.objectives.enum import EnumELBO
from pyro_lvm.plotting import mixture_scatter, selection_curve
from pyro_lvm.registry import Registry
from pyro_lvm.train import TrainConfig, Trainer

#: How a mixture is fitted, by name. EM's maximum-likelihood solution starts every method; the
#: method's function ``(model, x, out, **settings) -> (total log-likelihood, metrics of its own)``
#: takes the model from there, leaves in it the point estimate the run reports, and returns the
#: log-likelihood that the BIC scores.
MIXTURE_FITS: Registry = Registry("fitting method")


def _log_likelihood(model: GMM, x: torch.Tensor) -> float:
    with torch.no_grad():
        return model.log_likelihood(x).sum().item()


@MIXTURE_FITS.register("em")
def fit_by_em(model: GMM, x: torch.Tensor, out: Path, **settings: Any):
    """EM's maximum-likelihood globals, as they are."""
    return _log_likelihood(model, x), {}


@MIXTURE_FITS.register("svi")
def fit_by_svi(model: GMM, x: torch.Tensor, out: Path, *, svi_steps: int, lr: float, seed: int, progress: bool,
               **settings: Any):
    """``svi_steps`` full-batch steps of Adam on the ELBO with the assignment enumerated (the exact
    log-likelihood, :class:`~pyro_lvm.objectives.enum.EnumELBO`), from EM's solution."""
    trainer = Trainer(model, EnumELBO(), x, config=TrainConfig(
        epochs=svi_steps, batch_size=x.shape[0], lr=lr, seed=seed, progress=progress), run_dir=None)
    trainer.fit()
    return _log_likelihood(model, x), {"svi_steps": trainer.step}


@MIXTURE_FITS.register("nuts")
def fit_by_nuts(model: GMM, x: torch.Tensor, out: Path, *, num_samples: int, warmup: int, num_chains: int,
                seed: int, progress: bool, **settings: Any):
    """NUTS on the Bayesian mixture (:meth:`~pyro_lvm.models.GMM.bayesian_model`), its chains started
    at EM's solution; writes ``posterior.nc``. The BIC scores EM's maximum; ``train_loglik_per_point``
    is the log pointwise predictive density, and the model keeps the posterior means."""
    from pyro_lvm.export.arviz import loo, save_netcdf
    from pyro_lvm.inference.nuts import component_scale_tril, fit_nuts, rhat_max, to_arviz

    n = x.shape[0]
    mle_ll = _log_likelihood(model, x)
    samples, loglik = fit_nuts(model, x, num_samples=num_samples, warmup=warmup, num_chains=num_chains,
                               seed=seed, progress=progress)
    idata = to_arviz(model, samples, loglik, x)
    save_netcdf(idata, out / "posterior.nc")
    flat = loglik.reshape(-1, n)
    lppd = (torch.logsumexp(flat, 0) - math.log(flat.shape[0])).sum().item()
    own: Dict[str, Any] = dict(train_loglik_per_point=lppd / n, mle_loglik_per_point=mle_ll / n,
                               r_hat_max=rhat_max(samples), num_samples=num_samples, warmup=warmup,
                               num_chains=num_chains)
    try:
        own["elpd_loo"] = float(loo(idata).elpd_loo)
    except Exception as e:  # LOO is a diagnostic; report why it failed instead of crashing
        own["elpd_loo_error"] = str(e)
    with torch.no_grad():  # posterior means as the point estimate for the run's outputs
        post = {k: v.reshape(-1, *v.shape[2:]).mean(0) for k, v in samples.items()}
        L = component_scale_tril(model, {k: v.unsqueeze(0) for k, v in post.items()})[0]
        model.set_parameters(post["weights"] / post["weights"].sum(), post["locs"], L @ L.transpose(-1, -2))
    return mle_ll, own
#: the files a mixture fit or a selection writes (``--overwrite`` removes these and nothing else)
GMM_RUN_FILES = ("config.json", "checkpoint.pt", "params.json", "assignments.csv", "metrics.json", "scatter.png",
                 "posterior.nc")
SELECT_FILES = ("selection.json", "selection.png")



def num_parameters(components: int, dim: int, covariance: str) -> int:
    """Free parameters of a mixture: weights, means and covariances."""
    cov = COVARIANCES[covariance].free_parameters(dim)
    return (components - 1) + components * dim + components * cov


def bic(loglik_total: float, n: int, components: int, dim: int, covariance: str) -> float:
    """Bayesian information criterion :math:`-2 \\log L + p \\log N` (lower is better)."""
    return -2.0 * loglik_total + num_parameters(components, dim, covariance) * math.log(n)


def _load(data_file, columns) -> tuple:
    array, names = read_csv_table(data_file, columns)
    return torch.from_numpy(array), names


def train_gmm_run(data_file, out, components: int = 3, covariance: str = "full", method: str = "em",
                  columns: Optional[Sequence[str]] = None, restarts: int = 5, tol: float = 1e-6,
                  max_iter: int = 1000, reg_covar: float = 1e-6, seed: int = 0, svi_steps: int = 300,
                  lr: float = 0.01, num_samples: int = 500, warmup: int = 300, num_chains: int = 2,
                  plot_columns: Optional[Sequence[str]] = None, progress: bool = False,
                  overwrite: bool = False) -> Dict[str, Any]:
    """Fit a mixture to the numeric columns of a CSV file; writes the run folder, returns metrics.

    Options, data and the folder (empty, or ``overwrite``) are checked before fitting.
    """
    if method not in MIXTURE_FITS:
        raise ValueError(f"method must be one of {tuple(MIXTURE_FITS)}, got {method!r}")
    for name, value in (("restarts", restarts), ("max_iter", max_iter), ("svi_steps", svi_steps),
                        ("num_samples", num_samples), ("num_chains", num_chains)):
        if int(value) != value or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if warmup < 0 or not tol > 0 or not lr > 0:
        raise ValueError(f"need --warmup >= 0, --tol > 0 and --lr > 0 (got {warmup}, {tol}, {lr})")
    x, names = _load(data_file, columns)
    n, d = x.shape
    if plot_columns and (len(plot_columns) != 2 or any(c not in names for c in plot_columns)):
        raise ValueError(f"--plot-columns needs two of {names}, got {list(plot_columns)}")
    pyro.set_rng_seed(seed)
    model = GMM(input_dim=d, components=components, covariance=covariance, reg_covar=reg_covar).double()
    x = model.check_data(x)
    out = claim_output_folder(out, GMM_RUN_FILES, overwrite=overwrite, what="mixture fit")
    try:  # computed in memory: a fit that fails leaves no file of its own behind
        em = fit_em(model, x, restarts=restarts, tol=tol, max_iter=max_iter, seed=seed)
        metrics: Dict[str, Any] = {"components": components, "covariance": covariance, "method": method,
                                   "n_points": n, "columns": names, "em_iterations": em.iterations,
                                   "em_converged": em.converged, "em_restart_loglik": em.restart_logliks,
                                   "em_degenerate_restarts": em.degenerate_restarts}
        settings = dict(seed=seed, svi_steps=svi_steps, lr=lr, num_samples=num_samples, warmup=warmup,
                        num_chains=num_chains, progress=progress)
        loglik, own = MIXTURE_FITS.get(method)(model, x, out, **settings)
        metrics["train_loglik_per_point"] = loglik / n
        metrics["bic"] = bic(loglik, n, components, d, covariance)
        metrics.update(own)
        _save_outputs(model, x, names, out, plot_columns, metrics, method)
        config = {"model": "gmm", "model_config": model.config_dict(), "data_file": str(data_file),
                  "columns": names, "method": method, "seed": seed, "restarts": restarts, "tol": tol,
                  "max_iter": max_iter, "pyro_lvm_version": __version__}
        write_json(out / "config.json", config)
        write_json(out / "metrics.json", metrics)
        return metrics
    except BaseException:
        for name in GMM_RUN_FILES:
            (out / name).unlink(missing_ok=True)
        raise


def _save_outputs(model: GMM, x, names, out: Path, plot_columns, metrics, method) -> None:
    with torch.no_grad():
        resp = model.responsibilities(x)
        labels = model.map_assignments(x)
        weights, locs, covs = (t.detach() for t in (model.weights, model.locs, model.covariances()))
    save_checkpoint(out / "checkpoint.pt", {"model": model.state_dict()})
    write_json(out / "params.json", {"weights": weights.tolist(), "locs": locs.tolist(),
                                      "covariances": covs.tolist(), "columns": names})
    header = ",".join([f"p_{k}" for k in range(resp.shape[1])] + ["assignment"])
    table = np.column_stack([resp.numpy(), labels.numpy()])
    with atomic_write(out / "assignments.csv", "w") as f:
        np.savetxt(f, table, delimiter=",", header=header, comments="", fmt=["%.6g"] * resp.shape[1] + ["%d"])
    xs, c_locs, c_covs = x.numpy(), locs.numpy(), covs.numpy()
    if x.shape[1] == 1:  # one column: plot it against zero, the ellipses become intervals
        xs = np.column_stack([xs[:, 0], np.zeros(x.shape[0])])
        c_locs = np.column_stack([c_locs[:, 0], np.zeros(len(c_locs))])
        c_covs = np.stack([np.diag([c[0, 0], 1e-12]) for c in c_covs])
        cols, names = (0, 1), [names[0], ""]
    elif plot_columns:  # checked before fitting
        cols = (names.index(plot_columns[0]), names.index(plot_columns[1]))
    else:
        cols = (0, 1)
    metrics["figures"] = {"scatter": str(mixture_scatter(
        xs, labels.numpy(), c_locs, c_covs, out / "scatter.png", cols, names,
        f"GMM, K={model.config.components}, {model.config.covariance} covariance, {method}"))}


def select_gmm(data_file, out, components: Sequence[int] = range(1, 9), covariance: str = "full",
               columns: Optional[Sequence[str]] = None, restarts: int = 5, tol: float = 1e-3,
               max_iter: int = 100, heldout_fraction: float = 0.2, seed: int = 0,
               overwrite: bool = False) -> Dict[str, Any]:
    """BIC (on the training rows) and held-out log-likelihood for each K; writes selection.json/png.

    A K whose every EM restart degenerates is reported (``degenerate``) and left out of the choice.
    """
    x, names = _load(data_file, columns)
    n = x.shape[0]
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"--heldout must be a fraction in (0, 1), got {heldout_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_held = max(1, int(round(heldout_fraction * n)))
    held, train = x[perm[:n_held]], x[perm[n_held:]]
    too_many = [k for k in components if k > train.shape[0]]
    if not components or too_many:
        raise ValueError(f"--components must be between 1 and the {train.shape[0]} training rows, got "
                         f"{list(components)}")
    out = claim_output_folder(out, SELECT_FILES, overwrite=overwrite, what="selection")
    rows = []
    for k in components:
        model = GMM(input_dim=x.shape[1], components=k, covariance=covariance).double()
        try:
            fit_em(model, train, restarts=restarts, tol=tol, max_iter=max_iter, seed=seed)
        except ValueError as e:  # every restart degenerated: no fit with this many components
            rows.append({"components": k, "degenerate": str(e)})
            continue
        with torch.no_grad():
            ll_train = model.log_likelihood(train).sum().item()
            ll_held = model.log_likelihood(held).mean().item()
        rows.append({"components": k, "bic": bic(ll_train, train.shape[0], k, x.shape[1], covariance),
                     "train_loglik_per_point": ll_train / train.shape[0], "heldout_loglik_per_point": ll_held})
    fitted = [r for r in rows if "bic" in r]
    if not fitted:
        raise ValueError("no number of components gave a fit (every restart degenerated); see "
                         f"{[r['degenerate'] for r in rows][:1]}")
    best = min(fitted, key=lambda r: r["bic"])["components"]
    result = {"criteria": rows, "best_by_bic": best,
              "best_by_heldout": max(fitted, key=lambda r: r["heldout_loglik_per_point"])["components"],
              "columns": names, "covariance": covariance, "heldout_points": n_held}
    result["figure"] = str(selection_curve([r["components"] for r in fitted], [r["bic"] for r in fitted],
                                           [r["heldout_loglik_per_point"] for r in fitted], out / "selection.png"))
    write_json(out / "selection.json", result)
    return result
