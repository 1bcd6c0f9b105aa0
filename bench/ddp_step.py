"""Where a data-parallel training step spends its time: loss and gradients, all-reduce, Adam.

Times ``--steps`` steps of the VAE 784-200-200-50 on binarized MNIST with a global
minibatch of ``--batch-size``, each process taking its shard, and prints the
milliseconds per step of each part, per process::

    OMP_NUM_THREADS=1 python bench/ddp_step.py --data-dir ../shared/data
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 bench/ddp_step.py --data-dir ../shared/data
    OMP_NUM_THREADS=1 python bench/ddp_step.py --data-dir ../shared/data --shard 50   # one shard alone
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 bench/ddp_step.py --data-dir ../shared/data --torch-ddp
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 bench/ddp_step.py --data-dir ../shared/data --no-reduce
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 bench/ddp_step.py --data-dir ../shared/data --torch-ddp --no-reduce

``--overlap`` times the Trainer's own all-reduce (:class:`pyro_lvm.distributed.OverlappedAverage`:
buckets of gradients all-reduced while the backward pass runs; the all-reduce column then holds
only the wait after the backward pass). ``--torch-ddp`` times the reference instead: the same VAE in plain PyTorch (bench/vae_overhead.py's)
under torch's ``DistributedDataParallel``, whose all-reduce runs in buckets while the backward
pass still computes, and Adam.

The ceiling of the speed-up of P processes is the one-process step over (the
step on one shard + the all-reduce): when halving the batch saves little, the
fixed cost per step sets the pace and data parallelism cannot pay.
``--no-reduce`` measures the machine's own ceiling: the processes run their
shards side by side and never communicate (their parameters drift apart), so
the speed-up of its whole step over one process's is what a free all-reduce
would give, with whatever the processes take from each other (cores shared
with other work, memory bandwidth, a shared cache). With ``--torch-ddp`` it runs
plain PyTorch's steps side by side, without ``DistributedDataParallel``: the
ceiling of the same maths written by hand.
"""

import argparse
import sys
import time

import pyro
import torch

from pyro_lvm.data import load_dataset
from pyro_lvm.distributed import OverlappedAverage, average_gradients, init_from_environment, shutdown, world
from pyro_lvm.models import VAE
from pyro_lvm.objectives import ELBO
from pyro_lvm.train import TrainConfig, Trainer


def report(line: str) -> None:
    """Print one line in one write, so that the processes' lines never run into each other."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=100, help="global minibatch")
    p.add_argument("--shard", type=int, default=None, help="points per process (default: batch / processes)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--overlap", action="store_true",
                   help="all-reduce buckets during the backward pass, as the Trainer does (else once after it)")
    p.add_argument("--no-reduce", action="store_true",
                   help="no all-reduce at all: the processes' steps side by side (the ceiling of data parallelism)")
    p.add_argument("--torch-ddp", action="store_true",
                   help="time plain PyTorch under torch's DistributedDataParallel instead")
    args = p.parse_args()
    torch.set_num_threads(1)
    init_from_environment("cpu")
    rank, size = world()
    x = load_dataset("binarized_mnist", args.data_dir).train
    if args.torch_ddp:
        return torch_ddp(x, args, rank, size)
    model = VAE(input_dim=784, latent_dim=50, hidden=(200, 200))
    trainer = Trainer(model, ELBO(), x, config=TrainConfig(epochs=1, batch_size=args.batch_size, progress=False))
    b = args.shard or args.batch_size // size
    parts = {"loss and gradients": 0.0, "all-reduce": 0.0, "Adam": 0.0}
    averager = (OverlappedAverage(trainer.model.parameters()) if args.overlap and size > 1 and not args.no_reduce
                else None)
    reduce = size > 1 and not args.no_reduce

    def step(i):
        start = (i * args.batch_size) % (x.shape[0] - args.batch_size) + rank * b
        t0 = time.perf_counter()
        trainer.optimizer.zero_grad(set_to_none=True)
        if averager is not None:
            averager.start(b / args.batch_size)
        loss = trainer._loss_and_grads(x[start:start + b])
        t1 = time.perf_counter()
        if averager is not None:
            averager.finish(loss)
        elif reduce:
            average_gradients(trainer.model.parameters(), b / args.batch_size, extra=loss)
        t2 = time.perf_counter()
        trainer.optimizer.step()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    with pyro.validation_enabled(False):
        for i in range(20):  # warm up
            step(i)
        if size > 1:
            torch.distributed.barrier()
        begin = time.perf_counter()
        for i in range(args.steps):
            for key, seconds in zip(parts, step(i)):
                parts[key] += seconds
        total = time.perf_counter() - begin
    ms = {k: round(v / args.steps * 1e3, 2) for k, v in parts.items()}
    how = " (overlapped)" if averager is not None else " (no all-reduce)" if size > 1 and not reduce else ""
    report(f"rank {rank} of {size}, {b} points per step{how}: {ms} ms; whole step {total / args.steps * 1e3:.2f} ms")
    shutdown()


def torch_ddp(x, args, rank, size):
    """Whole steps of plain PyTorch's VAE (ELBO, one particle) under ``DistributedDataParallel``."""
    from torch.nn.parallel import DistributedDataParallel
    from vae_overhead import PlainVAE  # this script's folder is on sys.path

    from pyro_lvm.train import adam

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = PlainVAE(784, 50, (200, 200))

        def forward(self, rows):
            return self.vae.loss(rows, 1, x.shape[0])

    torch.manual_seed(0)
    net = Loss()
    wrapped = DistributedDataParallel(net) if size > 1 and not args.no_reduce else net
    opt = adam(net.parameters(), 1e-3)
    b = args.shard or args.batch_size // size

    def step(i):
        start = (i * args.batch_size) % (x.shape[0] - args.batch_size) + rank * b
        opt.zero_grad(set_to_none=True)
        wrapped(x[start:start + b]).backward()
        opt.step()

    for i in range(20):
        step(i)
    if size > 1:
        torch.distributed.barrier()
    begin = time.perf_counter()
    for i in range(args.steps):
        step(i)
    total = time.perf_counter() - begin
    how = " side by side, no all-reduce" if args.no_reduce else " under DDP"
    report(f"rank {rank} of {size}, {b} points per step, plain PyTorch{how if size > 1 else ''}: "
           f"whole step {total / args.steps * 1e3:.2f} ms")
    shutdown()


if __name__ == "__main__":
    main()
