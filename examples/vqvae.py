"""
VQ-VAE against the shallow k-means quantizer
============================================

Trains :class:`pyro_lvm.models.VQVAE` (16 code vectors per image from a
codebook of ``--codebook-size`` entries) and compares its reconstruction
error with k-means on raw pixels using the same number of codes; prints the
codebook usage and perplexity on the test set::

    python examples/vqvae.py --dataset mnist --data-dir ../shared/data --epochs 3 --out runs/vqvae

Without ``--dataset`` it uses the small binarized MNIST shipped in the package.
"""

import argparse
import json

from pyro_lvm.runs import train_run
from pyro_lvm.train import TrainConfig


def main(args):
    options = {"codebook_size": args.codebook_size, "hidden": args.hidden, "ema_decay": args.ema_decay}
    metrics = train_run("vqvae", args.out, dataset=args.dataset, data_dir=args.data_dir,
                        model_options=options,
                        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size),
                        eval_particles=1)
    keys = ("test_recon_mse", "shallow_recon_mse", "codebook_usage", "code_perplexity", "train_seconds")
    print(json.dumps({k: metrics[k] for k in keys}, indent=2))
    return metrics


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="VQ-VAE")
    p.add_argument("--dataset", default="binarized_mnist_small")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--codebook-size", type=int, default=64)
    p.add_argument("--ema-decay", type=float, default=0.0, help="0: learn the codebook by gradient")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden", default="512,256")
    p.add_argument("--out", default="runs/vqvae")
    main(p.parse_args())
