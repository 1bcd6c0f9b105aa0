"""A run: train a registered model on a named data set into a folder, evaluate it.

A run folder holds ``config.json`` (everything needed to rebuild the model),
``checkpoint.pt``, ``history.jsonl``, ``metrics.json``, ``eval.json`` after
:func:`evaluate_run`, and PNG figures.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, Optional

import pyro
import torch

from pyro_lvm import __version__
from pyro_lvm.checkpoint import load_checkpoint
from pyro_lvm.data import DataSplits, load_dataset
from pyro_lvm.distributed import gather_rows, is_main, on_main, shard, world
from pyro_lvm.evaluation import evaluate
from pyro_lvm.evaluation.report import importance_sampled_log_px
from pyro_lvm.files import claim_output_folder, write_json, write_text
from pyro_lvm.models.likelihoods import likelihood_for
from pyro_lvm.nn import image_chw
from pyro_lvm.objectives import OBJECTIVES, make_schedule
from pyro_lvm.objectives.annealing import DEFAULT_ANNEAL_START, DEFAULT_ANNEAL_STEPS
from pyro_lvm.objectives.base import Objective
from pyro_lvm.plotting import image_grid, latent_scatter, latent_traversal, reconstructions, training_curve
from pyro_lvm.registry import MODELS
from pyro_lvm.train import CHECKPOINT, HISTORY, TrainConfig, Trainer
from pyro_lvm.validation import device as check_device
from pyro_lvm.validation import non_negative_int, particle_count, positive_float, positive_int

CONFIG = "config.json"
METRICS = "metrics.json"
EVAL = "eval.json"
VOCAB = "vocab.json"


def build_objective(name: str, kl_anneal: str = "none", anneal_steps: Optional[int] = None,
                    anneal_start: Optional[float] = None, pretrain_steps: int = 0, **options: Any) -> Objective:
    """An objective from its registry name and options.

    Options left at ``None`` are not passed; an option the objective does not
    take is an error, not silently dropped. A ``kl_anneal`` ramp lasts
    ``anneal_steps`` from the weight ``anneal_start`` (defaults:
    :data:`~pyro_lvm.objectives.annealing.DEFAULT_ANNEAL_STEPS` and ``DEFAULT_ANNEAL_START``);
    either given without a ramp is an error.

    >>> build_objective("iwae", num_particles=5, gradient="dreg")
    IWAE(beta=1.0, annealing=ConstantSchedule())
    >>> build_objective("iwae", free_bits=0.5)
    Traceback (most recent call last):
    ...
    ValueError: objective 'iwae' does not take free_bits; it takes: annealing, beta, gradient, max_plate_nesting, num_particles
    """
    cls = OBJECTIVES.get(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    options = {k: v for k, v in options.items() if v is not None}
    if kl_anneal == "none" and (anneal_steps is not None or anneal_start is not None):
        raise ValueError("anneal steps and start shape a KL ramp, and kl_anneal is 'none': "
                         "name a schedule (--kl-anneal linear or sigmoid)")
    if kl_anneal != "none" or pretrain_steps:
        steps = DEFAULT_ANNEAL_STEPS if anneal_steps is None else anneal_steps
        start = DEFAULT_ANNEAL_START if anneal_start is None else anneal_start
        options["annealing"] = make_schedule(kl_anneal, steps, start, pretrain_steps)
    extra = sorted(set(options) - accepted)
    if extra:
        raise ValueError(f"objective {name!r} does not take {', '.join(extra)}; "
                         f"it takes: {', '.join(sorted(accepted))}")
    return cls(**options)



def build_model(config: Dict[str, Any]):
    """Rebuild the model of a run from its ``config.json`` contents."""
    return MODELS.get(config["model"]).from_config(config["model_config"])


def write_figures(model, data: DataSplits, history, out: Path, num: int = 64,
                  step_log=None) -> Dict[str, str]:
    """Prior samples, reconstructions and the training curve, as PNG files in ``out``.

    Reconstructions use test points spread evenly over the test set (the
    binarized MNIST test set is sorted by digit).
    """
    figures = {}
    if history:
        figures["training_curve"] = str(training_curve(history, out / "training_curve.png",
                                                       step_log=step_log))
    if data.image_shape is not None:
        model.eval()
        with torch.no_grad():
            samples = model.generate(num).cpu().numpy()
            x = data.test[evenly_spaced(data.test.shape[0], 32).to(data.test.device)]
            recon = model.reconstruct(x).cpu().numpy()
            x = model.observed_values(x)  # without a label column
        figures["samples"] = str(image_grid(samples, data.image_shape, out / "samples.png",
                                            "means of p(x|z), z from the prior"))
        figures["reconstructions"] = str(reconstructions(x.cpu().numpy(), recon, data.image_shape,
                                                         out / "reconstructions.png"))
        with torch.no_grad():
            figures.update(latent_figures(model, data, out))
            for name, (images, title, columns) in model.image_grids(data).items():
                figures[name] = str(image_grid(images.cpu().numpy(), data.image_shape, out / f"{name}.png", title,
                                               ncol=columns))
    return figures


def latent_figures(model, data: DataSplits, out: Path, num_points: int = 2000, max_dims: int = 8,
                   span: float = 3.0, steps: int = 9) -> Dict[str, str]:
    """The test encodings in 2-D coloured by label (``latents.png``, :func:`~pyro_lvm.plotting.latent_scatter`:
    the posterior means of ``num_points`` evenly spaced test points, principal components when
    the latent has more than two dimensions), and, for a Gaussian prior, latent traversals
    (``traversals.png``): from the code of the first test point, each of the ``max_dims`` most
    active dimensions (largest variance of the posterior mean over the points) in turn set to
    ``steps`` values from ``-span`` to ``+span`` prior standard deviations around the prior mean."""
    idx = evenly_spaced(data.test.shape[0], num_points)
    x = data.test[idx.to(data.test.device)]
    codes = model.encode(x).mean.reshape(x.shape[0], -1)
    labels = data.labels.get("test")
    figures = {"latents": str(latent_scatter(codes.cpu().numpy(), None if labels is None else labels[idx].numpy(),
                                             out / "latents.png", data.class_names,
                                             title=f"posterior means of {x.shape[0]} test points"))}
    prior = model.prior(1)
    base = getattr(prior, "base_dist", prior)
    if (isinstance(base, torch.distributions.Normal) and codes.shape[1] == base.loc.shape[-1]
            and model.decodes_codes_alone):
        loc, scale = base.loc.reshape(-1), base.scale.reshape(-1)
        dims = codes.var(0).argsort(descending=True)[:max_dims].tolist()
        values = torch.linspace(-span, span, steps, device=codes.device)
        z = codes[:1].repeat(len(dims) * steps, 1)
        for row, d in enumerate(dims):
            z[row * steps:(row + 1) * steps, d] = loc[d] + values * scale[d]
        images = model.decode(z).mean.cpu().numpy()
        figures["traversals"] = str(latent_traversal(images, data.image_shape, values.tolist(), dims,
                                                     out / "traversals.png"))
    return figures


#: the files a run folder may hold (``--overwrite`` removes these and nothing else)
RUN_FILES = (CONFIG, CHECKPOINT, HISTORY, METRICS, EVAL, VOCAB, "gradients.json", "gradients.md", "ppc.json",
             "inference_data.nc", "samples.png", "reconstructions.png", "training_curve.png", "category_grid.png",
             "ppc.png", "latents.png", "traversals.png", "sample_grid.png", "class_samples.png")
#: settings that ``--resume`` may change; they are applied and recorded in the history
RESUMABLE = ("epochs", "lr", "clip_norm", "eval_particles")


def read_config(run_dir) -> Dict[str, Any]:
    """The ``config.json`` of a run folder, with a clear error when there is none or it is broken."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {CONFIG}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a pyro_lvm run configuration (unreadable JSON: {e})") from None
    if not isinstance(config, dict) or "model" not in config or "model_config" not in config:
        raise ValueError(f"{path} is not a pyro_lvm run configuration (no model and model_config)")
    return config


