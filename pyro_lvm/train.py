"""The training loop: minibatch gradient steps on any objective, nothing else.

No argument parsing and no plotting here: :mod:`pyro_lvm.cli` and
:mod:`pyro_lvm.runs` build on it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pyro
import torch
from pyro.infer import ELBO as PyroELBO
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pyro_lvm.base import LatentVariableModel, param_store_registration
from pyro_lvm.checkpoint import load_checkpoint, save_checkpoint
from pyro_lvm.distributed import OverlappedAverage, all_sum, gather_objects, shard, world
from pyro_lvm.files import write_text
from pyro_lvm.validation import device as check_device
from pyro_lvm.objectives.base import Objective
from pyro_lvm.traced import TracedLoss, why_not_traced

CHECKPOINT = "checkpoint.pt"
LOG_EVERY = 10
#: steps between two checks that the losses are finite: the training loop synchronises with
#: the device only there (and at the end of each epoch)
CHECK_EVERY = 50
HISTORY = "history.jsonl"
#: ``torch.compile`` modes that :attr:`TrainConfig.compile` takes
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _already_a_batch(batch):
    """A DataLoader's collate function for data sets whose batched read returns one tensor."""
    return batch


def adam(parameters, lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam`` with its fused implementation (one kernel for all parameters, on
    the CPU as on CUDA) where the parameters allow it, else the default one. On a small VAE
    the default per-tensor loop takes a quarter of the step."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(parameters, lr=lr)


class _EpochTally:
    """The running mean loss per data point of an epoch and the step log's ``LOG_EVERY``-step
    means, fed with the checked losses (whole-data-set scale) of consecutive steps."""

    def __init__(self, data_size: int):
        self.data_size = data_size
        self.sizes: List[int] = []  # batch sizes of the steps not yet added
        self.total, self.count = 0.0, 0
        self.window, self.window_count = 0.0, 0

    def add(self, losses: List[float], step_after: int, step_log: List[List[float]]) -> None:
        sizes, self.sizes = self.sizes[:len(losses)], self.sizes[len(losses):]
        first = step_after - len(losses)
        for i, (loss, size) in enumerate(zip(losses, sizes)):
            per_point = loss / self.data_size
            self.total += per_point * size
            self.count += size
            self.window += per_point
            self.window_count += 1
            if self.window_count == LOG_EVERY:
                step_log.append([first + i + 1, self.window / self.window_count])
                self.window, self.window_count = 0.0, 0

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)


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
    :param bool trace: record the training loss once per minibatch shape and replay it
        (:mod:`pyro_lvm.traced`) where the model and the objective allow it; the steps are the
        same as eager ones, with less Python work each. ``False`` runs the model and guide under
        Pyro's handlers at every step.
    :param compile: ``None`` (eager), or a ``torch.compile`` mode (one of :data:`COMPILE_MODES`):
        for the recorded loss and its backward where the loss is recorded (``trace``), else for
        the model's networks (:meth:`~pyro_lvm.base.LatentVariableModel.compile_networks`);
        ``"reduce-overhead"`` captures CUDA graphs on a GPU.
    :param float bucket_mb: with several processes (:mod:`pyro_lvm.distributed`), the gradients
        are all-reduced in buckets of about this many MiB while the backward pass still runs
        (:class:`~pyro_lvm.distributed.OverlappedAverage`, as torch's ``DistributedDataParallel``
        with ``bucket_cap_mb``); ``0`` all-reduces them once, after the backward pass, which is
        faster where the processes leave no spare core for the backend's threads.
    """

    epochs: Optional[int] = 10
    batch_size: Optional[int] = 100
    lr: Optional[float] = 1e-3
    seed: Optional[int] = 0
    device: str = "cpu"
    progress: bool = True
    clip_norm: Optional[float] = None
    workers: int = 0
    compile: Optional[str] = None
    trace: bool = True
    bucket_mb: float = 1.0

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
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)} (or None), got {self.compile!r}")
        if not self.bucket_mb >= 0:
            raise ValueError(f"bucket_mb must be non-negative (0: one all-reduce after the backward pass), "
                             f"got {self.bucket_mb}")
        check_device(self.device)


class Trainer:
    """Fit a :class:`~pyro_lvm.base.LatentVariableModel` with an objective by Adam.

    Moves the model and the data to the device once; shuffles with its own
    generator; records the loss once per minibatch shape and replays it where the
    model and the objective allow (:mod:`pyro_lvm.traced`; the same steps with less
    Python work each); runs the steps with Pyro's validation off (the data is checked
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
        self.rank, self.world_size = world()  # more than one process: data-parallel (pyro_lvm.distributed)
        self.device = torch.device(self.config.device)
        self.model = model.to(self.device)
        #: with several processes, what sums the gradients (one bucket with bucket_mb 0)
        self._averager = (OverlappedAverage(self.model.parameters(), int(self.config.bucket_mb * 2**20) or None)
                          if self.world_size > 1 else None)
        self.objective = objective
        if train_transform is not None:  # the model sees transformed minibatches (e.g. binarized afresh)
            first = torch.as_tensor(train[:min(len(train), 1024)]).cpu()
            model.check_data(train_transform(first, torch.Generator().manual_seed(0)), "training data")
            if isinstance(train, torch.Tensor) and not torch.isfinite(train).all():
                raise ValueError("training data contains NaN or infinite values")
            self.train_data = train.to(self.device) if isinstance(train, torch.Tensor) else train
        elif isinstance(train, torch.Tensor):  # in memory: moved to the device once
            self.train_data = model.check_data(train, "training data").to(self.device)
        else:  # streamed from disk (rows read on demand, e.g. StreamedRows): checked on its first rows
            model.check_data(train[:min(len(train), 1024)], "training data")
            self.train_data = train
        self.valid_data = None if valid is None else model.check_data(valid, "validation data").to(self.device)
        widths = model.row_widths(self.train_data) if isinstance(self.train_data, torch.Tensor) else None
        #: each training row's width without its padding (sentences), on the host, or ``None``:
        #: minibatches are cut to their widest row here, not by the model on the device
        self.row_widths: Optional[torch.Tensor] = None if widths is None else widths.cpu()
        self._check_objective()
        #: the recorded and replayed loss (:mod:`pyro_lvm.traced`), or ``None`` (Pyro runs every step)
        self.traced: Optional[TracedLoss] = None
        #: why the loss is not recorded, or ``None``
        self.not_traced = (why_not_traced(model, objective, self.config.compile or "jit") if self.config.trace
                           else "TrainConfig.trace is off")
        if self.not_traced is None:
            self.traced = TracedLoss(model, objective, self.train_data.shape[0], engine=self.config.compile or "jit")
        elif self.config.compile is not None and not model.compile_networks(self.config.compile):
            raise ValueError(f"--compile: model {model.registry_name or type(model).__name__} has no "
                             f"networks to compile, and its loss cannot be recorded ({self.not_traced})")
        self.train_transform = train_transform
        self.batch_order = batch_order
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.optimizer = adam(self.model.parameters(), self.config.lr)
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
        if self.world_size > 1:  # every process's own random streams (a collective call)
            rng["ranks"] = gather_objects({k: v for k, v in rng.items() if k != "shuffle"})
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
        rng = state["rng"]
        self.shuffle_generator.set_state(rng["shuffle"])
        ranks = rng.get("ranks")
        writers = len(ranks) if ranks is not None else 1
        if writers != self.world_size:  # each process continues its own random streams
            raise ValueError(f"the checkpoint was written by {writers} process{'es' if writers > 1 else ''}; "
                             f"resume it with as many (torchrun --nproc_per_node {writers}), not {self.world_size}")
        own = ranks[self.rank] if ranks is not None else rng
        torch.set_rng_state(own["torch"])
        self.transform_generator.set_state(own["transform"])
        if "cuda" in own and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda"], self.device)

    def save(self) -> None:
        """Write the checkpoint (only the first process writes; all take part in gathering it)."""
        if self.run_dir is not None:
            state = self.state_dict()
            if self.rank == 0:
                save_checkpoint(self.checkpoint_path, state)

    def _write_history(self) -> None:
        if self.run_dir is None or self.rank != 0:
            return
        write_text(self.run_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in self.history))

    # ------------------------------------------------------------------ steps
    def _loss_and_grads(self, x: torch.Tensor) -> torch.Tensor:
        """The loss of one batch as a 0-dim tensor, with the estimator's gradients accumulated.

        For this library's objectives the loss stays where it was computed: no host
        synchronisation per step (Pyro's own ELBOs return a number, which they synchronise for).
        """
        model, n = self.model, self.train_data.shape[0]
        if not isinstance(self.objective, Objective):  # one of Pyro's ELBOs: as SVI.step runs it
            return torch.tensor(float(self.objective.loss_and_grads(model.model, model.guide, x, data_size=n)))
        self.objective.step = self.step
        if self.traced is not None:
            terms = self.traced(x)
        else:
            with param_store_registration(False):  # Adam holds model.parameters() itself
                terms = self.objective.terms(model.model, model.guide, x, data_size=n)
        terms.surrogate.backward()
        return terms.loss.detach()

    def train_step(self, x: torch.Tensor, global_size: Optional[int] = None) -> torch.Tensor:
        """One gradient step on the minibatch ``x``; returns its loss (a 0-dim tensor, for the
        whole data set's scale) without looking at it: :meth:`fit` checks the losses every
        :data:`CHECK_EVERY` steps and at the end of each epoch, and undoes a divergence.

        With several processes ``x`` is this process's shard of a global minibatch of
        ``global_size`` points; gradients and loss are combined across processes with weights
        ``len(x) / global_size`` (see :mod:`pyro_lvm.distributed`).

        For a model with :meth:`~pyro_lvm.base.LatentVariableModel.row_widths` (the sentence
        models), ``x`` is taken as it comes, as :meth:`fit` cuts it to its widest row (a
        minibatch with more padding gives the same step, in more time)."""
        self.model.set_step(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        if self._averager is not None:  # buckets of gradients all-reduced while backward runs
            self._averager.start(x.shape[0] / (global_size or x.shape[0]))
        # minibatches that _batches cut already are taken as they come (LatentVariableModel.presized)
        with self.model.presized() if self.row_widths is not None else contextlib.nullcontext():
            if self.config.compile is None:
                loss = self._loss_and_grads(x)
            else:
                loss = self._compiled_loss_and_grads(x)
        if self._averager is not None:
            loss = self._averager.finish(loss.to(self.device))
        if self.config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm)
        self.optimizer.step()
        self.step += 1
        return loss

    def _compiled_loss_and_grads(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_loss_and_grads`, saying plainly what to do if compiling fails (which happens at
        the first step that runs a compiled function)."""
        from torch._dynamo.exc import TorchDynamoException

        try:
            return self._loss_and_grads(x)
        except TorchDynamoException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RuntimeError(f"--compile {self.config.compile}: torch.compile failed on model "
                               f"{self.model.registry_name or type(self.model).__name__} ({first}); "
                               "train without --compile") from e

    def _remember_good_state(self) -> None:
        """Keep a copy of the model and the optimizer as they are after a check found them good."""
        self._good = ({k: v.detach().clone() for k, v in self.model.state_dict().items()},
                      copy.deepcopy(self.optimizer.state_dict()), self.step)

    def _checked_losses(self, pending: List[torch.Tensor]) -> List[float]:
        """The losses of the steps since the last check, as numbers (one host synchronisation).
        A non-finite one puts the model and the optimizer back to their state at the last check
        and raises :class:`TrainingDivergedError` naming the step."""
        values = torch.stack([loss.reshape(()).float() for loss in pending]).tolist()
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            state, optimizer_state, good_step = self._good
            self.model.load_state_dict(state)
            self.optimizer.load_state_dict(optimizer_state)
            bad_step = self.step - len(values) + bad
            self.step = good_step
            raise TrainingDivergedError(
                f"non-finite loss ({values[bad]}) at epoch {self.epoch + 1}, step {bad_step}; the model is back "
                f"at its state after step {good_step}, the last good one. {self._what_is_kept()}")
        self._remember_good_state()
        return values

    @torch.no_grad()
    def validate(self) -> Optional[float]:
        """The objective on the validation data, per data point (KL weight at its final value,
        the model in ``eval()`` mode)."""
        if self.valid_data is None:
            return None
        total = 0.0
        n = self.valid_data.shape[0]
        rows = shard(torch.arange(n))  # with several processes, each scores its part
        first, last = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
        was_training = self.model.training
        self.model.eval()  # no word dropout, exact discrete latents: the model as evaluated
        model, objective = self.model, self.objective
        try:
            with pyro.validation_enabled(False), torch.no_grad(), param_store_registration(False):
                for start in range(first, last, self.config.batch_size):
                    x = self.valid_data[start:min(start + self.config.batch_size, last)]
                    if isinstance(objective, Objective):  # at the final KL weight
                        total += objective.terms(model.model, model.guide, x, step=math.inf).loss.item()
                    else:
                        total += objective.loss(model.model, model.guide, x)
        finally:
            self.model.train(was_training)
        return float(all_sum(torch.tensor(total, dtype=torch.float64))) / n

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

    def _batches(self, order: List[torch.Tensor]) -> Iterator[Tuple[torch.Tensor, int]]:
        """The minibatches of one epoch, on the device, with the size of the global minibatch each
        is (with several processes) a shard of: indexed on the device for data in memory, read by
        a DataLoader (``config.workers`` processes; pinned memory on CUDA) for data streamed from
        disk. Both give the same rows in the same order."""
        sizes = [len(i) for i in order]
        order = [shard(idx, self.rank, self.world_size) for idx in order]  # this process's part
        if isinstance(self.train_data, torch.Tensor):  # the epoch's indices reach the device at once
            on_device = torch.cat(order).to(self.device).split([len(i) for i in order])
            for idx, host_idx, size in zip(on_device, order, sizes):
                x = self.train_data[idx]
                if self.row_widths is not None and len(host_idx):  # cut on the host's numbers
                    x = x[:, :int(self.row_widths[host_idx].max())]
                yield x, size
            return
        loader = DataLoader(self.train_data, batch_sampler=[idx.tolist() for idx in order],
                            collate_fn=_already_a_batch, num_workers=self.config.workers,
                            pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.epoch))  # not the global stream
        for batch, size in zip(loader, sizes):
            yield batch.to(self.device, non_blocking=True), size

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
            pyro.set_rng_seed(cfg.seed + self.rank)  # each process draws its own noise...
            self.shuffle_generator.manual_seed(cfg.seed)  # ...in one shared order of the data
            self.transform_generator.manual_seed(cfg.seed + 1 + 7919 * self.rank)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        n = self.train_data.shape[0]
        self.model.train()
        self._remember_good_state()
        while self.epoch < cfg.epochs:
            start = time.perf_counter()
            if self.batch_order is None:
                order = torch.randperm(n, generator=self.shuffle_generator).split(cfg.batch_size)
            else:
                order = self.batch_order(n, cfg.batch_size, self.shuffle_generator)
            tally = _EpochTally(n)
            pending: List[torch.Tensor] = []
            bar = tqdm(self._batches(order), total=len(order), desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       disable=not cfg.progress or self.rank != 0, leave=False, mininterval=0.5)
            with pyro.validation_enabled(False):
                for x, global_size in bar:
                    if self.train_transform is not None:
                        x = self.train_transform(x, self.transform_generator)
                    pending.append(self.train_step(x, global_size))
                    tally.sizes.append(global_size)
                    if len(pending) == CHECK_EVERY:
                        tally.add(self._checked_losses(pending), self.step, self.step_log)
                        pending = []
                        bar.set_postfix(loss=f"{tally.mean:.2f}", refresh=False)
                if pending:
                    tally.add(self._checked_losses(pending), self.step, self.step_log)
            bar.close()
            self.train_seconds += time.perf_counter() - start
            self._check_parameters()
            valid = self.validate()
            record = {"epoch": self.epoch + 1, "step": self.step, "train_loss": tally.mean,
                      "valid_loss": valid, "train_seconds": self.train_seconds}
            self.history.append(record)
            self.epoch += 1
            self.save()
            self._write_history()
            if cfg.progress and self.rank == 0:
                tqdm.write(f"epoch {record['epoch']}: train loss {record['train_loss']:.3f}"
                           + (f", valid loss {valid:.3f}" if valid is not None else ""))
        return self.history
