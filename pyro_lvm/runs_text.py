"""Generation from trained sentence models: prior samples, homotopies, reconstructions.

Each function loads a run folder (its model and its ``vocab.json``) and
returns plain strings of vocabulary words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import pyro
import torch

from pyro_lvm.data.text import Vocabulary, to_tensor
from pyro_lvm.models.text_vae import SentenceModel, TextVAE, words
from pyro_lvm.runs import VOCAB, load_run


def load_text_run(run_dir, device: str = "cpu"):
    """``(model, vocab, config)`` of a run of a sentence model."""
    model, config = load_run(run_dir, device)  # checks the device
    if not isinstance(model, SentenceModel):
        raise ValueError(f"{run_dir} holds a {config['model']} model; sentence generation needs "
                         "textvae or lstmlm (for an image run, pyro-lvm sample writes a grid of images)")
    vocab_path = Path(run_dir) / VOCAB
    if not vocab_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {VOCAB}: it was not trained on text")
    return model.eval(), Vocabulary.load(vocab_path), config


def _encode_sentences(sentences: Sequence[str], vocab: Vocabulary) -> torch.Tensor:
    tokens = [s.split() for s in sentences]
    empty = [i for i, t in enumerate(tokens) if not t]
    if empty:
        raise ValueError(f"sentence {empty[0] + 1} is empty")
    return to_tensor(tokens, vocab)


def sample_run(run_dir, num: int = 10, greedy: bool = True, seed: int = 0,
               device: str = "cpu") -> Dict[str, Any]:
    """``num`` sentences: ``z`` from the prior, decoded greedily (``textvae``), or drawn
    word by word (``lstmlm``, or ``greedy=False``)."""
    if num < 1:
        raise ValueError(f"num must be positive, got {num}")
    model, vocab, config = load_text_run(run_dir, device)
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        if isinstance(model, TextVAE):
            z = model.prior(num).sample()
            tokens = model.generate_tokens(z, num, greedy=greedy)
            mode = "z ~ prior, " + ("greedy" if greedy else "sampled words")
        else:
            tokens = model.generate_tokens(None, num, greedy=False)
            mode = "sampled words"
    return {"model": config["model"], "decoding": mode, "sentences": words(vocab, tokens.tolist())}


def interpolate_run(run_dir, first: str, second: str, steps: int = 5, beam_size: int = 0,
                    device: str = "cpu") -> Dict[str, Any]:
    """A homotopy: decodings of evenly spaced points between the posterior means of two sentences."""
    model, vocab, config = load_text_run(run_dir, device)
    if not isinstance(model, TextVAE):
        raise ValueError(f"interpolation needs a latent code: {config['model']} has none (use textvae)")
    x = _encode_sentences([first, second], vocab).to(device)
    rows = model.homotopy(x[0], x[1], steps=steps, beam_size=beam_size)
    unknown = sorted({w for s in (first, second) for w in s.split() if w not in vocab.index})
    return {"from": first, "to": second, "steps": steps,
            "decoding": f"beam search ({beam_size})" if beam_size else "greedy",
            "unknown_words": unknown, "sentences": words(vocab, rows)}


def reconstruct_run(run_dir, sentences: List[str], beam_size: int = 0, device: str = "cpu") -> Dict[str, Any]:
    """Each sentence encoded (posterior mean) and decoded again."""
    model, vocab, config = load_text_run(run_dir, device)
    if not isinstance(model, TextVAE):
        raise ValueError(f"reconstruction needs an encoder: {config['model']} has none (use textvae)")
    x = _encode_sentences(sentences, vocab).to(device)
    with torch.no_grad():
        z = model.encode(x).mean
        rows = model.beam_search(z, beam_size) if beam_size else model.generate_tokens(z, len(sentences),
                                                                                        greedy=True).tolist()
    return {"inputs": list(sentences), "reconstructions": words(vocab, rows)}