def _model_for_data(model_name: str, dataset: str, data: DataSplits):
    """The model class, refused early when it cannot take the data set's kind of data."""
    model_cls = MODELS.get(model_name)
    fields = {f.name for f in dataclasses.fields(model_cls.Config)}
    if not set(data.model_options) <= fields:
        fits = [n for n in MODELS.names()
                if set(data.model_options) <= {f.name for f in dataclasses.fields(MODELS.get(n).Config)}]
        kind = "sentences" if data.vocab is not None else "vectors"
        raise ValueError(f"{model_name} cannot be trained on data set {dataset!r}: it holds {kind}; "
                         f"models for it: {', '.join(fits)}")
    return model_cls


def _absolute_paths(options: Dict[str, Any]) -> Dict[str, Any]:
    return {k: str(Path(v).resolve()) if (k.endswith("_file") or k.endswith("_folder")) and v is not None else v
            for k, v in options.items()}


def _as_json(value: Any) -> Any:
    """A value as ``config.json`` holds it (tuples as lists)."""
    return [_as_json(v) for v in value] if isinstance(value, (tuple, list)) else value


def _resume_settings(saved: Dict[str, Any], given: Dict[str, Any]) -> Dict[str, Any]:
    """The changes ``--resume`` applies, after refusing any that it may not make."""
    fixed = {"model": saved["model"], "dataset": saved["dataset"], "objective": saved["objective"],
             "batch_size": saved["train"]["batch_size"], "seed": saved["train"]["seed"]}
    differ = [f"{k} {given[k]!r} (the run has {v!r})" for k, v in fixed.items()
              if given.get(k) is not None and given[k] != v]
    for group, saved_group in (("model_options", saved["model_config"]),
                               ("objective_options", saved["objective_options"]),
                               ("data_options", saved.get("data_options", {}))):
        for k, v in (given.get(group) or {}).items():
            if v is not None and _as_json(saved_group.get(k)) != _as_json(v):  # (32,) as given, [32] as saved
                differ.append(f"{k} {v!r} (the run has {saved_group.get(k)!r})")
    if differ:
        raise ValueError("--resume continues the run as it was set up; these options differ from it: "
                         + "; ".join(differ) + f". Only {', '.join(RESUMABLE)} may change on resume "
                         "(or train a new run)")
    current = {**saved["train"], "eval_particles": saved.get("eval_particles")}
    return {k: [current.get(k), given[k]] for k in RESUMABLE
            if given.get(k) is not None and given[k] != current.get(k)}


