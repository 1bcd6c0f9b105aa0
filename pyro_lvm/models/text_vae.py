r"""Sentence VAE (Bowman et al. 2016), ``textvae``, and its language-model baseline, ``lstmlm``.

Generative story of ``textvae``, for a sentence :math:`w_{1:T}` ending in ``<eos>``:

.. math::

    z \sim \mathcal{N}(0, I_d), \qquad
    w_t \mid w_{<t}, z \sim \mathrm{Categorical}\big(\mathrm{softmax}(W [h_t; z] + b)\big),
    \qquad h_t = \mathrm{LSTM}\big(h_{t-1}, [e(w_{t-1}); z]\big),

with :math:`w_0 = \texttt{<bos>}` and the initial state :math:`(h_0, c_0) =
\tanh(A z + a)`: :math:`z` enters through the initial state and is
concatenated to every input and to the input of the output layer, as in
Dieng et al. 2019's skip-VAE (``skip=False`` drops that last connection:
:math:`W h_t + b`). The guide is
:math:`q_\phi(z \mid w) = \mathcal{N}(\mu_\phi(w), \mathrm{diag}\,\sigma_\phi^2(w))`
from the final state of an LSTM encoder. ``lstmlm`` is the same decoder with
no :math:`z` (:math:`d = 0`): :math:`\log p(w)` in closed form.

Positions after ``<eos>`` hold ``<pad>`` and are masked out of the
likelihood (:class:`SentenceLikelihood`); each batch is cut to its longest
sentence first (by the :class:`~pyro_lvm.train.Trainer`, from lengths it keeps
on the host, when it trains the model: see
:meth:`~pyro_lvm.base.LatentVariableModel.presized`). The cut only saves
time: a batch with more padding gives the same numbers.

**Posterior collapse** and its cures: the decoder can model the sentence
alone, so the ELBO's optimum often has :math:`q(z \mid w) = p(z)` (KL = 0).

* ``word_dropout``: decoder inputs (not targets) dropped with this
  probability during training, so the decoder must lean on :math:`z`. A
  dropped word becomes a zero vector (``word_dropout_token="zero"``, the
  default) or, as in Bowman et al., the ``<unk>`` token
  (``word_dropout_token="unk"``); in the Penn Treebank ``<unk>`` is a real,
  frequent word, and the zero vector keeps the two apart;
* KL annealing, ``beta`` and per-dimension free bits: options of the
  objective (``--kl-anneal``, ``--beta``, ``--free-bits``);
* encoder pretraining with a decoder reset (Li et al. 2019): with
  ``--pretrain-steps N`` the KL weight is 0 for N steps (an autoencoder) and
  the model re-initialises its decoder at step N (``reset_decoder_at``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_lvm.base import LatentVariableModel, batch_size_of
from pyro_lvm.data.text import BOS_INDEX, EOS_INDEX, PAD_INDEX, UNK_INDEX, lengths
from pyro_lvm.distributions import StandardNormal
from pyro_lvm.registry import MODELS


class SentenceLikelihood(TorchDistribution):
    r"""Independent categoricals over the positions of padded sentences, padding masked.

    ``logits`` has shape ``(..., B, T, V)``, ``mask`` ``(B, T)``; the event is
    one sentence (``(T,)``) and :meth:`log_prob` sums
    :math:`\log \mathrm{softmax}(\text{logits})_{w_t}` over unmasked positions.

    >>> import torch
    >>> d = SentenceLikelihood(torch.zeros(2, 3, 4), torch.tensor([[1, 1, 0], [1, 0, 0]]).bool())
    >>> d.log_prob(torch.tensor([[1, 2, 0], [3, 0, 0]])) / torch.tensor(4.0).log()  # two words, one word
    tensor([-2., -1.])
    """

    arg_constraints: Dict[str, Any] = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor, validate_args=None):
        self.logits, self.mask = logits, mask
        super().__init__(logits.shape[:-2], logits.shape[-2:-1], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return SentenceLikelihood(self.logits.expand(batch_shape + self.logits.shape[-2:]), self.mask)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = self.logits.shape[:-1]
        target = value.expand(shape)
        nll = F.cross_entropy(self.logits.reshape(-1, self.logits.shape[-1]), target.reshape(-1),
                              reduction="none").reshape(shape)
        return -(nll * self.mask.to(nll.dtype)).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        """Positions drawn independently from the given logits (teacher-forced; for
        generation use :meth:`SentenceModel.generate_tokens`)."""
        draw = dist.Categorical(logits=self.logits).sample(sample_shape)
        return draw.masked_fill(~self.mask, PAD_INDEX)


class LSTMDecoder(nn.Module):
    """Embedding, one-layer LSTM conditioned on an optional ``z``, linear output."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, latent_dim: int = 0,
                 dropout: float = 0.0, skip: bool = False):
        super().__init__()
        self.latent_dim = latent_dim
        self.skip = skip and latent_dim > 0
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_INDEX)
        self.lstm = nn.LSTM(embed_dim + latent_dim, hidden_dim, batch_first=True)
        self.init_state = nn.Linear(latent_dim, 2 * hidden_dim) if latent_dim else None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim + (latent_dim if self.skip else 0), vocab_size)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def initial_state(self, z: Optional[torch.Tensor]):
        if z is None:
            return None
        h, c = torch.tanh(self.init_state(z)).chunk(2, -1)
        return h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()

    def forward(self, inputs: torch.Tensor, z: Optional[torch.Tensor] = None, state=None):
        """Logits ``(N, T, V)`` for inputs ``(N, T)``; returns ``(logits, state)``."""
        emb = self.embed(inputs)
        if z is not None:
            emb = torch.cat([emb, z.unsqueeze(-2).expand(emb.shape[:-1] + z.shape[-1:])], -1)
            if state is None:
                state = self.initial_state(z)
        out, state = self.lstm(emb, state)
        out = self.dropout(out)
        if self.skip:  # z also feeds the output layer directly (a skip connection)
            out = torch.cat([out, z.unsqueeze(-2).expand(out.shape[:-1] + z.shape[-1:])], -1)
        return self.out(out), state


