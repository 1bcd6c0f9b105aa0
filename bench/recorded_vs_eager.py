"""What recording the training step buys a model: the Trainer's steps per second with the loss
recorded and replayed (the default) against eager steps (``TrainConfig(trace=False)``).

Both train the same model from the same seed on the first ``--rows`` rows of a data set, in
alternation, ``--repeats`` times; the rate is taken over the second epoch (the first records
the graphs and checks them against eager steps), and the medians are printed with their ratio::

    python bench/recorded_vs_eager.py --data-dir ../shared/data --model vqvae --option likelihood=bernoulli
    python bench/recorded_vs_eager.py --data-dir ../shared/data --model vqvae --option likelihood=bernoulli --device cuda
    python bench/recorded_vs_eager.py --data-dir ../shared/data --model vqvae --option likelihood=bernoulli \\
        --option hidden=[16] --option num_latents=2 --option code_dim=4 --option codebook_size=16 --batch-size 8
"""

import argparse
import json
import warnings

import torch

from pyro_lvm.data import load_dataset
from pyro_lvm.objectives import OBJECTIVES
from pyro_lvm.registry import MODELS
from pyro_lvm.train import TrainConfig, Trainer


def option(text):
    """``name=value``, the value read as JSON where it can be (numbers, lists), else a string."""
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dataset", default="binarized_mnist")
    p.add_argument("--model", default="vqvae", choices=MODELS.names())
    p.add_argument("--objective", default="elbo", choices=OBJECTIVES.names())
    p.add_argument("--option", type=option, action="append", default=[],
                   help="a model option, name=value (repeat); a list as [16, 8]")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--rows", type=int, default=6000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="e.g. cuda")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = load_dataset(args.dataset, args.data_dir).train[:args.rows]
    options = dict(args.option)
    rates = {True: [], False: []}
    for _ in range(args.repeats):
        for trace in (True, False):
            torch.manual_seed(0)
            model = MODELS.get(args.model).from_config({"input_dim": x.shape[1], **options})
            trainer = Trainer(model, OBJECTIVES.get(args.objective)(), x,
                              config=TrainConfig(epochs=2, batch_size=args.batch_size, progress=False, trace=trace,
                                                 device=args.device))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                trainer.fit()
            first, second = trainer.history[-2:]
            rates[trace].append((second["step"] - first["step"]) / (second["train_seconds"] - first["train_seconds"]))
            if trace and trainer.traced is None:
                raise SystemExit(f"not recorded: {trainer.not_traced}")
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"threads {args.threads}"
    print(f"torch {torch.__version__}, {where}, {args.dataset} ({args.rows} rows), model {args.model} "
          f"{options}, objective {args.objective}, batch {args.batch_size}; second epoch, median of {args.repeats}")
    print(f"recorded {med[True]:.1f} steps/s, eager {med[False]:.1f} steps/s, recorded/eager {med[True] / med[False]:.2f}")


if __name__ == "__main__":
    main()
