"""Tokens per second of pyro_lvm's sentence models against a plain PyTorch LSTM language model.

All four train on the same length-bucketed PTB batches, with the same
embedding / LSTM / output sizes and Adam; timed in interleaved repeats (this
machine's speed drifts), median reported, ratio = pyro_lvm / the same maths in
plain PyTorch:

* ``plain``: embedding, LSTM, linear, masked cross-entropy, no Pyro;
* ``lstmlm``: pyro_lvm's LM through the ``elbo`` objective (no latent: the
  exact log-likelihood, Pyro's model/trace machinery around the same maths);
* ``plain textvae``: the sentence VAE in plain PyTorch (an encoder LSTM whose
  state at ``<eos>`` gives q(z | w), one reparameterized z, the decoder fed z
  at every step, in its initial state and at its output layer; the negative
  ELBO with log p(z) - log q(z) at the sample, as objective ``elbo`` has it);
* ``textvae``: pyro_lvm's sentence VAE, same sizes, through ``elbo``.

    python bench/text_vae_speed.py --data-dir ../shared/data [--device cuda]
"""

import argparse
import math
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


class PlainTextVAE(nn.Module):
    def __init__(self, vocab, embed, hidden, encoder_hidden, latent, min_scale=1e-4):
        super().__init__()
        self.encoder_embed = nn.Embedding(vocab, embed, padding_idx=PAD_INDEX)
        self.encoder = nn.LSTM(embed, encoder_hidden, batch_first=True)
        self.to_posterior = nn.Linear(encoder_hidden, 2 * latent)
        self.embed = nn.Embedding(vocab, embed, padding_idx=PAD_INDEX)
        self.lstm = nn.LSTM(embed + latent, hidden, batch_first=True)
        self.init_state = nn.Linear(latent, 2 * hidden)
        self.out = nn.Linear(hidden + latent, vocab)
        self.min_scale = min_scale

    def loss(self, x, n_data):
        x = x[:, : int(lengths(x).max())]
        b, t = x.shape
        states, _ = self.encoder(self.encoder_embed(x))
        h = states[torch.arange(b, device=x.device), lengths(x) - 1]
        loc, raw = self.to_posterior(h).chunk(2, -1)
        scale = F.softplus(raw) + self.min_scale
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        log_q = (-0.5 * eps ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_p_z = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        inputs = torch.cat([torch.full_like(x[:, :1], BOS_INDEX), x[:, :-1]], 1)
        every_step = z.unsqueeze(1).expand(b, t, z.shape[-1])
        h0, c0 = torch.tanh(self.init_state(z)).chunk(2, -1)
        out, _ = self.lstm(torch.cat([self.embed(inputs), every_step], -1),
                           (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()))
        logits = self.out(torch.cat([out, every_step], -1))
        nll = F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="none").view(b, t)
        nll = (nll * (x != PAD_INDEX)).sum(-1)
        return (nll - log_p_z + log_q).sum() * (n_data / b)


def run(step, batches, data, token_counts):
    """Tokens per second of ``step`` over ``batches`` (on a GPU: until its work is done)."""
    tokens, start = 0, time.perf_counter()
    for b in batches:
        step(data[b])
        tokens += int(token_counts[b].sum())  # counted on the host
    if data.is_cuda:
        torch.cuda.synchronize(data.device)
    return tokens / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=None, help="default: the data set's (16)")
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--steps", type=int, default=100, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="e.g. cuda")
    args = p.parse_args()
    data = load_dataset("ptb", args.data_dir)
    n, vocab = data.train.shape[0], len(data.vocab)
    args.batch_size = args.batch_size or data.default_batch_size
    torch.manual_seed(0)
    sizes = dict(embed_dim=args.embed_dim, hidden_dim=args.hidden_dim)
    plain = PlainLM(vocab, args.embed_dim, args.hidden_dim)
    plain_vae = PlainTextVAE(vocab, args.embed_dim, args.hidden_dim, args.hidden_dim, TextVAE.Config.latent_dim)
    models = {"lstmlm": LSTMLM(vocab_size=vocab, **sizes),
              "textvae": TextVAE(vocab_size=vocab, encoder_hidden_dim=args.hidden_dim, **sizes)}
    device = torch.device(args.device)
    for net in (plain, plain_vae, *models.values()):  # before their optimizers are made
        net.to(device)
    objective = ELBO()
    steps = {}
    for name, net in (("plain", plain), ("plain textvae", plain_vae)):
        o = adam(net.parameters(), 1e-3)  # the optimizer pyro_lvm's Trainer uses

        def plain_step(x, net=net, o=o):
            loss = net.loss(x, n)
            o.zero_grad()
            loss.backward()
            o.step()

        steps[name] = plain_step
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
    train, token_counts = data.train.to(device), lengths(data.train)
    g = torch.Generator().manual_seed(0)
    batches = data.batch_order(n, args.batch_size, g)
    rates = {k: [] for k in steps}
    for name, step in steps.items():  # warm up
        run(step, batches[:5], train, token_counts)
    for rep in range(args.repeats):
        chunk = batches[rep * args.steps:(rep + 1) * args.steps]
        for name, step in steps.items():
            rates[name].append(run(step, chunk, train, token_counts))
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"threads {torch.get_num_threads()}"
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, {where}, PTB, "
          f"vocab {vocab}, embed {args.embed_dim}, hidden {args.hidden_dim}, batch {args.batch_size}")
    reference = {"plain": "plain", "lstmlm": "plain", "plain textvae": "plain textvae", "textvae": "plain textvae"}
    print(f"{'':14s} {'tokens/s':>10s} {'ratio to its plain PyTorch':>27s}")
    for k, v in med.items():
        print(f"{k:14s} {v:10.0f} {v / med[reference[k]]:27.2f}")


if __name__ == "__main__":
    main()
