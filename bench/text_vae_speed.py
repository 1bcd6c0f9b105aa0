"""Tokens per second of pyro_lvm's sentence models against a plain PyTorch LSTM language model.

All three train on the same length-bucketed PTB batches, with the same
embedding / LSTM / output sizes and Adam; timed in interleaved repeats (this
machine's speed drifts), median reported, ratio = pyro_lvm / plain:

* ``plain``: embedding, LSTM, linear, masked cross-entropy, no Pyro;
* ``lstmlm``: pyro_lvm's LM through the ``elbo`` objective (no latent: the
  exact log-likelihood, Pyro's model/trace machinery around the same maths);
* ``textvae``: the sentence VAE (an encoder LSTM and ``z`` on top: more
  work, shown for reference).

    python bench/text_vae_speed.py --data-dir ../shared/data
"""

import argparse
import time

import pyro
import torch
from torch import nn
from torch.nn import functional as F

from pyro_lvm.data import load_dataset
from pyro_lvm.data.text import BOS_INDEX, PAD_INDEX, lengths
from pyro_lvm.train import adam
from pyro_lvm.models import LSTMLM, TextVAE
from pyro_lvm.base import param_store_registration
from pyro_lvm.objectives import ELBO


class PlainLM(nn.Module):
    def __init__(self, vocab, embed, hidden):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=PAD_INDEX)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def loss(self, x, n_data):
        x = x[:, : int(lengths(x).max())]
        inputs = torch.cat([torch.full_like(x[:, :1], BOS_INDEX), x[:, :-1]], 1)
        h, _ = self.lstm(self.embed(inputs))
        nll = F.cross_entropy(self.out(h).flatten(0, 1), x.flatten(), ignore_index=PAD_INDEX, reduction="sum")
        return nll * (n_data / x.shape[0])


def run(step, batches, data):
    tokens, start = 0, time.perf_counter()
    for b in batches:
        x = data[b]
        step(x)
        tokens += int(lengths(x).sum())
    return tokens / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=None, help="default: the data set's (16)")
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--steps", type=int, default=100, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    data = load_dataset("ptb", args.data_dir)
    n, vocab = data.train.shape[0], len(data.vocab)
    args.batch_size = args.batch_size or data.default_batch_size
    torch.manual_seed(0)
    sizes = dict(embed_dim=args.embed_dim, hidden_dim=args.hidden_dim)
    plain = PlainLM(vocab, args.embed_dim, args.hidden_dim)
    models = {"lstmlm": LSTMLM(vocab_size=vocab, **sizes),
              "textvae": TextVAE(vocab_size=vocab, encoder_hidden_dim=args.hidden_dim, **sizes)}
    objective = ELBO()
    steps = {}
    opt = adam(plain.parameters(), 1e-3)  # the optimizer pyro_lvm's Trainer uses

    def plain_step(x):
        loss = plain.loss(x, n)
        opt.zero_grad()
        loss.backward()
        opt.step()

    steps["plain"] = plain_step
    for name, m in models.items():
        o = adam(m.parameters(), 1e-3)

        def step(x, m=m, o=o):
            # as the Trainer runs it: torch's Adam holds the parameters, Pyro's param store is not needed
            with pyro.validation_enabled(False), param_store_registration(False):
                loss = objective.terms(m.model, m.guide, x, data_size=n).surrogate
            o.zero_grad()
            loss.backward()
            o.step()

        steps[name] = step
    g = torch.Generator().manual_seed(0)
    batches = data.batch_order(n, args.batch_size, g)
    rates = {k: [] for k in steps}
    for name, step in steps.items():  # warm up
        run(step, batches[:5], data.train)
    for rep in range(args.repeats):
        chunk = batches[rep * args.steps:(rep + 1) * args.steps]
        for name, step in steps.items():
            rates[name].append(run(step, chunk, data.train))
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, threads {torch.get_num_threads()}, PTB, "
          f"vocab {vocab}, embed {args.embed_dim}, hidden {args.hidden_dim}, batch {args.batch_size}")
    print(f"{'':10s} {'tokens/s':>10s} {'ratio to plain':>15s}")
    for k, v in med.items():
        print(f"{k:10s} {v:10.0f} {v / med['plain']:15.2f}")


if __name__ == "__main__":
    main()
