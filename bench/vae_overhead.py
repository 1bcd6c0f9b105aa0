"""pyro_lvm against the same VAE written in plain PyTorch, side by side in one run.

Speed (default): steps per second of one training step, interleaved A/B
repeats, for ``elbo`` and ``iwae`` at K=5 and K=50; prints the ratio
pyro_lvm / plain (1.0 = no overhead), for the default step (recorded and
replayed, :mod:`pyro_lvm.traced`) and the eager one (``TrainConfig(trace=False)``).

Quality (``--epochs N``): trains both for N epochs with the same data, sizes,
batch and optimizer, then estimates the test NLL of each by importance
sampling with ``--eval-particles`` particles (plain: its own estimator in
plain PyTorch; pyro_lvm: :func:`pyro_lvm.evaluation.log_marginal_likelihood`).

    python bench/vae_overhead.py --data-dir ../shared/data
    python bench/vae_overhead.py --data-dir ../shared/data --configs standard,overhead --objectives elbo,iwae5 --threads 1
    python bench/vae_overhead.py --data-dir ../shared/data --configs standard,overhead --objectives elbo --compile
    python bench/vae_overhead.py --data-dir ../shared/data --configs standard,overhead --objectives elbo,iwae5 \
        --device cuda --compile --compile-mode reduce-overhead

``--compile`` compiles pyro_lvm's recorded loss and its backward whole (``--compile-mode``,
``reduce-overhead`` capturing CUDA graphs on a GPU), and plain PyTorch's loss function whole in
the same mode. Both sides keep their minibatches on the device and check their losses for
NaN without a host synchronisation per step (plain: a running sum, read every 50 steps).

``--configs`` runs named configurations one after the other: ``standard``
(784-200-200-50, batch 100: the matrix products dominate) and ``overhead``
(784-8-2, batch 8: the fixed cost per step dominates, as on a GPU);
``custom`` (the default) takes ``--hidden``, ``--latent-dim`` and ``--batch-size``.
    python bench/vae_overhead.py --data-dir ../shared/data --epochs 10 --eval-particles 1000 --objectives elbo,iwae5
"""

import argparse
import math
import time

import pyro
import torch
from torch import nn
from torch.nn import functional as F

from pyro_lvm.data import load_dataset
from pyro_lvm.evaluation import log_marginal_likelihood
from pyro_lvm.models import VAE
from pyro_lvm.objectives import ELBO, IWAE
from pyro_lvm.train import COMPILE_MODES, TrainConfig, Trainer, adam

OBJECTIVES = {"elbo": 1, "iwae5": 5, "iwae50": 50}
#: named configurations: (hidden sizes, latent dimension, batch size)
CONFIGS = {"standard": ((200, 200), 50, 100), "overhead": ((8,), 2, 8)}


