"""The ``pyro-lvm`` command: argument parsing only.

Models, objectives and data sets come from their registries; each model's
options come from the fields of its config dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from pyro_lvm.data import DATASETS, DataNotFoundError
from pyro_lvm.distributed import init_from_environment, is_main, shutdown, world
from pyro_lvm.models.covariance import COVARIANCES
from pyro_lvm.nn import parse_hidden
from pyro_lvm.objectives import OBJECTIVES, SCHEDULES
from pyro_lvm.objectives.annealing import DEFAULT_ANNEAL_START, DEFAULT_ANNEAL_STEPS
from pyro_lvm.registry import MODELS
from pyro_lvm.train import COMPILE_MODES, TrainConfig, TrainingDivergedError

#: config fields that come from the data, not from the command line
_FROM_DATA = {"input_dim", "image_shape"}


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
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is typing.Union and len(inner) == 1:  # Optional[X]: a flag of type X
            hint = inner[0]
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


#: objective arguments that are not command-line flags (built from other flags, or from the model)
_OBJECTIVE_INTERNAL = {"self", "annealing", "max_plate_nesting"}
#: short spellings kept for generated flags
_ALIASES = {"num_particles": ["--particles"]}


def _objective_arguments() -> Dict[str, Dict[str, Any]]:
    """Every argument of every registered objective's constructor: its type, choices and takers."""
    found: Dict[str, Dict[str, Any]] = {}
    for name in OBJECTIVES.names():
        init = OBJECTIVES.get(name).__init__
        hints = typing.get_type_hints(init)
        for param in inspect.signature(init).parameters.values():
            if param.name in _OBJECTIVE_INTERNAL:
                continue
            hint = hints.get(param.name, str)
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if typing.get_origin(hint) is typing.Union and len(args) == 1:  # Optional[X]
                hint = args[0]
            entry = found.setdefault(param.name, {"type": hint, "takers": {}, "help": ""})
            entry["takers"][name] = param.default
            if not entry["help"]:
                entry["help"] = _param_doc(OBJECTIVES.get(name), param.name)
    return found


def _param_doc(cls, name: str) -> str:
    """The text of ``:param ... name:`` in the docstrings of ``cls`` and its bases."""
    for klass in cls.__mro__:
        match = re.search(rf":param (?:[\w\[\], ]+ )?{name}:\s*(.+?)(?:\n\s*:|\n\s*\n|$)",
                          klass.__doc__ or "", re.S)
        if match:
            return " ".join(match.group(1).split()).replace("``", "").replace(":math:", "").replace("`", "")
    return ""


def _add_objective_options(group) -> List[str]:
    """One flag per objective argument, generated from the constructors' signatures."""
    names = []
    for arg, info in sorted(_objective_arguments().items()):
        hint = info["type"]
        kwargs: Dict[str, Any] = {}
        if typing.get_origin(hint) is typing.Literal:
            kwargs["choices"] = typing.get_args(hint)
        else:
            kwargs["type"] = hint
        by_default: Dict[Any, List[str]] = {}
        for objective, default in info["takers"].items():
            by_default.setdefault(default, []).append(objective)
        defaults = "; ".join(f"{'off' if d is None else d} for {', '.join(o)}" for d, o in by_default.items())
        group.add_argument(_flag(arg), *_ALIASES.get(arg, []), dest=arg, default=None,
                           help=f"{info['help']} (default: {defaults})", **kwargs)
        names.append(arg)
    return names


def _int_list(text: str) -> List[int]:
    """``"1..8"`` or ``"1,2,4"`` -> a list of positive integers."""
    try:
        if ".." in text:
            lo, hi = (int(v) for v in text.split(".."))
            values = list(range(lo, hi + 1))
        else:
            values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range like 1..8 or a list like 1,2,4, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected 1 or more, got 0")
    return value


def _start_weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _columns(text: str) -> List[str]:
    columns = [c.strip() for c in text.split(",")]
    if not all(columns):
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, such as a,b; got {text!r}")
    return columns


