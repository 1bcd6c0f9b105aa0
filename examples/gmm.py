"""
Gaussian mixture on the iris measurements
=========================================

Fits :class:`pyro_lvm.models.GMM` to the four iris measurements by EM (the
assignment marginalized exactly), compares the clusters with the species,
chooses K by BIC, and writes a scatter plot with the fitted ellipses::

    python examples/gmm.py --out runs/gmm_iris

Needs scikit-learn for the iris data (a test/example dependency only).
"""

import argparse
import json
from pathlib import Path

import numpy as np

from pyro_lvm.runs_gmm import select_gmm, train_gmm_run


def write_iris_csv(path: Path) -> np.ndarray:
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = [n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names]
    np.savetxt(path, iris.data, delimiter=",", header=",".join(names), comments="")
    return iris.target


def main(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    species = write_iris_csv(out / "iris.csv")
    metrics = train_gmm_run(out / "iris.csv", out / "fit", components=args.components,
                            covariance=args.covariance, method=args.method, restarts=args.restarts,
                            plot_columns=["petal_length", "petal_width"], seed=args.seed)
    labels = np.loadtxt(out / "fit" / "assignments.csv", delimiter=",", skiprows=1)[:, -1].astype(int)
    agreement = max(np.mean(labels[species == s] == np.bincount(labels[species == s]).argmax())
                    for s in range(3))
    selection = select_gmm(out / "iris.csv", out / "select", components=range(1, args.max_components + 1),
                           covariance=args.covariance, restarts=args.restarts, seed=args.seed)
    summary = {k: metrics[k] for k in ("train_loglik_per_point", "bic", "components", "method")}
    summary.update(best_k_by_bic=selection["best_by_bic"], best_species_purity=float(agreement))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Gaussian mixture on iris")
    p.add_argument("--components", type=int, default=3)
    p.add_argument("--covariance", default="full", choices=["full", "diag", "spherical"])
    p.add_argument("--method", default="em", choices=["em", "svi", "nuts"])
    p.add_argument("--restarts", type=int, default=10)
    p.add_argument("--max-components", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/gmm_iris")
    main(p.parse_args())
