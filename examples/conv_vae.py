"""
Convolutional VAE on Fashion-MNIST with an 8-bit likelihood
===========================================================

Trains :class:`pyro_lvm.models.VAE` with a convolutional encoder and decoder
(``network="conv"``) and the per-pixel discretized logistic likelihood on the
8-bit Fashion-MNIST images, reports the importance-sampled test NLL in nats
per image and in bits per dimension, and writes a grid of samples, the test
encodings coloured by class and latent traversals. It uses the library's
pieces directly (data set, model, objective, trainer, evaluation, figures)::

    python examples/conv_vae.py --data-dir ../shared/data --epochs 3 --out runs/conv_vae

The same run from the command line::

    pyro-lvm train vae --dataset fashion_mnist --network conv \\
        --likelihood discretized_logistic --epochs 3 --out runs/conv_vae
"""

import argparse
import json
from pathlib import Path

import pyro
import torch

from pyro_lvm.data import load_dataset
from pyro_lvm.evaluation import evaluate
from pyro_lvm.models import VAE
from pyro_lvm.nn import image_chw
from pyro_lvm.objectives import ELBO
from pyro_lvm.plotting import image_grid
from pyro_lvm.runs import latent_figures
from pyro_lvm.train import TrainConfig, Trainer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with fashion_mnist/ (default: $PYRO_LVM_DATA)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--channels", default="32,64", help="channels of the strided convolutions")
    p.add_argument("--train-points", type=int, default=None, help="use only the first N training images")
    p.add_argument("--test-points", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--eval-particles", type=int, default=100)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="runs/conv_vae")
    return p.parse_args(argv)


def main(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("fashion_mnist", args.data_dir)
    train, test = data.train[:args.train_points], data.test[:args.test_points]
    pyro.set_rng_seed(0)
    vae = VAE(input_dim=data.input_dim, latent_dim=args.latent_dim, network="conv", channels=args.channels,
              image_shape=image_chw(data.image_shape), likelihood="discretized_logistic")
    trainer = Trainer(vae, ELBO(), train, data.valid[:args.test_points],
                      TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device))
    trainer.fit()
    metrics = evaluate(vae, test.to(args.device), num_particles=args.eval_particles, progress=True)
    vae.eval()
    with torch.no_grad():
        image_grid(vae.generate(64).cpu().numpy(), data.image_shape, out / "samples.png",
                   "means of p(x|z), z from the prior")
        data.test = test.to(args.device)
        figures = latent_figures(vae, data, out)
    summary = {"test_nll": metrics["test_nll"], "test_bpd": metrics["test_bpd"],
               "steps_per_second": trainer.step / max(trainer.train_seconds, 1e-9),
               "figures": [str(out / "samples.png"), *figures.values()]}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(parse_args())