def _add_gmm_train_options(p: argparse.ArgumentParser) -> None:
    from pyro_lvm.runs_gmm import MIXTURE_FITS

    p.add_argument("--data-file", required=True, help="CSV file with a header row of numeric columns")
    p.add_argument("--columns", type=_columns, default=None, help="columns to use, e.g. a,b (default: all)")
    p.add_argument("--components", type=int, default=3)
    p.add_argument("--covariance", default="full", choices=tuple(COVARIANCES))
    p.add_argument("--method", default="em", choices=MIXTURE_FITS.names(),
                   help="how the mixture is fitted (runs_gmm.MIXTURE_FITS)")
    p.add_argument("--restarts", type=int, default=5, help="EM k-means++ restarts (EM initializes every method)")
    p.add_argument("--tol", type=float, default=1e-6, help="EM tolerance on the mean log-likelihood")
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--reg-covar", type=float, default=1e-6, help="covariance floor")
    p.add_argument("--svi-steps", type=int, default=300, help="full-batch steps of the enumerated ELBO")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--num-samples", type=int, default=500, help="NUTS draws per chain")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--num-chains", type=int, default=2)
    p.add_argument("--plot-columns", type=_columns, default=None, help="two columns for the scatter plot")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace the fit in a non-empty --out")


def _run_gmm_train(args) -> Dict[str, Any]:
    from pyro_lvm.runs_gmm import train_gmm_run

    return train_gmm_run(args.data_file, args.out, components=args.components, covariance=args.covariance,
                         method=args.method, columns=args.columns, restarts=args.restarts, tol=args.tol,
                         max_iter=args.max_iter, reg_covar=args.reg_covar, seed=args.seed,
                         svi_steps=args.svi_steps, lr=args.lr, num_samples=args.num_samples,
                         warmup=args.warmup, num_chains=args.num_chains, plot_columns=args.plot_columns,
                         progress=not args.no_progress, overwrite=args.overwrite)