def _with_default_warmup(model, objective: str, objective_options: Dict[str, Any], data: DataSplits,
                         train: TrainConfig) -> Dict[str, Any]:
    """``objective_options`` with the model's KL warm-up (:attr:`~pyro_lvm.base.LatentVariableModel.default_kl_warmup`)
    as a linear schedule over that fraction of the run's steps (or ``anneal_steps``, when given), when
    the model has one, the options name no schedule (``kl_anneal``; ``"none"`` turns it off) and the
    objective takes one."""
    fraction = model.default_kl_warmup
    takes_schedule = "annealing" in inspect.signature(OBJECTIVES.get(objective).__init__).parameters
    if fraction is None or "kl_anneal" in objective_options or not takes_schedule:
        return objective_options
    if objective_options.get("anneal_steps") is not None:
        return {**objective_options, "kl_anneal": "linear"}
    n = data.train.shape[0]
    if data.batch_order is None:
        per_epoch = math.ceil(n / train.batch_size)
    else:  # the data set's own batching (e.g. labelled and unlabelled rows mixed)
        per_epoch = len(data.batch_order(n, train.batch_size, torch.Generator().manual_seed(train.seed)))
    steps = max(1, round(fraction * train.epochs * per_epoch))
    return {**objective_options, "kl_anneal": "linear", "anneal_steps": steps}


