"""
Sentence VAE on the Penn Treebank, against its LSTM language model
==================================================================

Trains the LSTM language model and the sentence VAE with the cures for
posterior collapse (word dropout, linear KL annealing, free bits) at the
same budget, then prints perplexity, KL, mutual information and active
units of both, and a few sentences decoded from the prior::

    python examples/text_vae.py --data-dir ../shared/data --epochs 2 --out runs/text

``--data-file`` trains on your own text (one sentence per line) instead.
"""

import argparse
import json
from pathlib import Path

from pyro_lvm.runs import train_run
from pyro_lvm.runs_text import sample_run
from pyro_lvm.train import TrainConfig


def main(args):
    data = {"dataset": "ptb"} if args.data_file is None else {"dataset": "text",
                                                              "data_options": {"data_file": args.data_file}}
    sizes = {"embed_dim": args.embed_dim, "hidden_dim": args.hidden_dim}
    train = TrainConfig(epochs=args.epochs, batch_size=None, lr=None)  # the data set's batch size and lr
    out = Path(args.out)
    lm = train_run("lstmlm", out / "lstmlm", data_dir=args.data_dir, model_options=sizes, train=train,
                   **data)
    vae = train_run("textvae", out / "textvae", data_dir=args.data_dir,
                    model_options={**sizes, "word_dropout": args.word_dropout, "encoder_hidden_dim": args.hidden_dim},
                    objective_options={"kl_anneal": "linear", "anneal_steps": args.anneal_steps,
                                       "free_bits": args.free_bits},
                    train=train, eval_particles=args.eval_particles, **data)
    keys = ("test_ppl", "test_nll", "test_kl", "mutual_info", "active_units", "tokens_per_second")
    summary = {"lstmlm_" + k: lm[k] for k in keys} | {"textvae_" + k: vae[k] for k in keys}
    summary["samples"] = " | ".join(sample_run(out / "textvae", num=3)["sentences"])
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="sentence VAE vs LSTM language model")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--data-file", default=None, help="your own sentences instead of the Penn Treebank")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--word-dropout", type=float, default=0.3)
    p.add_argument("--anneal-steps", type=int, default=5000)
    p.add_argument("--free-bits", type=float, default=0.25)
    p.add_argument("--eval-particles", type=int, default=50)
    p.add_argument("--out", default="runs/text")
    main(p.parse_args())