def _add_generic_train_options(p: argparse.ArgumentParser, cls) -> None:
    p.set_defaults(model_fields=_add_config_options(p, cls.Config))
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default=None, choices=DATASETS.names(),
                   help="data set (default: the small binarized MNIST shipped in the package)")
    d.add_argument("--data-dir", default=None, help="data directory (default: $PYRO_LVM_DATA, "
                   "else a cache folder; missing files are downloaded)")
    d.add_argument("--data-file", default=None,
                   help="your own data, chosen by extension: X.npy or X.npz images or vectors (sets --dataset "
                   "arrays), else a text file of one sentence per line (sets --dataset text)")
    d.add_argument("--image-folder", default=None,
                   help="your own PNG/JPEG images, optionally one subfolder per class (sets --dataset image_folder)")
    d.add_argument("--image-size", default=None, help="images: bring every image to N or HxW pixels (see --fit)")
    d.add_argument("--fit", default=None, choices=("resize", "crop"),
                   help="images: scale to --image-size, or centre-crop to its aspect ratio first (default: resize)")
    d.add_argument("--color", default=None, choices=("auto", "grayscale", "rgb"),
                   help="images: channels (default: auto, RGB when any image has colour)")
    d.add_argument("--split-seed", type=int, default=None,
                   help="arrays, images: seed of the rule that cuts validation and test sets (10%% each) from "
                   "data given as one set (default: 0)")
    d.add_argument("--stream", default=None, action=argparse.BooleanOptionalAction,
                   help="X.npy: read the training set from disk in minibatches (default: when over 1 GiB)")
    d.add_argument("--workers", type=int, default=0,
                   help="DataLoader processes reading a streamed training set (default: 0)")
    d.add_argument("--valid-file", default=None, help="text: validation sentences (with --test-file)")
    d.add_argument("--test-file", default=None, help="text: test sentences (else --data-file is split)")
    d.add_argument("--max-vocab", type=int, default=None, help="text: vocabulary size cap, specials included")
    d.add_argument("--max-length", type=int, default=None,
                   help="text: drop training sentences longer than this (valid/test kept whole)")
    o = p.add_argument_group("objective")
    o.add_argument("--objective", default=None, choices=OBJECTIVES.names(),
                   help="default: the model's own (elbo; for discrete VAEs the estimator's)")
    p.set_defaults(objective_fields=_add_objective_options(o))
    warmup = cls.default_kl_warmup  # the model's own KL warm-up, when --kl-anneal is not given
    o.add_argument("--kl-anneal", default=None, choices=SCHEDULES.names(),
                   help="KL weight schedule over --anneal-steps (default: " + (
                       f"this model's warm-up, linear over the first {100 * warmup:.0f}%% of the run)" if warmup else "none)"))
    o.add_argument("--anneal-steps", type=_positive, default=None,
                   help=f"the ramp's length in steps (default: {DEFAULT_ANNEAL_STEPS}"
                   + ("; for this model's warm-up, its share of the run)" if warmup else ")"))
    o.add_argument("--anneal-start", type=_start_weight, default=None,
                   help=f"the KL weight at step 0 of the ramp, in (0, 1] (default: {DEFAULT_ANNEAL_START})")
    o.add_argument("--pretrain-steps", type=_non_negative, default=0,
                   help="KL weight 0 for this many steps (encoder pretraining), then the decoder is "
                   "re-initialised where the model can (reset_decoder_at) and annealing starts")
    t = p.add_argument_group("training")
    defaults = TrainConfig.__dataclass_fields__
    t.add_argument("--epochs", type=int, default=None,
                   help="passes over the data (default: the data set's suggestion, 10 for MNIST, "
                   "50 for the small embedded set)")
    t.add_argument("--batch-size", type=int, default=None,
                   help="default: the data set's suggestion (100 for images, 16 for text)")
    t.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate (default: the data set's suggestion, "
                   f"{defaults['lr'].default} for images, 3e-3 for text)")
    t.add_argument("--seed", type=int, default=None, help="(default: 0)")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument("--clip-norm", type=float, default=None)
    t.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES,
                   help="compile with torch.compile (default mode; reduce-overhead captures CUDA graphs on a "
                   "GPU) the recorded training loss and its backward, or, for a loss that is not recorded "
                   "(see --no-trace), the model's networks")
    t.add_argument("--no-trace", dest="trace", action="store_false",
                   help="run the model and guide under Pyro's handlers at every step instead of recording "
                   "the training loss once per minibatch shape and replaying it (pyro_lvm.traced); the "
                   "steps are the same, only slower")
    t.add_argument("--bucket-mb", type=float, default=1.0,
                   help="under torchrun: all-reduce the gradients in buckets of this many MiB while the "
                   "backward pass runs (default 1); 0: once after it, better where the processes have no "
                   "spare cores")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="run folder to write")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in RUN from its checkpoint with its own settings; of the options "
                   "given with it, --epochs, --lr, --clip-norm and --eval-particles are applied (and recorded "
                   "in history.jsonl), any other that differs from the run is refused")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the run in a non-empty RUN (its run files are removed first)")
    r.add_argument("--eval-particles", type=int, default=None,
                   help="particles for the test log-likelihood (default: 1000 for images, 50 for text)")
    r.add_argument("--no-figures", action="store_true")


def _add_train_parser(sub) -> None:
    train = sub.add_parser("train", help="train a model and evaluate it")
    models = train.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name in MODELS.names():
        cls = MODELS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        p = models.add_parser(name, help=doc, description=doc)
        add_options, run = TRAIN_FLOWS[cls.train_flow]
        add_options(p, cls)
        p.set_defaults(handler=run)