class PlainVAE(nn.Module):
    """The same network and parametrization as pyro_lvm's VAE, no Pyro."""

    def __init__(self, d, z, hidden):
        super().__init__()

        def mlp(i, o, sizes):
            layers, prev = [], i
            for h in sizes:
                layers += [nn.Linear(prev, h), nn.Tanh()]
                prev = h
            return nn.Sequential(*layers, nn.Linear(prev, o))

        self.enc = mlp(d, 2 * z, hidden)
        self.dec = mlp(z, d, list(reversed(hidden)))
        self.min_scale = 1e-3

    def log_weights(self, x, k):
        loc, raw = self.enc(x).chunk(2, -1)
        scale = F.softplus(raw) + self.min_scale
        eps = torch.randn((k,) + loc.shape, device=x.device)
        z = loc + scale * eps
        log_q = (-0.5 * eps**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_p_z = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_lik = -F.binary_cross_entropy_with_logits(self.dec(z), x.expand(k, *x.shape),
                                                      reduction="none").sum(-1)
        return log_lik + log_p_z - log_q  # (k, B)

    def loss(self, x, k, n):
        lw = self.log_weights(x, k)
        bound = lw.mean(0) if k == 1 else torch.logsumexp(lw, 0) - math.log(k)
        return -bound.sum() * (n / x.shape[0])


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_train(model, data, k, steps, batch, lr, seed, opt=None, check_every=50):
    g = torch.Generator().manual_seed(seed)
    opt = opt or adam(model.parameters(), lr)  # the optimizer pyro_lvm's Trainer uses
    n = data.shape[0]
    loss_fn = getattr(model, "compiled_loss", model.loss)
    _synchronize(data.device)
    done, start = 0, time.perf_counter()
    total = torch.zeros((), device=data.device)
    while done < steps:
        perm = torch.randperm(n, generator=g).to(data.device)  # one copy per epoch, as pyro_lvm's
        for i in range(0, n, batch):
            x = data[perm[i:i + batch]]
            loss = loss_fn(x, k, n)
            total = total + loss.detach()  # a NaN or inf stays in the sum
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done % check_every == 0 or done == steps:
                if not math.isfinite(total.item()):  # the host synchronisation, every check_every steps
                    raise RuntimeError("plain PyTorch loss is not finite")
            if done == steps:
                break
    return done / (time.perf_counter() - start), opt


@torch.no_grad()
def plain_nll(model, data, k, batch=100, chunk=100):
    total = 0.0
    for i in range(0, data.shape[0], batch):
        x = data[i:i + batch]
        acc = torch.full((x.shape[0],), -math.inf)
        for j in range(0, k, chunk):
            acc = torch.logaddexp(acc, torch.logsumexp(model.log_weights(x, min(chunk, k - j)), 0))
        total += (acc - math.log(k)).sum().item()
    return -total / data.shape[0]


def make_objective(k):
    return ELBO() if k == 1 else IWAE(num_particles=k)


def pyro_trainer(train, k, args, epochs, compile=None, trace=True):
    torch.manual_seed(args.seed)
    model = VAE(input_dim=train.shape[1], latent_dim=args.latent_dim, hidden=args.hidden)
    cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False,
                      compile=compile, trace=trace, device=str(train.device))
    return Trainer(model, make_objective(k), train, config=cfg)


def compiled_plain(plain, mode):
    """The plain VAE with its loss compiled whole, as ``--compile`` compiles pyro_lvm's recorded loss."""
    plain.compiled_loss = torch.compile(plain.loss, mode=mode, fullgraph=True)
    return plain


