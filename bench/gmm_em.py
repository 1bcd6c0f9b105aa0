"""pyro_lvm's EM against scikit-learn's GaussianMixture, side by side in one run.

10^6 points in 2-D drawn from a 10-component mixture; K=10, full covariance,
the same tolerance, iteration cap and number of initializations for both.
Prints wall-clock seconds, iterations, seconds per iteration, final mean
log-likelihood, and the ratio sklearn / pyro_lvm (> 1: pyro_lvm is faster).

    python bench/gmm_em.py [--points 1000000] [--components 10] [--device cpu]
"""

import argparse
import time

import numpy as np
import torch

from pyro_lvm.inference import fit_em
from pyro_lvm.models import GMM


def make_data(n, k, seed):
    rng = np.random.default_rng(seed)
    locs = rng.uniform(-20, 20, size=(k, 2))
    chol = np.tril(rng.normal(size=(k, 2, 2))) * 0.8
    chol[:, [0, 1], [0, 1]] = np.abs(chol[:, [0, 1], [0, 1]]) + 0.3
    z = rng.integers(k, size=n)
    return locs[z] + np.einsum("nij,nj->ni", chol[z], rng.normal(size=(n, 2)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--inits", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from sklearn.mixture import GaussianMixture

    x = make_data(args.points, args.components, args.seed)
    print(f"{args.points} points, 2-D, K={args.components}, full covariance, tol={args.tol}, "
          f"max_iter={args.max_iter}, inits={args.inits}, torch threads {torch.get_num_threads()}")
    t = time.perf_counter()
    sk = GaussianMixture(args.components, covariance_type="full", tol=args.tol, max_iter=args.max_iter,
                         n_init=args.inits, init_params="k-means++", random_state=args.seed).fit(x)
    sk_time = time.perf_counter() - t
    sk_ll = sk.score(x)
    xt = torch.from_numpy(x).to(args.device)
    gmm = GMM(input_dim=2, components=args.components).double().to(args.device)
    t = time.perf_counter()
    res = fit_em(gmm, xt, restarts=args.inits, tol=args.tol, max_iter=args.max_iter, seed=args.seed)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    ours_time = time.perf_counter() - t
    print(f"{'':12s} {'seconds':>8s} {'iters':>6s} {'s/iter':>8s} {'loglik/pt':>10s}")
    print(f"{'sklearn':12s} {sk_time:8.2f} {sk.n_iter_:6d} {sk_time / sk.n_iter_:8.4f} {sk_ll:10.5f}")
    print(f"{'pyro_lvm':12s} {ours_time:8.2f} {res.iterations:6d} {ours_time / res.iterations:8.4f} "
          f"{res.loglik_per_point:10.5f}")
    print(f"ratio sklearn/pyro_lvm: total {sk_time / ours_time:.2f}, per iteration "
          f"{(sk_time / sk.n_iter_) / (ours_time / res.iterations):.2f}")


if __name__ == "__main__":
    main()