def _add_select_parser(sub) -> None:
    select = sub.add_parser("select", help="choose a model size by BIC and held-out likelihood")
    models = select.add_subparsers(dest="model", metavar="MODEL", required=True)
    p = models.add_parser("gmm", help="number of mixture components")
    p.add_argument("--data-file", required=True)
    p.add_argument("--columns", type=_columns, default=None)
    p.add_argument("--components", type=_int_list, default=list(range(1, 9)), help="e.g. 1..8 (default)")
    p.add_argument("--covariance", default="full", choices=tuple(COVARIANCES))
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--heldout", type=float, default=0.2, help="fraction of rows held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace the selection in a non-empty --out")
    p.set_defaults(handler=_select)


def _list(args) -> Dict[str, Any]:
    return {"models": MODELS.names(), "objectives": OBJECTIVES.names(),
            "datasets": DATASETS.names(), "kl_schedules": SCHEDULES.names()}


def _select(args) -> Dict[str, Any]:
    from pyro_lvm.runs_gmm import select_gmm

    return select_gmm(args.data_file, args.out, components=args.components,
                      covariance=args.covariance, columns=args.columns, restarts=args.restarts,
                      heldout_fraction=args.heldout, seed=args.seed, overwrite=args.overwrite)


def _evaluate(args) -> Dict[str, Any]:
    from pyro_lvm.runs import evaluate_run

    if args.particles < 1:
        raise ValueError("--particles must be positive")
    return evaluate_run(args.run, num_particles=args.particles, data_dir=args.data_dir,
                        device=args.device, seed=args.seed, progress=not args.no_progress,
                        proposal=args.proposal, amortization_gap=args.amortization_gap, gap_steps=args.steps,
                        gap_points=args.gap_points, gap_lr=args.gap_lr)


def _gradients(args) -> Dict[str, Any]:
    from pyro_lvm.runs import gradients_run

    return gradients_run(args.run, estimators=args.estimators, num_draws=args.draws,
                         batch_size=args.batch_size, data_dir=args.data_dir, seed=args.seed)


def _sample(args) -> Dict[str, Any]:
    from pyro_lvm.runs import VOCAB

    if (Path(args.run) / VOCAB).is_file():  # a sentence model: words printed
        from pyro_lvm.runs_text import sample_run

        if args.draw_pixels:
            raise ValueError("--draw-pixels is for images; for sentences use --sample-words")
        return sample_run(args.run, num=args.num, greedy=not args.sample_words, seed=args.seed, device=args.device)
    from pyro_lvm.runs_images import sample_images_run  # an image model: a PNG grid in the run

    if args.sample_words:
        raise ValueError("--sample-words is for sentence models; for images use --draw-pixels")
    return sample_images_run(args.run, num=args.num, seed=args.seed, device=args.device, draws=args.draw_pixels,
                             ncol=args.columns)


def _interpolate(args) -> Dict[str, Any]:
    from pyro_lvm.runs_text import interpolate_run

    return interpolate_run(args.run, args.first, args.second, steps=args.steps, beam_size=args.beam,
                           device=args.device)


def _reconstruct(args) -> Dict[str, Any]:
    from pyro_lvm.runs_text import reconstruct_run

    return reconstruct_run(args.run, args.sentences, beam_size=args.beam, device=args.device)


def _predictive_check(args) -> Dict[str, Any]:
    from pyro_lvm.runs_workflow import predictive_check_run

    return predictive_check_run(args.run, num_samples=args.num_samples, num_points=args.num_points,
                                data_dir=args.data_dir, seed=args.seed, device=args.device)


def _export(args) -> Dict[str, Any]:
    from pyro_lvm.runs_workflow import export_run

    return export_run(args.run, format=args.format, num_samples=args.num_samples, num_points=args.num_points,
                      particles=args.particles, data_dir=args.data_dir, seed=args.seed, device=args.device,
                      progress=not args.no_progress)


