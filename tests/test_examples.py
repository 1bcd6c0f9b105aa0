"""Every example script runs, with a tiny budget, as a user would run it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: script -> tiny-budget arguments
TINY = {
    "vae.py": ["--epochs", "1", "--latent-dim", "4", "--hidden", "32", "--eval-particles", "5",
               "--objective", "iwae", "--particles", "2", "--prior", "vamp", "--pseudo-inputs", "20"],
    "hvae.py": ["--epochs", "1", "--latent-dims", "6,3", "--hidden", "32", "--hidden2", "16", "--eval-particles",
                "5", "--compare"],
    "gmm.py": ["--restarts", "2", "--max-components", "3"],
    "text_vae.py": ["--epochs", "1", "--embed-dim", "8", "--hidden-dim", "16", "--eval-particles", "2",
                    "--anneal-steps", "10", "--data-file", "TEXT_FILE"],
    "vqvae.py": ["--epochs", "1", "--hidden", "32", "--codebook-size", "16", "--ema-decay", "0.9"],
    "conv_vae.py": ["--epochs", "1", "--train-points", "300", "--test-points", "100", "--latent-dim", "4",
                    "--channels", "4,8", "--eval-particles", "3", "--device", "cpu"],
    "ssvae.py": ["--epochs", "1", "--labels", "20", "--hidden", "32", "--latent-dim", "4", "--eval-particles", "2",
                 "--batch-size", "1000", "--label-share", "0.02"],  # one pass over MNIST's 50000 images in 51 steps
    "cvae.py": ["--epochs", "1", "--hidden", "32", "--latent-dim", "4", "--eval-particles", "2", "--classifier-steps",
                "20", "--samples-per-class", "5", "--batch-size", "1000"],
    "discrete_vae.py": ["--epochs", "1", "--hidden", "32", "--estimator", "st-gumbel", "--eval-particles", "5"],
    "ppca.py": ["--epochs", "1", "--latent-dim", "4", "--eval-particles", "5"],
}


def test_every_example_is_covered():
    scripts = {p.name for p in EXAMPLES.glob("*.py") if "__main__" in p.read_text()}
    assert scripts == set(TINY), "add new example scripts to TINY"


@pytest.mark.parametrize("script", sorted(TINY))
def test_example_runs(script, tmp_path, data_dir):
    text = tmp_path / "sentences.txt"  # a slice of the real PTB validation split
    text.write_text("\n".join((data_dir / "ptb" / "ptb.valid.txt").read_text().splitlines()[:200]))
    args = [str(text) if a == "TEXT_FILE" else a for a in TINY[script]]
    cmd = [sys.executable, str(EXAMPLES / script), *args, "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary and all(v == v for v in summary.values())
    if script == "hvae.py":  # the one-layer VAE is compared under the hvae's own KL warm-up
        schedules = [json.loads((tmp_path / "run" / m / "config.json").read_text())["objective_options"]
                     for m in ("hvae", "vae")]
        assert schedules[0]["kl_anneal"] == "linear" and schedules[0] == schedules[1]
