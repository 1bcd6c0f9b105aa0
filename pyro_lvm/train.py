"""The training loop: minibatch gradient steps on any objective, nothing else.

No argument parsing and no plotting here: :mod:`pyro_lvm.cli` and
:mod:`pyro_lvm.runs` build on it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pyro
import torch
from pyro.infer import ELBO as PyroELBO
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pyro_lvm.base import LatentVariableModel, param_store_registration
from pyro_lvm.checkpoint import load_checkpoint, save_checkpoint
from pyro_lvm.files import write_text
from pyro_lvm.validation import device as check_device
from pyro_lvm.objectives.base import Objective

CHECKPOINT = "checkpoint.pt"
LOG_EVERY = 10
HISTORY = "history.jsonl"


def _already_a_batch(batch):
    """A DataLoader's collate function for data sets whose batched read returns one tensor."""
    return batch


class TrainingDivergedError(RuntimeError):
    """The loss or the parameters became NaN or infinite."""


@dataclass
class TrainConfig:
    """Options of :class:`Trainer`.

    :param epochs: passes over the training data; ``None`` lets
        :func:`pyro_lvm.runs.train_run` take the data set's suggestion.
    :param int batch_size: data points per gradient step.
    :param float lr: Adam learning rate; ``None`` lets
        :func:`pyro_lvm.runs.train_run` take the data set's suggestion.
    :param seed: seeds Pyro/torch and the shuffling; ``None`` lets
        :func:`pyro_lvm.runs.train_run` take 0 (or, on resume, the run's own).
    :param str device: ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).
    :param bool progress: show a progress bar.
    :param clip_norm: clip the gradient norm to this value, or ``None``.
    :param int workers: DataLoader worker processes that read minibatches of a
        training set streamed from disk (:class:`~pyro_lvm.data.images.StreamedRows`);
        0 reads them in the training process. Data in memory need none.
    """

    epochs: Optional[int] = 10
    batch_size: Optional[int] = 100
    lr: Optional[float] = 1e-3
    seed: Optional[int] = 0
    device: str = "cpu"
    progress: bool = True
    clip_norm: Optional[float] = None
    workers: int = 0

    def __post_init__(self):
        if self.epochs is not None and self.epochs < 0:
            raise ValueError(f"epochs must be non-negative, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError("clip_norm must be positive")
        if int(self.workers) != self.workers or self.workers < 0:
            raise ValueError(f"workers must be a non-negative integer, got {self.workers}")
        check_device(self.device)


class Trainer:
    """Fit a :class:`~pyro_lvm.base.LatentVariableModel` with an objective by Adam.

    Moves the model and the data to the device once; shuffles with its own
    generator; runs the steps with Pyro's validation off (the data is checked
    once, up front, by :meth:`~pyro_lvm.base.LatentVariableModel.check_data`);
    stops with :class:`TrainingDivergedError` on a non-finite loss before the
    bad step is applied; after every epoch evaluates the objective on the
    validation data, appends a line to ``history.jsonl`` and writes the
    checkpoint atomically, so that :meth:`fit` with ``resume=True`` continues
    exactly where an interrupted run stopped.

    :param model: the model.
    :param objective: any :class:`~pyro_lvm.objectives.base.Objective`, or one of
        Pyro's ELBOs (``pyro.infer.Trace_ELBO()``, ...), which is stepped through its
        ``loss_and_grads`` as ``SVI`` does. With the same seed, data order and
        objective, the parameters after N steps equal those of ``pyro.infer.SVI``
        with ``pyro.optim.Adam`` (to float tolerance).
    :param train: training data, shape ``(N, D)``.
    :param valid: validation data or ``None``.
    :param config: :class:`TrainConfig`.
    :param run_dir: folder for the checkpoint and history, or ``None``.
    :param train_transform: applied to each minibatch with a generator
        (e.g. :func:`~pyro_lvm.data.dynamic_binarize`).

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import PPCA
        >>> from pyro_lvm.objectives import ELBO
        >>> from pyro_lvm.train import Trainer, TrainConfig
        >>> model = PPCA(input_dim=2, latent_dim=1)
        >>> x = torch.randn(200, 2) * torch.tensor([3.0, 0.5])
        >>> trainer = Trainer(model, ELBO(), x, config=TrainConfig(epochs=2, batch_size=50, progress=False))
        >>> history = trainer.fit()
        >>> len(history), trainer.step
        (2, 8)
    """

    def __init__(self, model: LatentVariableModel, objective: Objective, train: torch.Tensor,
                 valid: Optional[torch.Tensor] = None, config: Optional[TrainConfig] = None,
                 run_dir=None,
                 train_transform: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None,
                 batch_order: Optional[Callable[[int, int, torch.Generator], List[torch.Tensor]]] = None):
        self.config = config or TrainConfig()
        if None in (self.config.epochs, self.config.batch_size, self.config.lr, self.config.seed):
            raise ValueError("TrainConfig.epochs, batch_size, lr and seed must be set for a Trainer (got "
                             f"{self.config.epochs}, {self.config.batch_size}, {self.config.lr}, {self.config.seed})")
        if not isinstance(objective, PyroELBO):
            raise TypeError("objective must be a pyro_lvm objective or a pyro.infer.ELBO, "
                            f"got {type(objective).__name__}")
        self.device = torch.device(self.config.device)
        self.model = model.to(self.device)
        self.objective = objective
        if isinstance(train, torch.Tensor):  # in memory: moved to the device once
            self.train_data = model.check_data(train, "training data").to(self.device)
        else:  # streamed from disk (rows read on demand, e.g. StreamedRows): checked on its first rows
            model.check_data(train[:min(len(train), 1024)], "training data")
            self.train_data = train
        self.valid_data = None if valid is None else model.check_data(valid, "validation data").to(self.device)
        self._check_objective()
        self.train_transform = train_transform
        self.batch_order = batch_order
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.shuffle_generator = torch.Generator(device="cpu")
        self.transform_generator = torch.Generator(device=self.device)
        self.epoch = 0
        self.step = 0
        self.train_seconds = 0.0
        self.history: List[Dict[str, Any]] = []
        #: (step, mean loss per data point over the last ``LOG_EVERY`` steps)
        self.step_log: List[List[float]] = []

    def _check_objective(self) -> None:
        """Run the objective once on a first batch, before any training: an objective
        that does not fit the model raises here (:mod:`pyro_lvm.objectives.checks`), not
        after the first epoch. Parameters, buffers, Pyro's param store and the random state
        are restored."""
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        rng = torch.get_rng_state()
        was_training = self.model.training
        self.model.train()
        try:  # a scratch param store: e.g. TraceGraph_ELBO keeps baseline averages there
            with pyro.validation_enabled(False), pyro.get_param_store().scope():
                x, n = self.train_data[:self.config.batch_size].to(self.device), self.train_data.shape[0]
                if isinstance(self.objective, Objective):
                    with param_store_registration(False):  # with gradients: all rules apply
                        self.objective.terms(self.model.model, self.model.guide, x, data_size=n, step=0)
                else:  # one of Pyro's ELBOs: its value alone (the gradient rules run at the first step)
                    with torch.no_grad():
                        self.objective.loss(self.model.model, self.model.guide, x, data_size=n)
        finally:
            self.model.load_state_dict(state)
            self.model.train(was_training)
            torch.set_rng_state(rng)

    # ------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Optional[Path]:
        return None if self.run_dir is None else self.run_dir / CHECKPOINT

    def state_dict(self) -> Dict[str, Any]:
        self.model.collect_state()
        rng = {"torch": torch.get_rng_state(), "shuffle": self.shuffle_generator.get_state(),
               "transform": self.transform_generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "step": self.step, "train_seconds": self.train_seconds,
                "history": self.history, "step_log": self.step_log, "rng": rng,
                "train_config": asdict(self.config)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.history = list(state["history"])
        self.step_log = [list(r) for r in state.get("step_log", [])]
        torch.set_rng_state(state["rng"]["torch"])
        self.shuffle_generator.set_state(state["rng"]["shuffle"])
        self.transform_generator.set_state(state["rng"]["transform"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def save(self) -> None:
        if self.run_dir is not None:
            save_checkpoint(self.checkpoint_path, self.state_dict())

    def _write_history(self) -> None:
        if self.run_dir is None:
            return
        write_text(self.run_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in self.history))

    # ------------------------------------------------------------------ steps
    def _loss_and_grads(self, x: torch.Tensor) -> float:
        """The loss of one batch as a number, with the estimator's gradients accumulated."""
        model, n = self.model, self.train_data.shape[0]
        if not isinstance(self.objective, Objective):  # one of Pyro's ELBOs: as SVI.step runs it
            return self.objective.loss_and_grads(model.model, model.guide, x, data_size=n)
        self.objective.step = self.step
        with param_store_registration(False):  # Adam holds model.parameters() itself
            terms = self.objective.terms(model.model, model.guide, x, data_size=n)
        loss = terms.loss.item()
        if math.isfinite(loss):  # a non-finite loss is refused before any gradient exists
            terms.surrogate.backward()
        return loss

    def train_step(self, x: torch.Tensor) -> float:
        """One gradient step on the minibatch ``x``; returns the loss per data point."""
        self.model.set_step(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss_and_grads(x)
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"non-finite loss ({loss}) at epoch {self.epoch + 1}, step {self.step}; "
                                        f"the step was not applied. {self._what_is_kept()}")
        if self.config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm)
        self.optimizer.step()
        self.step += 1
        return loss / self.train_data.shape[0]

    @torch.no_grad()
    def validate(self) -> Optional[float]:
        """The objective on the validation data, per data point (KL weight at its final value,
        the model in ``eval()`` mode)."""
        if self.valid_data is None:
            return None
        total = 0.0
        n = self.valid_data.shape[0]
        was_training = self.model.training
        self.model.eval()  # no word dropout, exact discrete latents: the model as evaluated
        model, objective = self.model, self.objective
        try:
            with pyro.validation_enabled(False), torch.no_grad(), param_store_registration(False):
                for start in range(0, n, self.config.batch_size):
                    x = self.valid_data[start:start + self.config.batch_size]
                    if isinstance(objective, Objective):  # at the final KL weight
                        total += objective.terms(model.model, model.guide, x, step=math.inf).loss.item()
                    else:
                        total += objective.loss(model.model, model.guide, x)
        finally:
            self.model.train(was_training)
        return total / n

    def _what_is_kept(self) -> str:
        """What a divergence leaves, and what to do (never naming a checkpoint that does not exist)."""
        advice = "a smaller learning rate (--lr) or gradient clipping (--clip-norm)"
        if self.checkpoint_path is not None and self.checkpoint_path.is_file():
            return (f"The last good checkpoint, after epoch {self.epoch}, is intact: {self.checkpoint_path}. "
                    f"Continue with --resume and {advice}.")
        where = "no run directory" if self.run_dir is None else "it diverged in its first epoch"
        return f"No checkpoint was written ({where}): start again with {advice}."

    def _check_parameters(self) -> None:
        for name, p in self.model.named_parameters():
            if not torch.isfinite(p).all():
                raise TrainingDivergedError(f"parameter {name!r} is not finite after epoch {self.epoch + 1}; "
                                            f"this epoch was not saved. {self._what_is_kept()}")

    def _batches(self, order: List[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The minibatches of one epoch, on the device: indexed on the device for data in memory,
        read by a DataLoader (``config.workers`` processes; pinned memory on CUDA) for data
        streamed from disk. Both give the same rows in the same order."""
        if isinstance(self.train_data, torch.Tensor):
            for idx in order:
                yield self.train_data[idx.to(self.device)]
            return
        loader = DataLoader(self.train_data, batch_sampler=[idx.tolist() for idx in order],
                            collate_fn=_already_a_batch, num_workers=self.config.workers,
                            pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.epoch))  # not the global stream
        for batch in loader:
            yield batch.to(self.device, non_blocking=True)

    # -------------------------------------------------------------------- fit
    def fit(self, resume: bool = False, note: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        """Train for ``config.epochs`` epochs in all; returns the history (one record per
        epoch, and records of events such as a resume, which have no ``train_loss``).

        With ``resume`` the checkpoint in ``run_dir`` is loaded first and training
        continues from the epoch after it, with this Trainer's learning rate and
        clipping; ``note`` (e.g. the settings a resume changed) is recorded in the
        history at that point.
        """
        cfg = self.config
        if resume:
            if self.checkpoint_path is None or not self.checkpoint_path.is_file():
                raise FileNotFoundError(f"nothing to resume: no checkpoint at {self.checkpoint_path}")
            self.load_state_dict(load_checkpoint(self.checkpoint_path, map_location=self.device))
            for group in self.optimizer.param_groups:  # a resume may lower the learning rate
                group["lr"] = cfg.lr
            if note:
                self.history.append({"event": "resume", "epoch": self.epoch, "step": self.step, **note})
                self.save()
                self._write_history()
        elif self.step == 0:  # a fresh start; a later fit() with more epochs continues the streams
            pyro.set_rng_seed(cfg.seed)
            self.shuffle_generator.manual_seed(cfg.seed)
            self.transform_generator.manual_seed(cfg.seed + 1)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        n = self.train_data.shape[0]
        self.model.train()
        while self.epoch < cfg.epochs:
            start = time.perf_counter()
            if self.batch_order is None:
                order = torch.randperm(n, generator=self.shuffle_generator).split(cfg.batch_size)
            else:
                order = self.batch_order(n, cfg.batch_size, self.shuffle_generator)
            running, count = 0.0, 0
            window, window_count = 0.0, 0
            bar = tqdm(self._batches(order), total=len(order), desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       disable=not cfg.progress, leave=False, mininterval=0.5)
            with pyro.validation_enabled(False):
                for i, x in enumerate(bar):
                    if self.train_transform is not None:
                        x = self.train_transform(x, self.transform_generator)
                    loss = self.train_step(x)
                    running += loss * x.shape[0]
                    count += x.shape[0]
                    window += loss
                    window_count += 1
                    if window_count == LOG_EVERY:
                        self.step_log.append([self.step, window / window_count])
                        window, window_count = 0.0, 0
                    if i % 25 == 0:
                        bar.set_postfix(loss=f"{running / count:.2f}", refresh=False)
            bar.close()
            self.train_seconds += time.perf_counter() - start
            self._check_parameters()
            valid = self.validate()
            record = {"epoch": self.epoch + 1, "step": self.step, "train_loss": running / count,
                      "valid_loss": valid, "train_seconds": self.train_seconds}
            self.history.append(record)
            self.epoch += 1
            self.save()
            self._write_history()
            if cfg.progress:
                tqdm.write(f"epoch {record['epoch']}: train loss {record['train_loss']:.3f}"
                           + (f", valid loss {valid:.3f}" if valid is not None else ""))
        return self.history
