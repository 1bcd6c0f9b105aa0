"""Probabilistic PCA by stochastic variational inference, checked against its closed form.

Trains :class:`pyro_lvm.models.PPCA` (``d`` latent dimensions, an amortized Gaussian guide) on
digits with the library's trainer, then fits the same model in closed form, Tipping & Bishop's
maximum-likelihood solution (:meth:`~pyro_lvm.models.PPCA.set_maximum_likelihood`). Because the
marginal :math:`p(x)` of probabilistic PCA is Gaussian, everything the trainer and the evaluation
report can be checked against an exact number:

* the exact test log-likelihood of the trained model against that of the closed-form optimum;
* the importance-sampled estimate of the trained model's test log-likelihood (the evaluation
  every model gets) against its exact value;
* the test ELBO's gap to the exact log-likelihood (the guide's mean KL to the true posterior);
* the principal subspace the trained model found against the optimum's (cosines of the principal
  angles between the spans of the two loading matrices; 1 is the same direction);
* ``spectrum.png``: the eigenvalues of the data's covariance and of the two models' covariances.

::

    python examples/ppca.py --out runs/ppca
    python examples/ppca.py --dataset mnist --data-dir ../shared/data --latent-dim 32 --out runs/ppca_mnist

Without ``--dataset`` it uses the small binarized MNIST shipped in the package. With the defaults
(d = 16, 100 epochs of minibatches of 500, Adam at 0.01; 16 s on two CPU cores) the trained model
came within 1.2 nats per digit of the optimum's training log-likelihood; its test ELBO was 1.3
nats under its exact test log-likelihood, the importance-sampled estimate (K = 100) 0.08 nats
under it, and every principal angle's cosine was at least 0.995. Smaller minibatches leave
Adam's constant step hovering further from the optimum (minibatches of 100: 7 nats).
"""

import argparse
import json
from pathlib import Path

import torch

from pyro_lvm.models import PPCA
from pyro_lvm.plotting import covariance_spectrum
from pyro_lvm.runs import load_run_data, train_run
from pyro_lvm.train import TrainConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--dataset", default="binarized_mnist_small")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--eval-particles", type=int, default=100)
    p.add_argument("--out", default="runs/ppca")
    return p.parse_args(argv)


def principal_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the column spans of ``a`` and ``b`` (largest first)."""
    qa, qb = torch.linalg.qr(a)[0], torch.linalg.qr(b)[0]
    return torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)


def main(args):
    out = Path(args.out)
    metrics = train_run("ppca", out / "svi", dataset=args.dataset, data_dir=args.data_dir,
                        model_options={"latent_dim": args.latent_dim},
                        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr),
                        eval_particles=args.eval_particles)
    trained, _, data = load_run_data(out / "svi", data_dir=args.data_dir)
    trained = trained.double()
    train, test = data.train.double(), data.test.double()

    optimum = PPCA(input_dim=train.shape[1], latent_dim=args.latent_dim).double()
    optimum.set_maximum_likelihood(train)

    with torch.no_grad():
        exact_trained = trained.log_marginal(test).mean().item()
        exact_optimum = optimum.log_marginal(test).mean().item()
        train_gap = (optimum.log_marginal(train).mean() - trained.log_marginal(train).mean()).item()
        cosines = principal_cosines(trained.loading.weight, optimum.loading.weight)
        data_var = torch.linalg.eigvalsh(torch.cov(train.T, correction=0))
        spectra = {"trained by SVI": torch.linalg.eigvalsh(trained.marginal().covariance_matrix),
                   "closed-form optimum": torch.linalg.eigvalsh(optimum.marginal().covariance_matrix)}
    figure = covariance_spectrum(data_var.numpy(), {k: v.numpy() for k, v in spectra.items()},
                                 out / "spectrum.png", latent_dim=args.latent_dim)

    summary = {
        "test_log_px_exact_trained": exact_trained,
        "test_log_px_exact_optimum": exact_optimum,
        "test_log_px_importance_sampled_trained": -metrics["test_nll"],
        "importance_sampling_error": -metrics["test_nll"] - exact_trained,
        "test_elbo_gap_trained": metrics["test_neg_elbo"] - (-exact_trained),
        "train_log_px_shortfall_to_optimum": train_gap,
        "noise_std_trained": trained.noise.item(),
        "noise_std_optimum": optimum.noise.item(),
        "subspace_cosine_min": cosines.min().item(),
        "subspace_cosine_mean": cosines.mean().item(),
        "spectrum": str(figure),
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(parse_args())
