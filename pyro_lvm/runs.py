"""A run: train a registered model on a named data set into a folder, evaluate it.

A run folder holds ``config.json`` (everything needed to rebuild the model),
``checkpoint.pt``, ``history.jsonl``, ``metrics.json``, ``eval.json`` after
:func:`evaluate_run`, and PNG figures.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, Optional

import pyro
import torch

from pyro_lvm import __version__
from pyro_lvm.checkpoint import load_checkpoint, write_json
from pyro_lvm.data import DataSplits, load_dataset
from pyro_lvm.evaluation import evaluate
from pyro_lvm.objectives import OBJECTIVES, make_schedule
from pyro_lvm.objectives.base import Objective
from pyro_lvm.plotting import image_grid, reconstructions, training_curve
from pyro_lvm.registry import MODELS
from pyro_lvm.train import CHECKPOINT, TrainConfig, Trainer

CONFIG = "config.json"
METRICS = "metrics.json"
EVAL = "eval.json"
VOCAB = "vocab.json"


def build_objective(name: str, kl_anneal: str = "none", anneal_steps: int = 0,
                    anneal_start: float = 0.01, pretrain_steps: int = 0, **options: Any) -> Objective:
    """An objective from its registry name and options.

    Options left at ``None`` are not passed; an option the objective does not
    take is an error, not silently dropped.

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
    if kl_anneal != "none" or pretrain_steps:
        options["annealing"] = make_schedule(kl_anneal, anneal_steps, anneal_start, pretrain_steps)
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
        figures["samples"] = str(image_grid(samples, data.image_shape, out / "samples.png",
                                            "means of p(x|z), z from the prior"))
        figures["reconstructions"] = str(reconstructions(x.cpu().numpy(), recon, data.image_shape,
                                                         out / "reconstructions.png"))
        with torch.no_grad():
            figures.update(model.extra_figures(data, out))
    return figures