def _compare(args) -> None:
    from pyro_lvm.files import write_json
    from pyro_lvm.runs_workflow import compare_runs

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it, or another --out")
    result = compare_runs(args.runs, particles=args.particles, data_dir=args.data_dir, seed=args.seed,
                          device=args.device, progress=not args.no_progress, num_points=args.num_points)
    write_json(out, result)
    print(result["table"])
    print(f"written to {out}")


def _add_workflow_parsers(sub) -> None:
    from pyro_lvm.runs_workflow import EXPORT_FORMATS

    def common(p, samples_default, points_help):
        p.add_argument("run", metavar="RUN")
        p.add_argument("--num-samples", type=int, default=samples_default, help="draws per test point")
        p.add_argument("--num-points", type=int, default=1000, help=points_help)
        p.add_argument("--data-dir", default=None)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="cpu")

    points = "test points, evenly spaced over the test set (default 1000; 0: all)"
    pc = sub.add_parser("ppc", help="posterior predictive check of a trained run: ppc.json and ppc.png")
    common(pc, 20, points)
    pc.set_defaults(handler=_predictive_check)
    ex = sub.add_parser("export", help="write a trained run's posterior, predictive and log-likelihood "
                        "draws for its test points (ArviZ netCDF: RUN/inference_data.nc)")
    common(ex, 10, points)
    ex.add_argument("--format", default="arviz", choices=EXPORT_FORMATS.names())
    ex.add_argument("--particles", type=int, default=None,
                    help="importance samples for log p(x) per point (default: the run's eval particles)")
    ex.add_argument("--no-progress", action="store_true")
    ex.set_defaults(handler=_export)
    co = sub.add_parser("compare", help="rank runs by their test log p(x), with paired standard errors")
    co.add_argument("runs", metavar="RUN", nargs="+")
    co.add_argument("--particles", type=int, default=1000, help="importance samples per test point")
    co.add_argument("--num-points", type=int, default=0, help="test points, evenly spaced (default 0: all)")
    co.add_argument("--out", default="compare.json", help="JSON file to write (default: compare.json)")
    co.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    co.add_argument("--data-dir", default=None)
    co.add_argument("--seed", type=int, default=0)
    co.add_argument("--device", default="cpu")
    co.add_argument("--no-progress", action="store_true")
    co.set_defaults(handler=_compare)


