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
