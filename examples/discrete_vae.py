"""
Discrete-latent VAEs on binarized MNIST
=======================================

Trains :class:`pyro_lvm.models.CatVAE` (20 categorical latents of 10 classes)
or :class:`pyro_lvm.models.BernVAE` (200 Bernoulli latents) with a chosen
gradient estimator, then reports the negative ELBO with hard samples (a true
bound whatever the estimator) and the importance-sampled test NLL::

    python examples/discrete_vae.py --model catvae --estimator gumbel --epochs 5 --out runs/catvae

Without ``--dataset`` it uses the small binarized MNIST shipped in the package.
"""

import argparse
import json

from pyro_lvm.models.discrete_vae import ESTIMATOR_OBJECTIVES
from pyro_lvm.runs import train_run
from pyro_lvm.train import TrainConfig


def main(args):
    metrics = train_run(args.model, args.out, dataset=args.dataset, data_dir=args.data_dir,
                        model_options={"estimator": args.estimator, "hidden": args.hidden},
                        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size),
                        eval_particles=args.eval_particles)
    keys = ("test_neg_elbo", "test_nll", "test_kl", "active_units", "train_seconds")
    print(json.dumps({k: metrics[k] for k in keys}, indent=2))
    return metrics


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="discrete-latent VAE")
    p.add_argument("--model", default="catvae", choices=["catvae", "bernvae"])
    p.add_argument("--estimator", default="gumbel", choices=sorted(ESTIMATOR_OBJECTIVES))
    p.add_argument("--dataset", default="binarized_mnist_small")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden", default="512,256")
    p.add_argument("--eval-particles", type=int, default=100)
    p.add_argument("--out", default="runs/discrete_vae")
    main(p.parse_args())