def _add_text_parsers(sub) -> None:
    sa = sub.add_parser("sample", help="samples of a trained model: sentences printed (textvae, lstmlm), "
                        "or for an image model a PNG grid written to RUN/sample_grid.png")
    sa.add_argument("run", metavar="RUN")
    sa.add_argument("--num", type=int, default=10)
    sa.add_argument("--sample-words", action="store_true",
                    help="text: draw each word (default for textvae: greedy decoding of z from the prior)")
    sa.add_argument("--draw-pixels", action="store_true",
                    help="images: draw every pixel from p(x|z) (default: its mean)")
    sa.add_argument("--columns", type=int, default=8, help="images: columns of the grid")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--device", default="cpu")
    sa.set_defaults(handler=_sample)
    it = sub.add_parser("interpolate", help="decode points between the codes of two sentences (textvae)")
    it.add_argument("run", metavar="RUN")
    it.add_argument("first")
    it.add_argument("second")
    it.add_argument("--steps", type=int, default=5)
    it.add_argument("--beam", type=_non_negative, default=0, help="beam size (default 0: greedy)")
    it.add_argument("--device", default="cpu")
    it.set_defaults(handler=_interpolate)
    rc = sub.add_parser("reconstruct", help="encode and decode sentences (textvae)")
    rc.add_argument("run", metavar="RUN")
    rc.add_argument("sentences", nargs="+")
    rc.add_argument("--beam", type=_non_negative, default=0, help="beam size (default 0: greedy)")
    rc.add_argument("--device", default="cpu")
    rc.set_defaults(handler=_reconstruct)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-lvm", description="Latent-variable models in Pyro.")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also {DEBUG_VARIABLE}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train_parser(sub)
    _add_select_parser(sub)
    ev = sub.add_parser("evaluate", help="evaluate a trained run on its test split")
    ev.add_argument("run", metavar="RUN")
    ev.add_argument("--particles", type=int, default=1000)
    ev.add_argument("--proposal", default="guide", choices=("guide", "prior"),
                    help="importance-sampling proposal: the guide, or the prior (naive estimator)")
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--no-progress", action="store_true")
    gap = ev.add_argument_group("amortization gap (Cremer et al. 2018)")
    gap.add_argument("--amortization-gap", action="store_true",
                     help="also optimise a guide per test point (the encoder fixed as the start) and split "
                     "log p(x) - ELBO into approximation_gap and amortization_gap, nats per point")
    gap.add_argument("--steps", type=int, default=1000, help="SVI steps of the per-point guides")
    gap.add_argument("--gap-points", type=int, default=1000, help="test points, evenly spaced (0: all)")
    gap.add_argument("--gap-lr", type=float, default=1e-2, help="Adam learning rate of the per-point guides")
    ev.set_defaults(handler=_evaluate)
    gr = sub.add_parser("gradients", help="mean, variance and bias of the encoder gradient per "
                        "estimator, for a trained bernvae or catvae run")
    gr.add_argument("run", metavar="RUN")
    gr.add_argument("--estimators", type=lambda s: [e for e in s.split(",") if e], default=None,
                    help="comma-separated (default: all but enum)")
    gr.add_argument("--draws", type=int, default=100, help="gradient draws per estimator")
    gr.add_argument("--batch-size", type=int, default=100, help="test points in the batch")
    gr.add_argument("--data-dir", default=None)
    gr.add_argument("--seed", type=int, default=0)
    gr.set_defaults(handler=_gradients)
    _add_text_parsers(sub)
    _add_workflow_parsers(sub)
    sub.add_parser("list", help="list models, objectives, data sets and schedules").set_defaults(handler=_list)
    return parser


#: command-line options that go to the data set's loader
_DATA_OPTIONS = ("data_file", "valid_file", "test_file", "max_vocab", "max_length", "image_folder", "image_size",
                 "fit", "color", "split_seed", "stream")
#: ``--data-file`` endings read as arrays (any other is text)
_ARRAY_SUFFIXES = (".npy", ".npz")


def _own_data_set(args) -> Optional[str]:
    """The data set that ``--data-file`` or ``--image-folder`` names, or ``None``."""
    if args.data_file is not None and args.image_folder is not None:
        raise ValueError("give --data-file or --image-folder, not both")
    if args.image_folder is not None:
        return "image_folder"
    if args.data_file is not None:
        return "arrays" if Path(args.data_file).suffix.lower() in _ARRAY_SUFFIXES else "text"
    return None


def _train(args) -> Dict[str, Any]:
    from pyro_lvm.runs import train_run

    model_options = {k: getattr(args, k) for k in args.model_fields if getattr(args, k) is not None}
    objective_options = {k: getattr(args, k) for k in args.objective_fields}
    # without --kl-anneal the model's own warm-up, if any (runs.train_run); a ramp's length and
    # start go with a schedule (runs.build_objective refuses them without one)
    objective_options.update(kl_anneal=args.kl_anneal, anneal_steps=args.anneal_steps, anneal_start=args.anneal_start)
    if args.pretrain_steps:
        objective_options["pretrain_steps"] = args.pretrain_steps
        if "reset_decoder_at" in args.model_fields:
            model_options.setdefault("reset_decoder_at", args.pretrain_steps)
    data_options = {k: getattr(args, k) for k in _DATA_OPTIONS if getattr(args, k) is not None}
    own = _own_data_set(args)
    if own is not None:
        if args.dataset not in (None, own):
            raise ValueError(f"--data-file and --image-folder give your own data (data set {own!r}), "
                             f"not --dataset {args.dataset}")
        args.dataset = own
    elif args.valid_file is not None or args.test_file is not None:
        raise ValueError("--valid-file and --test-file go with --data-file")
    accepted = set(inspect.signature(DATASETS.get(args.dataset or "binarized_mnist_small")).parameters)
    unused = sorted(k for k in data_options if k not in accepted)
    if unused:
        raise ValueError(f"{', '.join(_flag(k) for k in unused)} do not apply to data set "
                         f"{args.dataset or 'binarized_mnist_small'!r}")
    device = init_from_environment(args.device)  # under torchrun: join the process group
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        device=device, progress=not args.no_progress, clip_norm=args.clip_norm,
                        workers=args.workers, compile=args.compile, trace=args.trace,
                        bucket_mb=args.bucket_mb)
    return train_run(args.model, args.out, dataset=args.dataset, data_dir=args.data_dir,
                     model_options=model_options, objective=args.objective,
                     objective_options={k: v for k, v in objective_options.items() if v is not None},
                     train=train, eval_particles=args.eval_particles, resume=args.resume,
                     overwrite=args.overwrite, figures=not args.no_figures, data_options=data_options)


