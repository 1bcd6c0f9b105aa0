"""
Two stochastic layers against one, on binarized MNIST
=====================================================

Trains the two-layer model of the IWAE paper (:class:`pyro_lvm.models.HVAE`,
:math:`z_2 \\to z_1 \\to x`) and, with ``--compare``, the one-layer VAE at the same
budget and with the same KL warm-up (the hvae's default, linear over the whole run),
and prints both importance-sampled test log-likelihoods::

    python examples/hvae.py --dataset binarized_mnist --data-dir ../shared/data --epochs 10 --compare

Without ``--dataset`` it uses the small binarized MNIST shipped in the package.
"""

import argparse
import json
from pathlib import Path

from pyro_lvm.runs import train_run
from pyro_lvm.train import TrainConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--dataset", default="binarized_mnist_small")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--latent-dims", default="100,50")
    p.add_argument("--hidden", default="200,200")
    p.add_argument("--hidden2", default="100,100")
    p.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    p.add_argument("--eval-particles", type=int, default=1000)
    p.add_argument("--compare", action="store_true", help="also train the one-layer VAE (latent size = d1)")
    p.add_argument("--out", default="runs/hvae")
    return p.parse_args(argv)


def main(args):
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    runs = {"hvae": {"latent_dims": args.latent_dims, "hidden": args.hidden, "hidden2": args.hidden2}}
    if args.compare:
        runs["vae"] = {"latent_dim": int(args.latent_dims.split(",")[-1]), "hidden": args.hidden}
    summary, schedule = {}, {}
    for name, options in runs.items():
        metrics = train_run(name, Path(args.out) / name, dataset=args.dataset, data_dir=args.data_dir,
                            model_options=options, objective=args.objective, objective_options=schedule,
                            train=train, eval_particles=args.eval_particles)
        if name == "hvae":  # the VAE gets the very KL schedule the hvae's run recorded
            saved = json.loads((Path(args.out) / name / "config.json").read_text())["objective_options"]
            schedule = {k: v for k, v in saved.items() if k in ("kl_anneal", "anneal_steps", "anneal_start")}
        summary[f"{name}_test_nll"] = metrics["test_nll"]
        summary[f"{name}_active_units"] = metrics["active_units"]
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(parse_args())
