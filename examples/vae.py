"""
Variational autoencoder on binarized MNIST
==========================================

Trains the deep latent Gaussian model (:class:`pyro_lvm.models.VAE`) with the
ELBO or the IWAE bound, reports the importance-sampled test log-likelihood,
and writes figures. A thin script over the public API::

    python examples/vae.py --epochs 10 --objective iwae --particles 5 --out runs/vae
    python examples/vae.py --prior vamp --pseudo-inputs 500 --out runs/vamp      # VampPrior
    python examples/vae.py --guide-flow iaf --flow-layers 2 --out runs/iaf       # IAF guide

Without ``--dataset`` it uses the small binarized MNIST shipped in the package.
"""

import argparse
import json

from pyro_lvm.runs import train_run
from pyro_lvm.train import TrainConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--dataset", default="binarized_mnist_small")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--hidden", default="200,200")
    p.add_argument("--prior", default="normal", choices=["normal", "vamp"])
    p.add_argument("--pseudo-inputs", type=int, default=500)
    p.add_argument("--guide-flow", default="none", choices=["none", "iaf", "planar"])
    p.add_argument("--flow-layers", type=int, default=2)
    p.add_argument("--objective", default="elbo", choices=["elbo", "meanfield", "iwae"])
    p.add_argument("--particles", type=int, default=None)
    p.add_argument("--eval-particles", type=int, default=1000)
    p.add_argument("--out", default="runs/vae")
    return p.parse_args(argv)


def main(args):
    objective_options = {} if args.particles is None else {"num_particles": args.particles}
    metrics = train_run(
        "vae", args.out, dataset=args.dataset, data_dir=args.data_dir,
        model_options={"latent_dim": args.latent_dim, "hidden": args.hidden, "prior": args.prior,
                       "pseudo_inputs": args.pseudo_inputs, "guide_flow": args.guide_flow,
                       "flow_layers": args.flow_layers},
        objective=args.objective, objective_options=objective_options,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size),
        eval_particles=args.eval_particles,
    )
    keys = ("test_nll", "test_neg_elbo", "test_recon", "test_kl", "active_units", "mutual_info")
    print(json.dumps({k: metrics[k] for k in keys}, indent=2))
    return metrics


if __name__ == "__main__":
    main(parse_args())
