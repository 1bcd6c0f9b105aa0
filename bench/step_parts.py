"""What a pyro_lvm training step of the VAE costs beyond the same maths without Pyro, part by part.

Times, interleaved over ``--repeats`` rounds of ``--steps`` steps (median of the rounds, one
thread), the forward pass of the negative ELBO of pyro_lvm's VAE computed three ways on the
same networks and minibatch:

* ``direct``: the model's own networks and distributions called by hand (``encode``, ``prior``,
  ``decode`` and their ``log_prob``), no Pyro;
* ``traced``: the objective's forward pass, :func:`pyro_lvm.objectives.traces.trace_pair`
  (``poutine.trace`` of the guide, ``poutine.replay`` of the model, the data plate) and the
  scaled sum of the sites' log densities, as the Trainer runs it;
* ``step``: a whole Trainer step (forward, backward, fused Adam).

The difference ``traced - direct`` is the cost of Pyro's handlers per step::

    python bench/step_parts.py --data-dir ../shared/data
    python bench/step_parts.py --data-dir ../shared/data --hidden 200,200 --latent-dim 50 --batch-size 100
"""

import argparse
import time

import pyro
import torch

from pyro_lvm.base import param_store_registration
from pyro_lvm.data import load_dataset
from pyro_lvm.models import VAE
from pyro_lvm.objectives import ELBO
from pyro_lvm.objectives.elbo import elbo_terms_from_traces
from pyro_lvm.objectives.traces import trace_pair
from pyro_lvm.train import TrainConfig, Trainer


def direct_loss(m: VAE, x: torch.Tensor, n: int) -> torch.Tensor:
    """The negative ELBO of one reparameterized draw, the model's pieces called by hand."""
    q = m.encode(x)
    z = q.rsample()
    elbo = m.decode(z).log_prob(x).sum() + m.prior(x.shape[0]).log_prob(z).sum() - q.log_prob(z).sum()
    return -elbo * (n / x.shape[0])


def traced_loss(m: VAE, x: torch.Tensor, n: int) -> torch.Tensor:
    model_trace, guide_trace = trace_pair(m.model, m.guide, (x,), {"data_size": n})
    return elbo_terms_from_traces(model_trace, guide_trace)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--hidden", default="8")
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    x = load_dataset("binarized_mnist", args.data_dir).train
    n, b = x.shape[0], args.batch_size
    hidden = tuple(int(h) for h in args.hidden.split(","))
    m = VAE(input_dim=x.shape[1], latent_dim=args.latent_dim, hidden=hidden)
    trainer = Trainer(m, ELBO(), x, config=TrainConfig(epochs=1, batch_size=b, progress=False))
    batches = [x[i * b:(i + 1) * b] for i in range(args.steps)]

    def forward(fn):
        def run():
            with torch.no_grad():
                for xb in batches:
                    fn(m, xb, n)
        return run

    def steps():
        for xb in batches:
            trainer.train_step(xb)

    parts = {"direct": forward(direct_loss), "traced": forward(traced_loss), "step": steps}
    times = {k: [] for k in parts}
    with pyro.validation_enabled(False), param_store_registration(False):
        torch.manual_seed(0)  # the same maths: with the same draws the two forward passes agree
        direct = direct_loss(m, batches[0], n)
        torch.manual_seed(0)
        traced = traced_loss(m, batches[0], n)
        if not torch.allclose(direct, traced, rtol=1e-4):
            raise RuntimeError(f"direct and traced losses differ: {direct.item()} against {traced.item()}")
        for _ in range(args.repeats):
            for name, run in parts.items():
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) / args.steps * 1e6)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"torch {torch.__version__}, pyro {pyro.__version__}; VAE {x.shape[1]}-{args.hidden}-{args.latent_dim}, "
          f"batch {b}; microseconds per step (median of {args.repeats} rounds of {args.steps})")
    print(f"  forward, direct (no Pyro)     {med['direct']:8.0f}")
    print(f"  forward, traced (as trained)  {med['traced']:8.0f}   Pyro's handlers: {med['traced'] - med['direct']:.0f}")
    print(f"  whole training step           {med['step']:8.0f}")


if __name__ == "__main__":
    main()