#: exit status of a failed run (divergence, out of memory, an internal error); usage errors exit with 2
FAILED_RUN = 1
USAGE_ERROR = 2
DEBUG_VARIABLE = "PYRO_LVM_DEBUG"


#: the command-line flows of ``train``: a model class names its own in ``train_flow``
#: (:attr:`~pyro_lvm.base.LatentVariableModel.train_flow`); flow -> (add its options, run)
TRAIN_FLOWS = {
    "amortized": (_add_generic_train_options, _train),  # a Trainer and an objective on a data set
    "tabular": (lambda p, cls: _add_gmm_train_options(p), _run_gmm_train),  # a CSV file; EM, SVI or NUTS
}


def _out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))) or (
        isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                         or "not enough memory" in text))


def describe_error(e: BaseException):
    """``(exit status, one-line message)`` for an error that ends a command."""
    first_line = (str(e).strip().splitlines() or [""])[0]  # Pyro appends trace shapes on later lines
    if isinstance(e, TrainingDivergedError):
        return FAILED_RUN, first_line
    if _out_of_memory(e):
        return FAILED_RUN, ("out of memory: lower --particles, --eval-particles, --batch-size or the number of "
                            f"points, or use a device with more memory ({first_line or type(e).__name__})")
    if isinstance(e, KeyError):
        return USAGE_ERROR, str(e.args[0]) if e.args else "missing key"
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return USAGE_ERROR, f"{e.strerror}: {e.filename}"
    if isinstance(e, (ValueError, TypeError, OSError, DataNotFoundError)):
        return USAGE_ERROR, first_line or type(e).__name__
    return FAILED_RUN, (f"internal error ({type(e).__name__}: {first_line}); rerun with --debug (or "
                        f"{DEBUG_VARIABLE}=1) for the traceback, and please report it")


def main(argv: Optional[List[str]] = None) -> int:
    """Run a command; every expected error ends it with one line on stderr and exit status 2
    (a usage error: options, files, data) or 1 (a failed run), no traceback unless ``--debug``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    args = build_parser().parse_args([a for a in argv if a != "--debug"])  # --debug may stand anywhere
    try:
        result = args.handler(args)
        if result is not None and is_main():  # a command that printed its own report returns None
            print(json.dumps(result, indent=2, sort_keys=True))
    except KeyboardInterrupt:
        print("pyro-lvm: interrupted; a run folder keeps its last checkpoint (continue with --resume)",
              file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (the one place where errors become messages)
        if debug:
            raise
        status, message = describe_error(e)
        # under torchrun every process says its error (usually the same one), naming its rank
        rank, size = world()
        print(f"pyro-lvm: error{f' (process {rank} of {size})' if size > 1 else ''}: {message}", file=sys.stderr)
        return status
    finally:  # leave the process group on every path: gloo's threads must not outlive the interpreter
        shutdown()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