def train_run(model_name: str, out, dataset: Optional[str] = None, data_dir=None,
              model_options: Optional[Dict[str, Any]] = None,
              objective: Optional[str] = None, objective_options: Optional[Dict[str, Any]] = None,
              train: Optional[TrainConfig] = None, eval_particles: Optional[int] = None,
              resume: bool = False, overwrite: bool = False, figures: bool = True,
              data_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train ``model_name`` on ``dataset``, evaluate on the test split, write the run folder.

    ``objective=None`` takes the model's ``default_objective``, and a new run whose
    ``objective_options`` name no ``kl_anneal`` the model's ``default_kl_warmup``; ``None`` epochs,
    batch size, learning rate or ``eval_particles`` take the data set's suggestions
    (``dataset=None``: the embedded small binarized MNIST). ``data_options`` go to
    the data set's loader (e.g. ``data_file`` for ``text``).

    A new run needs an empty ``out`` (or ``overwrite``, which first removes the
    files of :data:`RUN_FILES`). ``resume`` continues the run in ``out`` from its
    checkpoint with its own settings and data (its vocabulary; data files checked
    by sha256); of the options given with it, those of :data:`RESUMABLE` are
    applied and recorded in ``history.jsonl``, and any other that differs from the
    run is refused. Everything that can be checked (options, data, the objective
    against the model) is checked before anything is written.

    Returns the metrics dict written to ``metrics.json``.
    """
    out = Path(out)
    train = train or TrainConfig()
    if eval_particles is not None:
        eval_particles = particle_count("--eval-particles", eval_particles)
    changes: Dict[str, Any] = {}
    if resume:
        on_main(lambda: claim_output_folder(out, RUN_FILES, resume=True, overwrite=overwrite))
        saved = read_config(out)
        if "dataset" not in saved:
            raise ValueError(f"{out} holds a {saved['model']} run of its own fitting method; it cannot be resumed")
        changes = _resume_settings(saved, {
            "model": model_name, "dataset": dataset, "objective": objective, "batch_size": train.batch_size,
            "seed": train.seed, "model_options": model_options, "objective_options": objective_options,
            "data_options": _absolute_paths(data_options or {}), "epochs": train.epochs, "lr": train.lr,
            "clip_norm": train.clip_norm, "eval_particles": eval_particles})
        model_name, dataset = saved["model"], saved["dataset"]
        model_options, objective = dict(saved["model_config"]), saved["objective"]
        objective_options = dict(saved["objective_options"])
        train_options = {**saved["train"], **{k: v for k, (_, v) in changes.items() if k != "eval_particles"}}
        train = TrainConfig(**{**train_options, "progress": train.progress, "device": train.device,
                               "workers": train.workers, "compile": train.compile, "trace": train.trace,
                               "bucket_mb": train.bucket_mb})
        eval_particles = changes.get("eval_particles", [None, saved.get("eval_particles")])[1]
        model, config, data = load_run_data(out, data_dir, model=False)
        config["train"] = asdict(train)
        config["eval_particles"] = eval_particles
        if changes:
            config.setdefault("resumes", []).append(changes)
    else:
        if train.epochs is not None and train.epochs < 1:
            raise ValueError(f"--epochs must be at least 1 for a new run, got {train.epochs}")
        dataset = dataset or "binarized_mnist_small"
        model_options = dict(model_options or {})
        objective_options = dict(objective_options or {})
        data_options = _absolute_paths(dict(data_options or {}))
        data = load_dataset(dataset, data_dir, **data_options)
        suggested = {"epochs": data.default_epochs, "batch_size": data.default_batch_size, "lr": data.default_lr,
                     "seed": 0}
        train = replace(train, **{k: v for k, v in suggested.items() if getattr(train, k) is None})
        eval_particles = eval_particles or data.default_eval_particles
        model_cls = _model_for_data(model_name, dataset, data)
        fields = {f.name for f in dataclasses.fields(model_cls.Config)}
        if "likelihood" in fields and "likelihood" not in model_options and data.support is not None:
            default = model_cls.Config.__dataclass_fields__["likelihood"].default
            model_options["likelihood"] = likelihood_for(data.support, default)  # one that fits the values
        shape_options = {}
        if data.image_shape is not None and "image_shape" in fields:
            shape_options["image_shape"] = image_chw(data.image_shape)  # for convolutional networks
        for key, value in {**data.model_options, **shape_options}.items():
            if isinstance(model_options.get(key), list):
                model_options[key] = tuple(model_options[key])
            model_options.setdefault(key, value)
            if model_options[key] != value:
                raise ValueError(f"{key} {model_options[key]} does not match the data ({value})")
        config = None
    pyro.set_rng_seed(train.seed)  # the initial weights follow the seed too
    model = MODELS.get(model_name).from_config(model_options)
    if config is None:  # a new run: the data as the model reads it, data-dependent starting values
        data = model.prepare_data(data)  # (a resumed run's data came prepared; it reads its checkpoint)
        model.initialize(data.train_rows())
    objective = objective or model.default_objective
    if config is None:  # a new run that names no KL schedule takes the model's warm-up, if it has one
        objective_options = _with_default_warmup(model, objective, objective_options, data, train)
    obj = build_objective(objective, **objective_options)
    data.to(train.device)
    trainer = Trainer(model, obj, data.train, data.valid, train, run_dir=out,  # checks data and objective
                      train_transform=data.train_transform, batch_order=data.batch_order)
    if config is None:  # a new run: its folder is claimed once everything has been checked
        on_main(lambda: claim_output_folder(out, RUN_FILES, overwrite=overwrite))
        config = {"model": model_name, "model_config": model.config_dict(), "dataset": dataset,
                  "data_dir": None if data_dir is None else str(Path(data_dir).resolve()), "objective": objective,
                  "objective_options": objective_options, "train": asdict(train), "data_options": data_options,
                  "data_files": data.files, "eval_particles": eval_particles, "pyro_lvm_version": __version__,
                  "image_shape": None if data.image_shape is None else list(data.image_shape)}
        if data.vocab is not None and is_main():
            data.vocab.save(out / VOCAB)  # the vocabulary travels with the model
    if world()[1] > 1:
        config["processes"] = world()[1]
    on_main(lambda: write_json(out / CONFIG, config))
    history = trainer.fit(resume=resume and (out / CHECKPOINT).is_file(), note={"resume": changes} if changes else None)
    metrics = _evaluate(model, data.test, eval_particles, train.progress)
    if not is_main():  # the first process reports and writes; the others are done
        return {}
    metrics.update(train_steps=trainer.step, train_seconds=trainer.train_seconds,
                   steps_per_second=trainer.step / max(trainer.train_seconds, 1e-9),
                   epochs=trainer.epoch, dataset=dataset, model=model_name, objective=objective)
    metrics.update(model.extra_metrics(data.train_rows().to(data.test.device), data.test, metrics,
                                         labels=data.labels))
    epochs_done = [r for r in history if "train_loss" in r]
    if epochs_done and epochs_done[-1].get("valid_loss") is not None:
        metrics["valid_loss"] = epochs_done[-1]["valid_loss"]
    if figures:
        metrics["figures"] = write_figures(model, data, epochs_done, out, step_log=trainer.step_log)
    write_json(out / METRICS, metrics)
    return metrics


def _evaluate(model, test: torch.Tensor, num_particles: int, progress: bool) -> Dict[str, Any]:
    """:func:`~pyro_lvm.evaluation.evaluate` on the test split; with several processes each
    estimates :math:`\\log p(x)` (the costly part) on its share of the points, and the first
    process gathers them and computes the rest (every process gets the result)."""
    rank, size = world()
    if size == 1:
        return evaluate(model, test, num_particles=num_particles, progress=progress)
    start = time.perf_counter()
    rows = shard(torch.arange(test.shape[0], device=test.device), rank, size)
    was_training = model.training
    model.eval()
    try:
        log_px = gather_rows(importance_sampled_log_px(model, test[rows], num_particles,
                                                       progress=progress and rank == 0))
    finally:
        model.train(was_training)
    metrics = on_main(lambda: evaluate(model, test, num_particles=num_particles, log_px=log_px))
    return {**metrics, "eval_seconds": time.perf_counter() - start}  # the shared log p(x) included


def load_run(run_dir, device: str = "cpu"):
    """The trained model and the config of a run folder."""
    run_dir = Path(run_dir)
    check_device(device)
    config = read_config(run_dir)
    model = build_model(config)
    state = load_checkpoint(run_dir / CHECKPOINT, map_location=device)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{run_dir / CHECKPOINT} does not hold the {config['model']} of {run_dir / CONFIG} "
                         f"({first})") from None
    return model.to(device), config


def load_run_data(run_dir, data_dir=None, device: str = "cpu", model: bool = True):
    """``(model, config, data)`` of a run trained on a named data set: the trained model
    (``None`` with ``model=False``) and the data it was trained on, read as the run read it:
    from ``data_dir`` (else the run's own), with the run's vocabulary, and its data files
    checked against their sha256 at training time."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if "dataset" not in config:
        raise ValueError(f"{run_dir} was not trained on a named data set (a {config.get('model')} run of "
                         "its own fitting method: its metrics.json has its numbers)")
    trained = load_run(run_dir, device)[0] if model else None
    data_dir = data_dir if data_dir is not None else config.get("data_dir")
    options = dict(config.get("data_options", {}))
    if (run_dir / VOCAB).is_file():
        options["vocab"] = str(run_dir / VOCAB)
    elif config["dataset"] in ("ptb", "text"):
        raise FileNotFoundError(f"{run_dir} has no {VOCAB}: a text run reads its data with its own vocabulary")
    for path, digest in config.get("data_files", {}).items():
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}, a data file of the run {run_dir}, is missing")
    data = load_dataset(config["dataset"], data_dir, **options).to(device)
    data = (trained if trained is not None else build_model(config)).prepare_data(data)  # e.g. a label column
    for path, digest in config.get("data_files", {}).items():
        now = data.files.get(path)
        if now is not None and now != digest:
            raise ValueError(f"{path} changed since the run {run_dir} was trained (sha256 {digest[:12]}... then, "
                             f"{now[:12]}... now): restore it, or train a new run on it")
    return trained, config, data


def evenly_spaced(num: int, count: Optional[int]) -> torch.Tensor:
    """``count`` indices spread evenly over ``range(num)`` (all of them for ``None``, 0 or more
    than ``num``): test sets can be sorted by class."""
    if count is not None:
        count = non_negative_int("the number of points", count)
    if not count or count >= num:
        return torch.arange(num)
    return torch.linspace(0, num - 1, count).round().long()


def evaluate_run(run_dir, num_particles: int = 1000, data_dir=None, device: str = "cpu",
                 seed: int = 0, progress: bool = True, proposal: str = "guide",
                 amortization_gap: bool = False, gap_steps: int = 1000, gap_points: Optional[int] = 1000,
                 gap_lr: float = 1e-2) -> Dict[str, Any]:
    """Evaluate a trained run on its test split; writes and returns ``eval.json``.

    With ``amortization_gap`` it also splits the inference gap on ``gap_points`` evenly
    spaced test points (:func:`pyro_lvm.evaluation.amortization.amortization_gap`, with
    ``gap_steps`` SVI steps of the per-point guides and ``num_particles`` for log p(x)).
    """
    run_dir = Path(run_dir)
    num_particles = particle_count("--particles", num_particles)
    if amortization_gap:  # the options of the gap, before the long evaluation
        gap_steps, gap_lr = positive_int("--steps", gap_steps), positive_float("--gap-lr", gap_lr)
        gap_points = None if gap_points is None else non_negative_int("--gap-points", gap_points)
    model, config, data = load_run_data(run_dir, data_dir, device)
    if amortization_gap:  # refused before any expensive work for a guide that has no Gaussian family
        from pyro_lvm.inference.local import LocalGaussianGuide

        LocalGaussianGuide(model, data.test[:2])
    pyro.set_rng_seed(seed)
    result = evaluate(model, data.test, num_particles=num_particles, progress=progress,
                      proposal=proposal)
    result.update(model.extra_metrics(data.train_rows().to(data.test.device), data.test, result,
                                        labels=data.labels))
    result.update(dataset=config["dataset"], model=config["model"], seed=seed)
    if amortization_gap:
        from pyro_lvm.evaluation.amortization import amortization_gap as gaps

        pyro.set_rng_seed(seed)
        x = data.test[evenly_spaced(data.test.shape[0], gap_points).to(data.test.device)]
        result.update(gaps(model, x, steps=gap_steps, lr=gap_lr, num_particles=num_particles, progress=progress))
    write_json(run_dir / EVAL, result)
    return result


def gradients_run(run_dir, estimators=None, num_draws: int = 100, batch_size: int = 100, data_dir=None,
                  seed: int = 0, device: str = "cpu") -> Dict[str, Any]:
    """:func:`~pyro_lvm.evaluation.gradients.gradient_diagnostics` of a trained run on the
    first ``batch_size`` test points; writes ``gradients.json`` and ``gradients.md``."""
    from pyro_lvm.evaluation.gradients import format_table, gradient_diagnostics

    run_dir = Path(run_dir)
    batch_size, num_draws = positive_int("--batch-size", batch_size), positive_int("--draws", num_draws)
    model, config, data = load_run_data(run_dir, data_dir, device)
    x = data.test[evenly_spaced(data.test.shape[0], batch_size).to(data.test.device)]
    result = {"estimators": gradient_diagnostics(model, x, estimators, num_draws=num_draws, seed=seed),
              "num_draws": num_draws, "batch_size": x.shape[0], "model": config["model"]}
    write_json(run_dir / "gradients.json", result)
    write_text(run_dir / "gradients.md", format_table(result["estimators"]) + "\n")
    return result