def speed(train, args):
    """Interleaved repeats of plain PyTorch and pyro_lvm (and, with ``--compile``, both compiled);
    the median rate of each, and the ratios pyro_lvm / plain (and compiled / eager)."""
    variants = (["plain", "pyro_lvm", "pyro_lvm eager"]
                + (["plain compiled", "pyro_lvm compiled"] if args.compile else []))
    print(f"{'objective':10s} " + " ".join(f"{v + ' steps/s':>24s}" for v in variants) + f" {'pyro/plain':>10s}"
          + f" {'eager/plain':>11s}"
          + (f" {'compiled pyro/plain':>19s} {'pyro compiled/default':>21s}" if args.compile else ""))
    n = train.shape[0]
    steps_per_epoch = math.ceil(n / args.batch_size)
    for name in args.objectives:
        k = OBJECTIVES[name]
        torch._dynamo.reset()  # compiled graphs of earlier rows would fill dynamo's caches
        plains, trainers = {}, {}
        for v in variants:
            torch.manual_seed(args.seed)
            if v.startswith("plain"):
                plains[v] = [PlainVAE(train.shape[1], args.latent_dim, args.hidden).to(train.device), None]
                if v.endswith("compiled"):
                    compiled_plain(plains[v][0], args.compile_mode)
                plain_train(plains[v][0], train, k, 20, args.batch_size, args.lr, 0)  # warm up (and compile)
            else:
                trainer = pyro_trainer(train, k, args, epochs=1, trace=not v.endswith("eager"),
                                       compile=args.compile_mode if v.endswith("compiled") else None)
                trainer.train_data = train[: 20 * args.batch_size]
                trainer.fit()
                trainers[v] = trainer
        rates = {v: [] for v in variants}
        for rep in range(args.repeats):
            for v in variants:
                if v in plains:
                    rate, plains[v][1] = plain_train(plains[v][0], train, k, args.steps, args.batch_size, args.lr,
                                                     rep, plains[v][1])
                else:
                    trainer = trainers[v]
                    before_steps, before_time = trainer.step, trainer.train_seconds
                    trainer.config.epochs = trainer.epoch + math.ceil(args.steps / steps_per_epoch)
                    trainer.train_data = train[: args.steps * args.batch_size]
                    trainer.fit()
                    rate = (trainer.step - before_steps) / (trainer.train_seconds - before_time)
                rates[v].append(rate)
        med = {v: sorted(r)[len(r) // 2] for v, r in rates.items()}
        line = f"{name:10s} " + " ".join(f"{med[v]:24.1f}" for v in variants)
        line += f" {med['pyro_lvm'] / med['plain']:10.2f} {med['pyro_lvm eager'] / med['plain']:11.2f}"
        if args.compile:
            line += (f" {med['pyro_lvm compiled'] / med['plain compiled']:19.2f}"
                     f" {med['pyro_lvm compiled'] / med['pyro_lvm']:21.2f}")
        print(line, flush=True)


def quality(data, args):
    """Train both for ``args.epochs`` epochs, alternating epoch by epoch so that both
    see the same machine state (this CPU's speed drifts by 30% over minutes)."""
    print(f"{'objective':10s} {'plain NLL':>10s} {'pyro_lvm NLL':>13s} {'diff':>6s} "
          f"{'plain steps/s':>14s} {'pyro_lvm steps/s':>17s} {'ratio':>6s}")
    n = data.train.shape[0]
    steps_per_epoch = math.ceil(n / args.batch_size)
    for name in args.objectives:
        k = OBJECTIVES[name]
        torch.manual_seed(args.seed)
        plain = PlainVAE(data.input_dim, args.latent_dim, args.hidden)
        trainer = pyro_trainer(data.train, k, args, epochs=0)
        opt, plain_seconds = None, 0.0
        for epoch in range(args.epochs):
            rate, opt = plain_train(plain, data.train, k, steps_per_epoch, args.batch_size, args.lr,
                                    args.seed + epoch, opt)
            plain_seconds += steps_per_epoch / rate
            trainer.config.epochs = epoch + 1
            trainer.fit()
        plain_rate = args.epochs * steps_per_epoch / plain_seconds
        pyro_rate = trainer.step / trainer.train_seconds
        torch.manual_seed(0)
        nll_plain = plain_nll(plain, data.test, args.eval_particles)
        pyro.set_rng_seed(0)
        nll_pyro = -log_marginal_likelihood(trainer.model.model, trainer.model.guide, data.test,
                                            num_particles=args.eval_particles).mean().item()
        print(f"{name:10s} {nll_plain:10.2f} {nll_pyro:13.2f} {nll_pyro - nll_plain:6.2f} "
              f"{plain_rate:14.1f} {pyro_rate:17.1f} {pyro_rate / plain_rate:6.2f}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="binarized_mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--objectives", default="elbo,iwae5,iwae50")
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--hidden", default="200,200")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=300, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=0, help="> 0: also train both fully and compare NLL")
    p.add_argument("--eval-particles", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--configs", default="custom", help="comma-separated: custom, " + ", ".join(CONFIGS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true",
                   help="speed: also time both sides with their losses compiled by torch.compile")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                   help="the torch.compile mode of --compile (reduce-overhead: CUDA graphs on a GPU)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = p.parse_args()
    args.objectives = [o for o in args.objectives.split(",") if o]
    args.hidden = tuple(int(h) for h in args.hidden.split(","))
    args.configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in args.configs if c != "custom" and c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration {unknown[0]!r}; choose from custom, {', '.join(CONFIGS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.epochs > 0 and device.type != "cpu":
        p.error("--epochs (the quality comparison) runs on the CPU only; time steps on a GPU without it")
    data = load_dataset(args.dataset, args.data_dir)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, threads {torch.get_num_threads()}"
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, {where}, {args.dataset}")
    for name in args.configs:
        if name != "custom":
            args.hidden, args.latent_dim, args.batch_size = CONFIGS[name]
        print(f"[{name}] {data.input_dim}-{'-'.join(map(str, args.hidden))}-{args.latent_dim}, "
              f"batch {args.batch_size}", flush=True)
        if args.epochs > 0:
            quality(data, args)
        else:
            speed(data.train.to(device), args)


if __name__ == "__main__":
    main()
