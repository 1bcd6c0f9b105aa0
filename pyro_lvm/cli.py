"""The ``pyro-lvm`` command: argument parsing only.

Models, objectives and data sets come from their registries; each model's
options come from the fields of its config dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any, Dict, List, Optional

from pyro_lvm.data import DATASETS, DataNotFoundError
from pyro_lvm.nn import parse_hidden
from pyro_lvm.objectives import OBJECTIVES, SCHEDULES
from pyro_lvm.registry import MODELS
from pyro_lvm.train import TrainConfig, TrainingDivergedError

#: config fields that come from the data, not from the command line
_FROM_DATA = {"input_dim"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _hidden_arg(text: str):
    try:
        return parse_hidden(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_config_options(parser: argparse.ArgumentParser, config_cls) -> List[str]:
    hints = typing.get_type_hints(config_cls)
    names = []
    group = parser.add_argument_group(f"{config_cls.__name__} options")
    for f in dataclasses.fields(config_cls):
        if f.name in _FROM_DATA:
            continue
        hint = hints[f.name]
        default = f.default
        if typing.get_origin(hint) is tuple:
            kind, shown = _hidden_arg, ",".join(map(str, default))
        elif hint is bool:
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=None,
                               help=f"(default: {default})")
            names.append(f.name)
            continue
        else:
            kind, shown = hint, default
        group.add_argument(_flag(f.name), type=kind, default=None, help=f"(default: {shown})")
        names.append(f.name)
    return names


def _add_train_parser(sub) -> None:
    train = sub.add_parser("train", help="train a model and evaluate it on the test split")
    models = train.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name in MODELS.names():
        cls = MODELS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        p = models.add_parser(name, help=doc, description=doc)
        p.set_defaults(model_fields=_add_config_options(p, cls.Config))
        d = p.add_argument_group("data")
        d.add_argument("--dataset", default="binarized_mnist_small", choices=DATASETS.names(),
                       help="data set (default: the small binarized MNIST shipped in the package)")
        d.add_argument("--data-dir", default=None, help="data directory (default: $PYRO_LVM_DATA, "
                       "else a cache folder; missing files are downloaded)")
        o = p.add_argument_group("objective")
        o.add_argument("--objective", default="elbo", choices=OBJECTIVES.names())
        o.add_argument("--particles", type=int, default=None, help="samples per data point (K)")
        o.add_argument("--gradient", default=None, choices=("reparam", "dreg"),
                       help="IWAE gradient estimator")
        o.add_argument("--beta", type=float, default=None, help="KL weight (default 1)")
        o.add_argument("--kl-anneal", default="none", choices=SCHEDULES.names())
        o.add_argument("--anneal-steps", type=int, default=10000)
        o.add_argument("--anneal-start", type=float, default=0.01)
        o.add_argument("--free-bits", type=float, default=None, help="nats per latent dimension")
        t = p.add_argument_group("training")
        defaults = TrainConfig.__dataclass_fields__
        t.add_argument("--epochs", type=int, default=defaults["epochs"].default)
        t.add_argument("--batch-size", type=int, default=defaults["batch_size"].default)
        t.add_argument("--lr", type=float, default=defaults["lr"].default)
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
        t.add_argument("--clip-norm", type=float, default=None)
        t.add_argument("--no-progress", action="store_true", help="no progress bars")
        r = p.add_argument_group("run")
        r.add_argument("--out", required=True, help="run folder to write")
        r.add_argument("--resume", action="store_true", help="continue from RUN's checkpoint")
        r.add_argument("--eval-particles", type=int, default=1000,
                       help="particles for the test log-likelihood (default 1000)")
        r.add_argument("--no-figures", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-lvm", description="Latent-variable models in Pyro.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train_parser(sub)
    ev = sub.add_parser("evaluate", help="evaluate a trained run on its test split")
    ev.add_argument("run", metavar="RUN")
    ev.add_argument("--particles", type=int, default=1000)
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--no-progress", action="store_true")
    sub.add_parser("list", help="list models, objectives, data sets and schedules")
    return parser


def _train(args) -> Dict[str, Any]:
    from pyro_lvm.runs import train_run

    model_options = {k: getattr(args, k) for k in args.model_fields if getattr(args, k) is not None}
    objective_options = {"num_particles": args.particles, "gradient": args.gradient,
                         "beta": args.beta, "free_bits": args.free_bits}
    if args.kl_anneal != "none":
        objective_options.update(kl_anneal=args.kl_anneal, anneal_steps=args.anneal_steps,
                                 anneal_start=args.anneal_start)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        device=args.device, progress=not args.no_progress, clip_norm=args.clip_norm)
    return train_run(args.model, args.out, dataset=args.dataset, data_dir=args.data_dir,
                     model_options=model_options, objective=args.objective,
                     objective_options={k: v for k, v in objective_options.items() if v is not None},
                     train=train, eval_particles=args.eval_particles, resume=args.resume,
                     figures=not args.no_figures)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            result = {"models": MODELS.names(), "objectives": OBJECTIVES.names(),
                      "datasets": DATASETS.names(), "kl_schedules": SCHEDULES.names()}
        elif args.command == "train":
            result = _train(args)
        else:
            from pyro_lvm.runs import evaluate_run

            if args.particles < 1:
                raise ValueError("--particles must be positive")
            result = evaluate_run(args.run, num_particles=args.particles, data_dir=args.data_dir,
                                  device=args.device, seed=args.seed, progress=not args.no_progress)
    except (ValueError, TypeError, KeyError, FileNotFoundError, DataNotFoundError,
            TrainingDivergedError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"pyro-lvm: error: {message}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
