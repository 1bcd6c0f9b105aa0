"""Data-parallel training with torchrun: 2 CPU processes on the gloo backend (issue 14).

The comparison with one process uses ``catvae`` with its latent summed out exactly (estimator
``enum``): no random draws enter the gradient, so two processes holding half a minibatch each
must reach the parameters of one process holding all of it, up to float rounding.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from pyro_lvm.checkpoint import load_checkpoint
from pyro_lvm.distributed import shard

MODEL = ["catvae", "--estimator", "enum", "--num-latents", "1", "--num-classes", "4", "--hidden", "32",
         "--batch-size", "100", "--seed", "3", "--eval-particles", "2", "--no-progress", "--no-figures"]


def _env():
    """One thread per process, and the embedded data set."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYRO_LVM_DATA", None)
    return env


def _run(args, out, processes, tmp_path):
    env = _env()
    if processes == 1:
        cmd = [sys.executable, "-m", "pyro_lvm", *args, "--out", str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "pyro_lvm", *args, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _params(run):
    return load_checkpoint(run / "checkpoint.pt")["model"]


def test_shards_cover_a_minibatch_once():
    idx = torch.randperm(101)
    parts = [shard(idx, r, 3) for r in range(3)]
    assert torch.equal(torch.cat(parts), idx) and [len(p) for p in parts] == [34, 34, 33]


_BUCKETS_SCRIPT = """
import torch, torch.distributed as dist
from pyro_lvm.distributed import OverlappedAverage, average_gradients

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3), torch.nn.Tanh(),
                          torch.nn.Linear(3, 2))
unused = torch.nn.Parameter(torch.ones(4))  # no gradient in any step: left out, as average_gradients does
params = list(net.parameters()) + [unused]
x = torch.randn(6, 7, generator=torch.Generator().manual_seed(rank))
several = OverlappedAverage(params, bucket_bytes=64)  # several buckets, started during the backward pass
assert len(several.buckets) > 2, several.buckets
several.remove()
one = OverlappedAverage(params, bucket_bytes=None)  # --bucket-mb 0: one bucket, after the last gradient
assert len(one.buckets) == 1 and len(one.buckets[0]) == len(params)
one.remove()
for bucket_bytes, backward_passes in ((64, 1), (64, 2), (None, 1)):  # 2: a gradient accumulated twice
    averager = OverlappedAverage(params, bucket_bytes=bucket_bytes)
    for p in params:
        p.grad = None
    for _ in range(backward_passes):
        net(x).square().sum().backward()
    loss_expected = average_gradients(net.parameters(), 0.25 + 0.5 * rank, extra=torch.tensor(float(rank + 1)))
    expected = [p.grad.clone() for p in net.parameters()]
    for p in params:
        p.grad = None
    averager.start(0.25 + 0.5 * rank)
    for _ in range(backward_passes):
        net(x).square().sum().backward()
    loss = averager.finish(torch.tensor(float(rank + 1)))
    assert unused.grad is None
    assert averager._twice == (backward_passes == 2)
    for p, e in zip(net.parameters(), expected):
        assert torch.allclose(p.grad, e, rtol=1e-6, atol=1e-7), (p.grad, e)
    assert float(loss) == float(loss_expected) == 0.25 * 1 + 0.75 * 2
    averager.remove()  # the next averager's hooks alone
dist.destroy_process_group()
print("ok")
"""


def test_gradient_buckets_overlapped_with_backward_equal_one_all_reduce(tmp_path):
    """OverlappedAverage (the Trainer's all-reduce with several processes) gives the gradients
    of one all-reduce after the backward pass: with several buckets, a parameter without a
    gradient, different weights per process, and two backward passes in one step."""
    script = tmp_path / "buckets.py"
    script.write_text(_BUCKETS_SCRIPT)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", "ok"]


def test_two_processes_match_one_and_write_one_run_folder(tmp_path):
    one = _run(["train", *MODEL, "--epochs", "1"], tmp_path / "one", 1, tmp_path)
    two = _run(["train", *MODEL, "--epochs", "1"], tmp_path / "two", 2, tmp_path)
    a, b = _params(tmp_path / "one"), _params(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-4, rtol=1e-4), k
    assert json.loads(one.stdout)["train_steps"] == 50  # 5000 points, global batch 100
    metrics = json.loads(two.stdout)  # printed once, by the first process
    assert metrics["train_steps"] == 50
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "config.json",
                                                                   "history.jsonl", "metrics.json"]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["processes"] == 2 and config["train"]["batch_size"] == 100
    history = [json.loads(line) for line in (tmp_path / "two" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [50]
    first = json.loads((tmp_path / "one" / "history.jsonl").read_text().splitlines()[0])
    assert history[0]["train_loss"] == pytest.approx(first["train_loss"], rel=1e-5)  # the global loss
    assert history[0]["valid_loss"] == pytest.approx(first["valid_loss"], rel=1e-4)  # split and summed


def test_an_interrupted_two_process_run_resumes(tmp_path):
    """Stopped after its first epoch, a 2-process run continues to the parameters of an
    uninterrupted one, with as many processes (and is refused with another number)."""
    _run(["train", *MODEL, "--epochs", "2"], tmp_path / "straight", 2, tmp_path)
    _run(["train", *MODEL, "--epochs", "1"], tmp_path / "cut", 2, tmp_path)  # stopped after epoch 1
    alone = subprocess.run([sys.executable, "-m", "pyro_lvm", "train", *MODEL, "--epochs", "2", "--resume",
                            "--out", str(tmp_path / "cut")], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path, env=_env())
    assert alone.returncode == 2 and "written by 2 processes" in alone.stderr
    resumed = _run(["train", *MODEL, "--epochs", "2", "--resume"], tmp_path / "cut", 2, tmp_path)
    assert json.loads(resumed.stdout)["train_steps"] == 100
    a, b = _params(tmp_path / "straight"), _params(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert len(state["rng"]["ranks"]) == 2  # each process's own random streams


def test_a_sampled_model_trains_in_two_processes_with_distinct_noise(tmp_path):
    """A VAE (reparameterized draws, each process its own): the run trains in one epoch, with its
    gradients all-reduced once after each backward pass (``--bucket-mb 0``; the other tests use
    the default buckets, all-reduced while the backward pass runs)."""
    args = ["train", "vae", "--latent-dim", "4", "--hidden", "32", "--epochs", "1", "--batch-size", "100",
            "--eval-particles", "3", "--no-progress", "--no-figures", "--bucket-mb", "0"]
    done = _run(args, tmp_path / "vae", 2, tmp_path)
    metrics = json.loads(done.stdout)
    assert json.loads((tmp_path / "vae" / "config.json").read_text())["train"]["bucket_mb"] == 0
    untrained = 784 * math.log(2)  # a uniform Bernoulli: 543 nats per digit
    assert metrics["train_steps"] == 50 and metrics["test_nll"] < 0.75 * untrained


def test_every_process_says_its_error_and_leaves_the_group(tmp_path):
    """An error under torchrun: each process prints one line naming itself, and exits with the
    error's status after leaving the process group (no abort from gloo's threads at exit)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pyro_lvm", "train", "vae", "--dataset", "mnist", "--data-dir", str(tmp_path / "nothing"),
           "--no-progress", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=_env())
    assert done.returncode != 0
    for rank in (0, 1):
        assert f"pyro-lvm: error (process {rank} of 2): " in done.stderr
    assert "SIGABRT" not in done.stderr and "terminate called" not in done.stderr
    assert "exitcode  : 2" in done.stderr  # the usage error's status, not a signal
