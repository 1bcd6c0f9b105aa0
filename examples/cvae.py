"""
Conditional VAE on MNIST: digits drawn to order
===============================================

Trains :class:`pyro_lvm.models.CVAE` on dynamically binarized MNIST with the
class as the condition, then checks its class-conditional samples with a
classifier trained on MNIST: the fraction of samples drawn for class ``c`` that
the classifier calls ``c``. Writes ``class_samples.png`` (a row per class, the
same :math:`z` down each column)::

    python examples/cvae.py --data-dir ../shared/data --epochs 10 --out runs/cvae

The CVAE part from the command line::

    pyro-lvm train cvae --dataset dynamic_mnist --epochs 10 --out runs/cvae
"""

import argparse
import json

import pyro
import torch
from torch.nn import functional as F

from pyro_lvm.data import load_dataset
from pyro_lvm.nn import MLP
from pyro_lvm.runs import load_run, train_run
from pyro_lvm.train import TrainConfig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with mnist/ (default: $PYRO_LVM_DATA)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden", default="400")
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--classifier-steps", type=int, default=3000)
    p.add_argument("--samples-per-class", type=int, default=100)
    p.add_argument("--eval-particles", type=int, default=100)
    p.add_argument("--out", default="runs/cvae")
    return p.parse_args(argv)


def mnist_classifier(data, steps: int) -> torch.nn.Module:
    """An MLP trained on all MNIST training labels (binarized afresh each step, as the CVAE saw them)."""
    pyro.set_rng_seed(0)
    net = MLP(data.train.shape[1], (256,), 10, "relu")
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(data.train.shape[0], (100,), generator=g)
        loss = F.cross_entropy(net(data.train_transform(data.train[idx], g)), data.labels["train"][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def main(args):
    metrics = train_run("cvae", args.out, dataset="dynamic_mnist", data_dir=args.data_dir,
                        model_options={"hidden": args.hidden, "latent_dim": args.latent_dim},
                        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size),
                        eval_particles=args.eval_particles)
    cvae = load_run(args.out)[0].eval()
    data = load_dataset("dynamic_mnist", args.data_dir)
    net = mnist_classifier(data, args.classifier_steps)
    with torch.no_grad():
        test_accuracy = (net(data.test).argmax(-1) == data.labels["test"]).float().mean().item()
        wanted = torch.arange(10).repeat_interleave(args.samples_per_class)
        z = cvae.prior(len(wanted)).sample()
        samples = cvae.decode_with(z, cvae.one_hot(wanted)).sample()  # binary digits, as the classifier saw
        recognised = (net(samples).argmax(-1) == wanted).float().mean().item()
    summary = {"cvae_test_nll": metrics["test_nll"], "classifier_test_accuracy": test_accuracy,
               "samples_recognised_as_their_class": recognised}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(parse_args())