def train_run(model_name: str, out, dataset: str = "binarized_mnist_small", data_dir=None,
              model_options: Optional[Dict[str, Any]] = None,
              objective: Optional[str] = None, objective_options: Optional[Dict[str, Any]] = None,
              train: Optional[TrainConfig] = None, eval_particles: Optional[int] = None,
              resume: bool = False, figures: bool = True,
              data_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train ``model_name`` on ``dataset``, evaluate on the test split, write the run folder.

    ``objective=None`` takes the model's ``default_objective``; ``None`` epochs,
    batch size, learning rate or ``eval_particles`` take the data set's suggestions.
    ``data_options`` go to the data set's loader (e.g. ``data_file`` for ``text``).

    Returns the metrics dict written to ``metrics.json``.
    """
    out = Path(out)
    train = train or TrainConfig()
    model_options = dict(model_options or {})
    objective_options = dict(objective_options or {})
    if resume:
        saved = json.loads((out / CONFIG).read_text())
        model_name, dataset = saved["model"], saved["dataset"]
        model_options, objective = saved["model_config"], saved["objective"]
        objective_options = saved["objective_options"]
        saved_train = dict(saved["train"])
        epochs = train.epochs if train.epochs is not None else saved_train["epochs"]
        saved_train.update(epochs=epochs, progress=train.progress, device=train.device)
        train = TrainConfig(**saved_train)
        eval_particles = saved.get("eval_particles", eval_particles)
        data_dir = data_dir if data_dir is not None else saved.get("data_dir")
        data_options = saved.get("data_options", {})
    data_options = dict(data_options or {})
    data = load_dataset(dataset, data_dir, **data_options)
    suggested = {"epochs": data.default_epochs, "batch_size": data.default_batch_size, "lr": data.default_lr}
    train = replace(train, **{k: v for k, v in suggested.items() if getattr(train, k) is None})
    if eval_particles is None:
        eval_particles = data.default_eval_particles
    model_cls = MODELS.get(model_name)
    for key, value in data.model_options.items():
        model_options.setdefault(key, value)
        if model_options[key] != value:
            raise ValueError(f"{key} {model_options[key]} does not match the data ({value})")
    pyro.set_rng_seed(train.seed)  # the initial weights follow the seed too
    model = model_cls.from_config(model_options)
    objective = objective or model.default_objective
    obj = build_objective(objective, **objective_options)
    config = {"model": model_name, "model_config": model.config_dict(), "dataset": dataset,
              "data_dir": None if data_dir is None else str(data_dir), "objective": objective,
              "objective_options": objective_options, "train": asdict(train), "data_options": data_options,
              "eval_particles": eval_particles, "pyro_lvm_version": __version__}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, config)
    if data.vocab is not None:
        data.vocab.save(out / VOCAB)  # the vocabulary travels with the model
    data.to(train.device)
    trainer = Trainer(model, obj, data.train, data.valid, train, run_dir=out,
                      train_transform=data.train_transform, batch_order=data.batch_order)
    history = trainer.fit(resume=resume)
    metrics = evaluate(model, data.test, num_particles=eval_particles, progress=train.progress)
    metrics.update(train_steps=trainer.step, train_seconds=trainer.train_seconds,
                   steps_per_second=trainer.step / max(trainer.train_seconds, 1e-9),
                   epochs=trainer.epoch, dataset=dataset, model=model_name, objective=objective)
    metrics.update(model.extra_metrics(data.train, data.test, metrics))
    if history and history[-1].get("valid_loss") is not None:
        metrics["valid_loss"] = history[-1]["valid_loss"]
    if figures:
        metrics["figures"] = write_figures(model, data, history, out, step_log=trainer.step_log)
    write_json(out / METRICS, metrics)
    return metrics


def load_run(run_dir, device: str = "cpu"):
    """The trained model and the config of a run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {CONFIG}")
    config = json.loads((run_dir / CONFIG).read_text())
    model = build_model(config)
    state = load_checkpoint(run_dir / CHECKPOINT, map_location=device)
    model.load_state_dict(state["model"])
    return model.to(device), config


def load_run_data(run_dir, data_dir=None, device: str = "cpu"):
    """``(model, config, data)`` of a run trained on a named data set: the trained model and
    the data splits it was trained on (from ``data_dir``, else the run's own data directory)."""
    run_dir = Path(run_dir)
    model, config = load_run(run_dir, device)
    if "dataset" not in config:
        raise ValueError(f"{run_dir} was not trained on a named data set (a {config.get('model')} run of "
                         "its own fitting method: its metrics.json has its numbers)")
    data_dir = data_dir if data_dir is not None else config.get("data_dir")
    data = load_dataset(config["dataset"], data_dir, **config.get("data_options", {})).to(device)
    return model, config, data


def evenly_spaced(num: int, count: Optional[int]) -> torch.Tensor:
    """``count`` indices spread evenly over ``range(num)`` (all of them for ``None``, 0 or more
    than ``num``): test sets can be sorted by class."""
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
    model, config, data = load_run_data(run_dir, data_dir, device)
    if amortization_gap:  # refused before any expensive work for a guide that has no Gaussian family
        from pyro_lvm.inference.local import LocalGaussianGuide

        LocalGaussianGuide(model, data.test[:2])
    pyro.set_rng_seed(seed)
    result = evaluate(model, data.test, num_particles=num_particles, progress=progress,
                      proposal=proposal)
    result.update(model.extra_metrics(data.train, data.test, result))
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
    model, config, data = load_run_data(run_dir, data_dir, device)
    x = data.test[evenly_spaced(data.test.shape[0], batch_size).to(data.test.device)]
    result = {"estimators": gradient_diagnostics(model, x, estimators, num_draws=num_draws, seed=seed),
              "num_draws": num_draws, "batch_size": x.shape[0], "model": config["model"]}
    write_json(run_dir / "gradients.json", result)
    (run_dir / "gradients.md").write_text(format_table(result["estimators"]) + "\n")
    return result
