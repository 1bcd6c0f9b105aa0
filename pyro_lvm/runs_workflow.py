"""A trained run in a Bayesian workflow: predictive checks, ArviZ export, model comparison.

Each function reads a run folder (:func:`pyro_lvm.runs.load_run_data`) and its
test split, and writes its results into the run folder (or, for a comparison of
several runs, to a file of its own).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import pyro
import torch

from pyro_lvm.files import write_json
from pyro_lvm.evaluation.marginal_likelihood import log_marginal_likelihood
from pyro_lvm.evaluation.predictive import check_summary, extreme_p_values, posterior_predictive_check
from pyro_lvm.registry import Registry
from pyro_lvm.runs import evenly_spaced, load_run_data
from pyro_lvm.validation import non_negative_int, particle_count, positive_int

PPC_JSON, PPC_FIGURE = "ppc.json", "ppc.png"

#: file formats of ``pyro-lvm export``: name -> ``fn(model, x, index, run_dir, **options) -> info``
EXPORT_FORMATS: Registry = Registry("export format")


def _test_points(data, num_points: Optional[int]):
    index = evenly_spaced(data.test.shape[0], num_points)
    return data.test[index.to(data.test.device)], index


def predictive_check_run(run_dir, num_samples: int = 20, num_points: Optional[int] = 1000, data_dir=None,
                         seed: int = 0, device: str = "cpu") -> Dict[str, Any]:
    """A posterior predictive check of a run on (evenly spaced) test points; writes
    ``ppc.json`` and the figure ``ppc.png`` into the run folder, returns the numbers."""
    from pyro_lvm.plotting import predictive_check

    run_dir = Path(run_dir)
    num_samples = positive_int("--num-samples", num_samples)
    model, config, data = load_run_data(run_dir, data_dir, device)
    x, _ = _test_points(data, num_points)
    pyro.set_rng_seed(seed)
    check = posterior_predictive_check(model, x, num_samples)
    result = {**check_summary(check), "model": config["model"], "dataset": config["dataset"], "seed": seed,
              "extreme_p_values": extreme_p_values(check)}
    result["figure"] = str(predictive_check(check, run_dir / PPC_FIGURE, data.image_shape,
                                            title=f"{config['model']} on {config['dataset']} (test)"))
    write_json(run_dir / PPC_JSON, result)
    return result


@EXPORT_FORMATS.register("arviz")
def _export_arviz(model, x, index, run_dir: Path, num_samples: int, particles: int,
                  progress: bool) -> Dict[str, Any]:
    from pyro_lvm.export.arviz import from_model, group_names, save_netcdf

    idata = from_model(model, x, num_samples=num_samples, num_particles=particles, point_index=index.tolist(),
                       progress=progress)
    path = run_dir / "inference_data.nc"
    save_netcdf(idata, path)
    return {"file": str(path), "groups": sorted(group_names(idata))}


def export_run(run_dir, format: str = "arviz", num_samples: int = 10, num_points: Optional[int] = 1000,
               particles: Optional[int] = None, data_dir=None, seed: int = 0, device: str = "cpu",
               progress: bool = True) -> Dict[str, Any]:
    """Export a trained run on (evenly spaced) test points in ``format`` (see :data:`EXPORT_FORMATS`).

    ``particles=None`` takes the run's own number of evaluation particles.
    """
    exporter = EXPORT_FORMATS.get(format)
    num_samples = positive_int("--num-samples", num_samples)
    if particles is not None:
        particles = particle_count("--particles", particles)
    run_dir = Path(run_dir)
    model, config, data = load_run_data(run_dir, data_dir, device)
    particles = particles or config.get("eval_particles") or data.default_eval_particles
    x, index = _test_points(data, num_points)
    pyro.set_rng_seed(seed)
    info = exporter(model, x, index, run_dir, num_samples=int(num_samples), particles=int(particles),
                    progress=progress)
    return {**info, "format": format, "model": config["model"], "dataset": config["dataset"],
            "num_samples": int(num_samples), "num_points": int(x.shape[0]), "particles": int(particles),
            "seed": seed}


# ----------------------------------------------------------------- comparison
def fingerprint_test_set(data) -> str:
    """sha256 of the test split's values: two runs are compared only on the same test points."""
    return hashlib.sha256(data.test.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def compare_log_likelihoods(pointwise: Dict[str, torch.Tensor]) -> List[Dict[str, Any]]:
    r"""Rank models by their per-point :math:`\log p(x_n)` on the same points, with paired errors.

    For each model: ``mean_log_lik`` with its standard error :math:`s / \sqrt{n}`, and against
    the best model the paired difference :math:`d_n = \log p_{\text{best}}(x_n) - \log p(x_n)`:
    ``diff_mean`` :math:`\pm` ``diff_se`` (:math:`\mathrm{sd}(d) / \sqrt{n}`, per point) and
    ``diff_total`` :math:`\pm` ``diff_total_se`` (:math:`\sqrt{n}\,\mathrm{sd}(d)`, the sum over
    points, as ArviZ's ``compare`` reports elpd differences).

    >>> import torch
    >>> rows = compare_log_likelihoods({"a": torch.tensor([-1.0, -2.0, -3.0]),
    ...                                 "b": torch.tensor([-2.0, -2.5, -4.5])})
    >>> [r["model"] for r in rows], rows[1]["diff_mean"], round(rows[1]["diff_total_se"], 4)
    (['a', 'b'], 1.0, 0.866)
    """
    sizes = {v.numel() for v in pointwise.values()}
    if len(sizes) != 1 or sizes == {0}:
        raise ValueError(f"every model needs log p(x) at the same, non-empty set of points; got sizes {sizes}")
    n = sizes.pop()
    values = {k: v.detach().double().cpu().reshape(-1) for k, v in pointwise.items()}
    ranked = sorted(values, key=lambda k: -values[k].mean().item())
    best = values[ranked[0]]
    rows = []
    for rank, name in enumerate(ranked):
        v = values[name]
        d = best - v
        sd_d = d.std().item() if n > 1 else 0.0
        rows.append({"model": name, "rank": rank, "n": n, "mean_log_lik": v.mean().item(),
                     "mean_log_lik_se": (v.std().item() if n > 1 else 0.0) / math.sqrt(n),
                     "total_log_lik": v.sum().item(),
                     "diff_mean": d.mean().item(), "diff_se": sd_d / math.sqrt(n),
                     "diff_total": d.sum().item(), "diff_total_se": math.sqrt(n) * sd_d})
    return rows


def format_comparison(rows: Sequence[Dict[str, Any]], particles: int) -> str:
    """The ranking as a plain-text table (nats per test point)."""
    width = max(12, *(len(r["model"]) for r in rows))
    lines = [f"log p(x) by importance sampling, K={particles}, {rows[0]['n']} test points; "
             "differences paired with the best run",
             f"{'run':<{width}}  {'log p(x)/point':>15}  {'diff/point':>15}  {'diff, total':>19}"]
    for r in rows:
        own = f"{r['mean_log_lik']:.2f} ± {r['mean_log_lik_se']:.2f}"
        diff = "-" if r["rank"] == 0 else f"{r['diff_mean']:.2f} ± {r['diff_se']:.2f}"
        total = "-" if r["rank"] == 0 else f"{r['diff_total']:.0f} ± {r['diff_total_se']:.0f}"
        lines.append(f"{r['model']:<{width}}  {own:>15}  {diff:>15}  {total:>19}")
    return "\n".join(lines)


def compare_runs(run_dirs: Sequence, particles: int = 1000, data_dir=None, seed: int = 0, device: str = "cpu",
                 progress: bool = True, num_points: Optional[int] = None,
                 names: Optional[Callable[[Path], str]] = None) -> Dict[str, Any]:
    """Per-test-point importance-sampled :math:`\\log p(x)` of every run (same seed, same
    ``particles``), ranked with paired standard errors (:func:`compare_log_likelihoods`).

    Runs trained on different test sets are refused.
    """
    if len(run_dirs) < 2:
        raise ValueError("compare needs at least two runs")
    particles = particle_count("--particles", particles)
    if num_points is not None:
        num_points = non_negative_int("--num-points", num_points)
    names = names or (lambda p: str(p))
    loaded, fingerprints = {}, {}
    for run_dir in run_dirs:  # every run and its test set first: a mismatch costs no sampling
        run_dir = Path(run_dir)
        name = names(run_dir)
        if name in loaded:
            raise ValueError(f"run {name} is given twice")
        loaded[name] = load_run_data(run_dir, data_dir, device)
        fingerprints[name] = (loaded[name][1]["dataset"], fingerprint_test_set(loaded[name][2]))
    if len(set(fingerprints.values())) > 1:
        raise ValueError("the runs were not evaluated on the same test set: "
                         + "; ".join(f"{k}: {d} (test sha256 {h[:12]})" for k, (d, h) in fingerprints.items()))
    pointwise, info = {}, {}
    for name, (model, config, data) in loaded.items():
        x, _ = _test_points(data, num_points)
        model.eval()
        pyro.set_rng_seed(seed)
        pointwise[name] = log_marginal_likelihood(model.model, model.guide, model.check_data(x),
                                                  num_particles=1 if not model.latent_sites else int(particles),
                                                  max_plate_nesting=model.max_plate_nesting, progress=progress,
                                                  max_elements=max(1, 2**24 // model.evaluation_width))
        info[name] = {"model": config["model"], "dataset": config["dataset"],
                      "objective": config.get("objective")}
    rows = compare_log_likelihoods(pointwise)
    for r in rows:
        r.update(info[r["model"]], run=r.pop("model"))
    return {"particles": int(particles), "seed": seed, "num_points": rows[0]["n"],
            "test_sha256": next(iter(fingerprints.values()))[1], "ranking": rows,
            "table": format_comparison([dict(r, model=r["run"]) for r in rows], int(particles))}
