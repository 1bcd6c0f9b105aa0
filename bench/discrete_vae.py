"""Discrete-latent VAEs on binarized MNIST: pyro_lvm against plain PyTorch, and a table per estimator.

``--mode compare`` (default): the categorical VAE of Jang et al. (2016)
(20 x 10 latents, encoder 784-512-256, decoder 200-256-512-784, Gumbel-Softmax
with temperature max(0.5, exp(-r t)), categorical KL) written in plain
PyTorch, and ``pyro_lvm``'s ``catvae --estimator gumbel``, trained alternately
epoch by epoch in the same run with the same data order, batch, optimizer
and schedule. Both are scored on the test set with hard samples (one
one-hot sample per point, exact categorical KL): a true bound. Prints
both test negative ELBOs, their difference and the speed ratio.

``--mode table``: every estimator of ``bernvae`` and ``catvae`` trained
through :func:`pyro_lvm.runs.train_run` at the same budget; prints the
hard-sample test negative ELBO, the importance-sampled test NLL and the KL
(a Markdown table, for the docs).

    python bench/discrete_vae.py --data-dir ../shared/data --epochs 5
    python bench/discrete_vae.py --data-dir ../shared/data --epochs 5 --mode table
"""

import argparse
import math
import tempfile
import time

import pyro
import torch
from torch import nn
from torch.nn import functional as F

from pyro_lvm.data import load_dataset
from pyro_lvm.evaluation import elbo_split
from pyro_lvm.models import CatVAE
from pyro_lvm.objectives import OBJECTIVES
from pyro_lvm.runs import train_run
from pyro_lvm.train import TrainConfig, Trainer, adam


class PlainCatVAE(nn.Module):
    """Jang et al.'s Gumbel-Softmax VAE in plain PyTorch (same sizes as pyro_lvm's defaults)."""

    def __init__(self, d=784, n=20, k=10, hidden=(512, 256)):
        super().__init__()
        self.n, self.k = n, k

        def mlp(i, o, sizes):
            layers, prev = [], i
            for h in sizes:
                layers += [nn.Linear(prev, h), nn.ReLU()]
                prev = h
            return nn.Sequential(*layers, nn.Linear(prev, o))

        self.enc = mlp(d, n * k, hidden)
        self.dec = mlp(n * k, d, list(reversed(hidden)))

    def logits(self, x):
        return self.enc(x).reshape(-1, self.n, self.k)

    def kl(self, logits):
        log_q = logits.log_softmax(-1)
        return (log_q.exp() * (log_q + math.log(self.k))).sum((-1, -2))

    def recon(self, x, z):
        return -F.binary_cross_entropy_with_logits(self.dec(z.flatten(-2)), x, reduction="none").sum(-1)

    def loss(self, x, tau, n_data):
        logits = self.logits(x)
        gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_min(1e-20)))
        z = ((logits + gumbel) / tau).softmax(-1)
        elbo = self.recon(x, z) - self.kl(logits)
        return -elbo.sum() * (n_data / x.shape[0])

    @torch.no_grad()
    def hard_neg_elbo(self, data, batch=500):
        total = 0.0
        for i in range(0, data.shape[0], batch):
            x = data[i:i + batch]
            logits = self.logits(x)
            z = F.one_hot(torch.distributions.Categorical(logits=logits).sample(), self.k).to(x.dtype)
            total += (self.recon(x, z) - self.kl(logits)).sum().item()
        return -total / data.shape[0]


def temperature(step, args):
    return max(args.min_temperature, args.temperature * math.exp(-args.anneal_rate * step))


def plain_epoch(model, opt, data, args, step, g):
    """One epoch; ``g`` draws the same permutations as pyro_lvm's trainer with the same seed."""
    n = data.shape[0]
    perm = torch.randperm(n, generator=g)
    start = time.perf_counter()
    for i in range(0, n, args.batch_size):
        loss = model.loss(data[perm[i:i + args.batch_size]], temperature(step, args), n)
        if not math.isfinite(loss.item()):
            raise RuntimeError("plain PyTorch loss is not finite")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    return step, time.perf_counter() - start


def compare(data, args):
    torch.manual_seed(args.seed)
    plain = PlainCatVAE()
    opt = adam(plain.parameters(), args.lr)  # the optimizer pyro_lvm's Trainer uses
    torch.manual_seed(args.seed)
    model = CatVAE(estimator="gumbel", temperature=args.temperature,
                   min_temperature=args.min_temperature, anneal_rate=args.anneal_rate)
    cfg = TrainConfig(epochs=0, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False)
    trainer = Trainer(model, OBJECTIVES.get("meanfield")(), data.train, config=cfg)
    step, plain_seconds = 0, 0.0
    shuffle = torch.Generator().manual_seed(args.seed)
    print(f"{'epoch':>5s} {'plain hard -ELBO':>17s} {'pyro_lvm hard -ELBO':>20s}", flush=True)
    for epoch in range(args.epochs):
        step, sec = plain_epoch(plain, opt, data.train, args, step, shuffle)
        plain_seconds += sec
        trainer.config.epochs = epoch + 1
        trainer.fit()
        torch.manual_seed(epoch)
        p = plain.hard_neg_elbo(data.test)
        model.eval()
        pyro.set_rng_seed(epoch)
        q = elbo_split(model.model, model.guide, data.test)["neg_elbo"]
        model.train()
        print(f"{epoch + 1:5d} {p:17.2f} {q:20.2f}", flush=True)
    rate_plain, rate_pyro = step / plain_seconds, trainer.step / trainer.train_seconds
    print(f"after {args.epochs} epochs ({step} steps): test negative ELBO with hard samples "
          f"plain {p:.2f}, pyro_lvm {q:.2f}, difference {q - p:+.2f} nats; "
          f"steps/s plain {rate_plain:.1f}, pyro_lvm {rate_pyro:.1f}, ratio {rate_pyro / rate_plain:.2f}")


def table(args):
    rows = []
    for model, estimators in (("catvae", args.catvae), ("bernvae", args.bernvae)):
        for est in estimators:
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                  seed=args.seed, progress=False)
                m = train_run(model, out, dataset=args.dataset, data_dir=args.data_dir,
                              model_options={"estimator": est}, train=cfg,
                              eval_particles=args.eval_particles, figures=False)
            rows.append((model, est, m["test_neg_elbo"], m["test_nll"], m["test_kl"],
                         time.perf_counter() - start))
            print(f"{model} {est}: -ELBO {rows[-1][2]:.2f}, NLL {rows[-1][3]:.2f}, KL {rows[-1][4]:.2f}",
                  flush=True)
    print(f"\n| model | estimator | test -ELBO (hard samples) | test NLL (K={args.eval_particles}) "
          "| test KL | seconds |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.0f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("compare", "table"), default="compare")
    p.add_argument("--dataset", default="binarized_mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--min-temperature", type=float, default=0.5)
    p.add_argument("--anneal-rate", type=float, default=1e-4)
    p.add_argument("--eval-particles", type=int, default=100)
    p.add_argument("--catvae", default="gumbel,st-gumbel,st,reinforce,vimco")
    p.add_argument("--bernvae", default="gumbel,st-gumbel,st,reinforce,vimco")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.catvae = [e for e in args.catvae.split(",") if e]
    args.bernvae = [e for e in args.bernvae.split(",") if e]
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, threads {torch.get_num_threads()}, "
          f"{args.dataset}, {args.epochs} epochs, batch {args.batch_size}, Adam {args.lr}", flush=True)
    if args.mode == "compare":
        compare(load_dataset(args.dataset, args.data_dir), args)
    else:
        table(args)


if __name__ == "__main__":
    main()
