"""Data-parallel training on ``torch.distributed``: one process per device, started by torchrun.

``torchrun --standalone --nproc_per_node P -m pyro_lvm train ...`` starts ``P``
processes; each reads the whole data set, takes its shard of every global
minibatch and computes its gradient; the gradients are averaged across the
processes (all-reduced) before every optimizer step, so all of them hold the
same parameters. Only the first process (rank 0) writes the run folder.

With a global minibatch :math:`B` of :math:`N` points split into shards of
:math:`b_r` points, process :math:`r` scales its points by :math:`N/b_r` (its
data plate has the whole data set's size), and its gradient enters the sum
with weight :math:`b_r/B`, so the update is that of the estimate
:math:`\\frac{N}{B}\\sum_{i \\in \\text{batch}} \\ell_i`, exactly as one process with
batch :math:`B` computes it (the points' random draws differ: each process has
its own random stream). Minibatches are passed to the model explicitly (the
data plate never subsamples on its own), so no two processes can draw the same
subsample.

Backend: ``gloo`` on the CPU, ``nccl`` on CUDA (one GPU per process,
``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist


def world() -> Tuple[int, int]:
    """``(rank, number of processes)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files and prints results (rank 0, or no process group)."""
    return world()[0] == 0


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher) set up more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: str) -> str:
    """Join the process group that torchrun describes in the environment (once) and return the
    device this process trains on: ``cuda:LOCAL_RANK`` for ``cuda``, else ``device``."""
    if not launched_by_torchrun():
        return device
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def shard(indices: torch.Tensor, rank: Optional[int] = None, size: Optional[int] = None) -> torch.Tensor:
    """This process's part of a global minibatch: contiguous pieces whose sizes differ by at most one.

    >>> import torch
    >>> [shard(torch.arange(7), r, 2).tolist() for r in range(2)]
    [[0, 1, 2, 3], [4, 5, 6]]
    """
    if rank is None or size is None:
        rank, size = world()
    return indices.tensor_split(size)[rank] if size > 1 else indices


def average_gradients(parameters: Iterable[torch.nn.Parameter], weight: float,
                      extra: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """Replace each gradient by the sum over processes of ``weight * gradient`` (one all-reduce of
    one flat buffer); ``extra`` (e.g. the loss) is summed the same way and returned."""
    grads = [p.grad for p in parameters if p.grad is not None]
    pieces = [g.reshape(-1) for g in grads]
    if extra is not None:
        pieces.append(extra.reshape(-1).to(pieces[0].dtype if pieces else extra.dtype))
    if not pieces:
        return extra
    flat = torch.cat(pieces) * weight
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[offset:].reshape(()) if extra is not None else None


#: the size of one bucket of gradients that :class:`OverlappedAverage` all-reduces while the
#: backward pass still computes the rest (torch's DistributedDataParallel starts with 1 MiB)
BUCKET_BYTES = 1 << 20


class OverlappedAverage:
    """:func:`average_gradients`, overlapped with the backward pass, as torch's
    ``DistributedDataParallel`` does: the parameters are grouped into buckets of about
    ``bucket_bytes``, in the reverse of their order (the order a backward pass through a
    feed-forward model finishes their gradients), and a bucket's all-reduce starts, on the
    backend's own threads, as soon as its last gradient is accumulated. Buckets start in the
    same order on every process (collectives are matched by order).

    Use it around each backward pass::

        averager.start(weight)      # before the backward pass
        loss.backward()
        loss = averager.finish(loss)  # waits; every gradient is now the weighted sum

    A parameter without a gradient in a step is left out, as :func:`average_gradients` leaves
    it out (so it must lack one on every process). A gradient accumulated twice in one step
    (two backward passes) makes the step fall back to :func:`average_gradients` after the
    backward passes, with the same result.

    :param parameters: the model's parameters.
    :param bucket_bytes: the size of a bucket; ``None``: one bucket, all-reduced once the backward
        pass has accumulated the last gradient (what :func:`average_gradients` does after it).
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], bucket_bytes: Optional[int] = BUCKET_BYTES):
        self.parameters = [p for p in parameters if p.requires_grad]
        self.buckets: List[List[torch.nn.Parameter]] = []
        size = bucket_bytes
        for p in reversed(self.parameters):
            if not self.buckets or (bucket_bytes is not None and size + p.numel() * p.element_size() > bucket_bytes
                                    and size > 0):
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += p.numel() * p.element_size()
        self._bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        self._active = False
        self._hooks = [p.register_post_accumulate_grad_hook(self._accumulated) for p in self.parameters]

    def remove(self) -> None:
        """Take the hooks off the parameters."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def start(self, weight: float) -> None:
        """Begin a step whose gradients enter the sum with ``weight``."""
        self._weight = weight
        self._ready = [0] * len(self.buckets)
        self._seen: set = set()
        self._next = 0  # the first bucket not started
        self._works: List[Tuple[int, torch.Tensor, Any]] = []
        self._twice = False
        self._active = True

    def _accumulated(self, p: torch.Tensor) -> None:
        if not self._active:
            return
        if id(p) in self._seen:
            self._twice = True
            return
        self._seen.add(id(p))
        self._ready[self._bucket_of[id(p)]] += 1
        while (not self._twice and self._next < len(self.buckets)
               and self._ready[self._next] == len(self.buckets[self._next])):
            self._launch(self._next)

    def _launch(self, i: int) -> None:
        grads = [p.grad for p in self.buckets[i] if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads]) * self._weight if grads else None
        self._works.append((i, flat, dist.all_reduce(flat, async_op=True) if flat is not None else None))
        self._next = i + 1

    def finish(self, extra: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """Wait for the buckets (starting those whose parameters had no gradient), write the
        sums into the gradients, and return the weighted sum over processes of ``extra`` (e.g.
        the loss), as :func:`average_gradients` does."""
        self._active = False
        if self._twice:  # a gradient changed after its bucket started: discard, and average once
            for _, _, work in self._works:
                if work is not None:
                    work.wait()
            return average_gradients(self.parameters, self._weight, extra=extra)
        while self._next < len(self.buckets):
            self._launch(self._next)
        if extra is not None:
            extra = extra.reshape(1) * self._weight  # weighted as the gradients (average_gradients)
            extra_work = dist.all_reduce(extra, async_op=True)
        for i, flat, work in self._works:
            if work is None:
                continue
            work.wait()
            offset = 0
            for p in self.buckets[i]:
                if p.grad is not None:
                    p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
                    offset += p.numel()
        if extra is None:
            return None
        extra_work.wait()
        return extra.reshape(())


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over the processes (itself outside a process group)."""
    if world()[1] == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every process's ``rows`` (first dimension may differ), concatenated in rank order."""
    if world()[1] == 1:
        return rows
    parts: List[Any] = [None] * world()[1]
    dist.all_gather_object(parts, rows.cpu())
    return torch.cat(parts).to(rows.device)


def gather_objects(obj: Any) -> List[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` outside a process group)."""
    if world()[1] == 1:
        return [obj]
    parts: List[Any] = [None] * world()[1]
    dist.all_gather_object(parts, obj)
    return parts


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and give its result to every process; an error it raises is
    raised on every process (so none waits for the others forever)."""
    if world()[1] == 1:
        return fn()
    box: List[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # noqa: BLE001  (re-raised below, on every process)
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value
