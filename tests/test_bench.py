"""Every benchmark in ``bench/`` runs, with a tiny budget, as its docstring says to run it.

These tests time nothing and assert no speed: they only keep the benchmarks working (a
benchmark that broke since its last run reports nothing). Each run must print the numbers it
exists for, finite and positive.
"""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
DATA = "DATA_DIR"  # replaced by the real data directory
NUMBER = r"([0-9]+(?:\.[0-9]+)?)"

#: (script, processes, tiny-budget arguments, pattern whose groups are the numbers it prints)
TINY = [
    ("ddp_step.py", 1, ["--data-dir", DATA, "--steps", "3"], r"whole step " + NUMBER + " ms"),
    ("ddp_step.py", 2, ["--data-dir", DATA, "--steps", "3", "--overlap"], r"\(overlapped\).*?whole step " + NUMBER),
    ("ddp_step.py", 2, ["--data-dir", DATA, "--steps", "3", "--torch-ddp", "--no-reduce"],
     r"plain PyTorch side by side, no all-reduce: whole step " + NUMBER),
    ("step_parts.py", 1, ["--data-dir", DATA, "--steps", "3", "--repeats", "1"],
     r"whole training step\s+" + NUMBER),
    ("vae_overhead.py", 1, ["--data-dir", DATA, "--steps", "3", "--repeats", "1", "--objectives", "elbo,iwae5",
                            "--configs", "overhead", "--eval-particles", "2"],
     r"(?m)^iwae5" + r"\s+" + r"\s+".join([NUMBER] * 5) + r"\s*$"),
    ("recorded_vs_eager.py", 1, ["--data-dir", DATA, "--rows", "200", "--repeats", "1"],
     r"recorded " + NUMBER + r" steps/s, eager " + NUMBER + r" steps/s, recorded/eager " + NUMBER),
    ("text_vae_speed.py", 1, ["--data-dir", DATA, "--steps", "2", "--repeats", "1"],
     r"(?m)^textvae\s+" + NUMBER + r"\s+" + NUMBER + r"\s*$"),
    ("gmm_em.py", 1, ["--points", "2000", "--max-iter", "3"], r"ratio sklearn/pyro_lvm: total " + NUMBER),
    ("discrete_vae.py", 1, ["--data-dir", DATA, "--epochs", "1", "--eval-particles", "2", "--catvae", "st",
                            "--bernvae", "st"],
     r"difference (-?[0-9.]+) nats; steps/s plain " + NUMBER + ", pyro_lvm " + NUMBER + ", ratio " + NUMBER),
]


def test_every_benchmark_is_covered():
    scripts = {p.name for p in BENCH.glob("*.py") if "__main__" in p.read_text()}
    assert scripts == {script for script, *_ in TINY}, "add new benchmarks to TINY"


@pytest.mark.parametrize("script, processes, args, pattern", TINY,
                         ids=[f"{s[:-3]}-{p}-" + "".join(a for a in args if a.startswith("--") and a not in
                                                         ("--data-dir", "--steps", "--repeats"))
                              for s, p, args, _ in TINY])
def test_benchmark_runs(script, processes, args, pattern, data_dir, tmp_path):
    if script == "gmm_em.py":
        pytest.importorskip("sklearn")
    args = [str(data_dir) if a == DATA else a for a in args]
    if processes == 1:
        cmd = [sys.executable, str(BENCH / script), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               str(BENCH / script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.findall(pattern, done.stdout)
    assert len(found) == processes, f"expected {processes} line(s) matching {pattern!r} in:\n{done.stdout[-3000:]}"
    for numbers in found:
        numbers = [float(n) for n in (numbers if isinstance(numbers, tuple) else (numbers,))]
        if script == "discrete_vae.py":
            numbers = numbers[1:]  # the first is a difference of test ELBOs, of either sign
        assert all(math.isfinite(n) and n > 0 for n in numbers), numbers