@dataclass
class LSTMLMConfig:
    """Hyperparameters of :class:`LSTMLM`."""

    vocab_size: int = 10002
    embed_dim: int = 64
    hidden_dim: int = 128
    dropout: float = 0.0
    max_generate: int = 40

    def __post_init__(self):
        for name in ("vocab_size", "embed_dim", "hidden_dim", "max_generate"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.vocab_size <= EOS_INDEX:
            raise ValueError("vocab_size must exceed the four special tokens")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TextVAEConfig(LSTMLMConfig):
    """Hyperparameters of :class:`TextVAE`."""

    latent_dim: int = 8
    encoder_hidden_dim: int = 128
    word_dropout: float = 0.0
    word_dropout_token: str = "zero"
    reset_decoder_at: int = 0
    skip: bool = True
    min_scale: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        if self.latent_dim < 1 or self.encoder_hidden_dim < 1:
            raise ValueError("latent_dim and encoder_hidden_dim must be positive")
        if not 0 <= self.word_dropout <= 1:
            raise ValueError(f"word_dropout must be in [0, 1], got {self.word_dropout}")
        if self.word_dropout_token not in ("unk", "zero"):
            raise ValueError(f"word_dropout_token must be 'unk' or 'zero', got {self.word_dropout_token!r}")
        if self.reset_decoder_at < 0:
            raise ValueError(f"reset_decoder_at must be non-negative, got {self.reset_decoder_at}")


class SentenceModel(LatentVariableModel):
    """What :class:`LSTMLM` and :class:`TextVAE` share: data checks, the decoder, generation."""

    not_traceable = "each batch is cut to its longest sentence, a shape that depends on the data"

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        #: size of z (0: a language model with no latent variable)
        self.latent_dim = getattr(c, "latent_dim", 0)
        self.decoder = LSTMDecoder(c.vocab_size, c.embed_dim, c.hidden_dim, self.latent_dim, c.dropout,
                                   getattr(c, "skip", False))

    @property
    def evaluation_width(self) -> int:
        return self.config.vocab_size

    @property
    def data_support(self) -> str:
        return "tokens"

    @property
    def input_dim(self) -> int:
        return self.config.vocab_size

    def check_data(self, x: Any, name: str = "x") -> torch.Tensor:
        """Sentences as a ``LongTensor`` ``(N, T)`` of indices below ``vocab_size``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of word indices, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name} must have shape (num_sentences, length), got {tuple(x.shape)}")
        if x.dtype != torch.long:
            raise ValueError(f"{name} must hold word indices (torch.long), got {x.dtype}")
        if (x < 0).any() or (x >= self.config.vocab_size).any():
            raise ValueError(f"{name} has indices outside [0, {self.config.vocab_size}): "
                             f"[{x.min().item()}, {x.max().item()}]")
        if (lengths(x) == 0).any():
            raise ValueError(f"{name} has an empty row (every sentence ends with <eos>)")
        return x

    def trim(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` cut to its longest sentence (as it comes when the model is
        :meth:`~pyro_lvm.base.LatentVariableModel.presized`: cut already)."""
        return x if self.is_presized else x[:, : int(lengths(x).max())]

    def row_widths(self, data: torch.Tensor) -> torch.Tensor:
        """Each sentence's tokens, ``<eos>`` included."""
        return lengths(data)

    def decoder_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """``<bos>`` followed by the tokens but the last, word dropout applied in training."""
        inputs = torch.cat([torch.full_like(tokens[:, :1], BOS_INDEX), tokens[:, :-1]], 1)
        rate = getattr(self.config, "word_dropout", 0.0)
        if self.training and rate > 0:
            drop = (torch.rand(inputs.shape, device=inputs.device) < rate) & (inputs != PAD_INDEX)
            drop[:, 0] = False  # keep <bos>
            fill = UNK_INDEX if self.config.word_dropout_token == "unk" else PAD_INDEX  # <pad>: a zero vector
            inputs = inputs.masked_fill(drop, fill)
        return inputs

    def sentence_likelihood(self, tokens: torch.Tensor, z: Optional[torch.Tensor]) -> SentenceLikelihood:
        inputs = self.decoder_inputs(tokens)
        if z is not None and z.dim() > 2:  # particles: (K, B, d)
            lead = z.shape[:-1]
            logits, _ = self.decoder(inputs.expand(lead + inputs.shape[-1:]).reshape(-1, inputs.shape[-1]),
                                     z.reshape(-1, z.shape[-1]))
            logits = logits.reshape(lead + logits.shape[-2:])
        else:
            logits, _ = self.decoder(inputs, z)
        return SentenceLikelihood(logits, tokens != PAD_INDEX)

    @torch.no_grad()
    def generate_tokens(self, z: Optional[torch.Tensor], num: int, greedy: bool = False,
                        max_length: Optional[int] = None) -> torch.Tensor:
        """Decode ``num`` sentences word by word (sampling, or ``greedy``): ``(num, max_length + 1)``
        indices, each sentence closed by ``<eos>`` (added at ``max_length`` if need be), then ``<pad>``."""
        max_length = max_length or self.config.max_generate
        device = next(self.parameters()).device
        token = torch.full((num, 1), BOS_INDEX, dtype=torch.long, device=device)
        state, out = None, []
        done = torch.zeros(num, dtype=torch.bool, device=device)
        for _ in range(max_length):
            logits, state = self.decoder(token, z, state)
            logits = logits[:, -1].clone()
            logits[:, [PAD_INDEX, BOS_INDEX]] = -math.inf
            token = logits.argmax(-1, keepdim=True) if greedy else \
                torch.distributions.Categorical(logits=logits).sample().unsqueeze(-1)
            token = token.masked_fill(done.unsqueeze(-1), PAD_INDEX)
            out.append(token)
            done |= token.squeeze(-1) == EOS_INDEX
            if done.all():
                break
        tokens = torch.cat(out, 1)
        unfinished = ~done  # cut at max_length: close with <eos>
        tokens = torch.cat([tokens, torch.where(unfinished, EOS_INDEX, PAD_INDEX).unsqueeze(-1)], 1)
        return F.pad(tokens, (0, max_length + 1 - tokens.shape[1]), value=PAD_INDEX)  # a fixed width

    @torch.no_grad()
    def beam_search(self, z: Optional[torch.Tensor], beam_size: int = 5,
                    max_length: Optional[int] = None) -> List[List[int]]:
        """Most probable sentence per row of ``z`` (or one for the LM) by beam search."""
        max_length = max_length or self.config.max_generate
        rows = 1 if z is None else z.shape[0]
        results = []
        for r in range(rows):
            zr = None if z is None else z[r:r + 1]
            beams = [([], 0.0, None)]  # (tokens, log prob, state)
            finished = []
            for _ in range(max_length):
                candidates = []
                for toks, score, state in beams:
                    last = torch.tensor([[toks[-1] if toks else BOS_INDEX]],
                                        device=next(self.parameters()).device)
                    logits, new_state = self.decoder(last, zr, state)
                    logp = logits[0, -1].log_softmax(-1)
                    logp[[PAD_INDEX, BOS_INDEX]] = -math.inf
                    top = logp.topk(beam_size)
                    for lp, idx in zip(top.values.tolist(), top.indices.tolist()):
                        candidates.append((toks + [idx], score + lp, new_state))
                candidates.sort(key=lambda c: -c[1])
                beams = []
                for cand in candidates[:beam_size]:
                    (finished if cand[0][-1] == EOS_INDEX else beams).append(cand)
                if not beams:
                    break
            best = max(finished or beams, key=lambda c: c[1] / len(c[0]))
            results.append(best[0])
        return results

    def extra_metrics(self, train: torch.Tensor, test: torch.Tensor, metrics: Dict[str, Any],
                      labels=None) -> Dict[str, Any]:
        """``test_ppl`` = exp(total NLL / total tokens, ``<eos>`` counted) and ``tokens_per_second``."""
        out: Dict[str, Any] = {"test_tokens": int(lengths(test).sum())}
        if "test_nll" in metrics:  # a diverged model's NLL can be huge: its perplexity is then inf
            per_token = metrics["test_nll"] * test.shape[0] / out["test_tokens"]
            out["test_ppl"] = math.exp(per_token) if per_token < 700 else math.inf
        if metrics.get("train_seconds"):
            tokens = int(lengths(train).sum()) * metrics.get("epochs", 1)
            out["tokens_per_second"] = tokens / metrics["train_seconds"]
        return out


@MODELS.register("lstmlm")
class LSTMLM(SentenceModel):
    r"""LSTM language model, the baseline of the sentence VAE: :math:`p(w) = \prod_t p(w_t \mid w_{<t})`.

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import LSTMLM
        >>> lm = LSTMLM(vocab_size=8, embed_dim=4, hidden_dim=6)
        >>> x = torch.tensor([[4, 5, 3], [6, 3, 0]])   # two sentences, <eos> = 3, <pad> = 0
        >>> lm.log_prob(x).shape
        torch.Size([2])
    """

    Config = LSTMLMConfig
    latent_sites = ()

    def model(self, x=None, *, data_size=None, num_samples=None):
        batch = batch_size_of(x, num_samples)
        tokens = self.generate_tokens(None, batch) if x is None else self.trim(x)
        with self.data_plate(batch, data_size, tokens.device):
            return pyro.sample("x", self.sentence_likelihood(tokens, None), obs=tokens)

    def guide(self, x, *, data_size=None, num_samples=None):
        pass  # no latent variables

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(w)` per sentence."""
        return self.sentence_likelihood(self.trim(x), None).log_prob(self.trim(x))


@MODELS.register("textvae")
class TextVAE(SentenceModel):
    r"""Bowman et al.'s sentence VAE; see :mod:`pyro_lvm.models.text_vae`.

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import TextVAE
        >>> from pyro_lvm.objectives import ELBO
        >>> vae = TextVAE(vocab_size=8, embed_dim=4, hidden_dim=6, encoder_hidden_dim=6, latent_dim=2)
        >>> x = torch.tensor([[4, 5, 3], [6, 3, 0]])
        >>> ELBO().terms(vae.model, vae.guide, x).loss.isfinite().item()
        True
    """

    Config = TextVAEConfig

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.encoder_embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=PAD_INDEX)
        self.encoder = nn.LSTM(c.embed_dim, c.encoder_hidden_dim, batch_first=True)
        self.to_posterior = nn.Linear(c.encoder_hidden_dim, 2 * c.latent_dim)
        self.register_buffer("decoder_was_reset", torch.tensor(False))

    def set_step(self, step: int) -> None:
        c = self.config
        if c.reset_decoder_at and step >= c.reset_decoder_at and not bool(self.decoder_was_reset):
            self.decoder.reset_parameters()  # Li et al. 2019: a fresh decoder after pretraining
            self.decoder_was_reset.fill_(True)

    def encode(self, x: torch.Tensor) -> dist.Distribution:
        x = self.trim(x)
        out, _ = self.encoder(self.encoder_embed(x))
        # the state after each sentence's <eos>: the LSTM has not seen the padding yet (no lengths
        # read on the host, as packing the sentences would need)
        last = (lengths(x) - 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        loc, raw = self.to_posterior(out.gather(1, last).squeeze(1)).chunk(2, -1)
        return dist.Normal(loc, F.softplus(raw) + self.config.min_scale).to_event(1)

    def prior(self, num: int) -> dist.Distribution:
        return StandardNormal(self.to_posterior.weight.new_empty(num, self.latent_dim)).to_event(1)

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """Sentences are autoregressive: use :meth:`generate_tokens` or :meth:`beam_search`."""
        raise NotImplementedError("a sentence decoder is autoregressive: use generate_tokens or beam_search")

    def model(self, x=None, *, data_size=None, num_samples=None):
        batch = batch_size_of(x, num_samples)
        device = self.to_posterior.weight.device
        with self.data_plate(batch, data_size, device):
            z = pyro.sample("z", self.prior(batch))
            tokens = self.generate_tokens(z, batch) if x is None else self.trim(x)
            return pyro.sample("x", self.sentence_likelihood(tokens, z), obs=tokens)

    def guide(self, x, *, data_size=None, num_samples=None):
        q = self.encode(x)
        with self.data_plate(x.shape[0], data_size, x.device):
            return pyro.sample("z", q)

    def generate(self, num: int, mean: bool = True) -> torch.Tensor:
        """``num`` sentences from the prior (greedy decoding when ``mean``)."""
        return self.generate_tokens(self.prior(num).sample(), num, greedy=mean)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Greedy decoding from the posterior mean of each sentence."""
        return self.generate_tokens(self.encode(x).mean, x.shape[0], greedy=True)

    @torch.no_grad()
    def homotopy(self, a: torch.Tensor, b: torch.Tensor, steps: int = 5, beam_size: int = 0) -> List[List[int]]:
        """Decodings of ``steps`` evenly spaced points from the code of sentence ``a`` to ``b``
        (posterior means; greedy, or beam search with ``beam_size > 0``)."""
        if steps < 2:
            raise ValueError(f"steps must be at least 2, got {steps}")
        za, zb = self.encode(a.unsqueeze(0)).mean, self.encode(b.unsqueeze(0)).mean
        t = torch.linspace(0, 1, steps, device=za.device).unsqueeze(-1)
        z = (1 - t) * za + t * zb
        if beam_size > 0:
            return self.beam_search(z, beam_size)
        return [row.tolist() for row in self.generate_tokens(z, steps, greedy=True)]


def words(vocab, rows: Sequence[Sequence[int]]) -> List[str]:
    """Sentences as strings of vocabulary words (up to ``<eos>``)."""
    return [" ".join(vocab.decode(r)) for r in rows]
