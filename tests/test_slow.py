"""Full-budget checks on real data; opt-in with ``pytest -m slow`` (minutes each)."""

import json

import pytest

from pyro_lvm.cli import main


@pytest.mark.slow
def test_iwae_beats_elbo_at_equal_budget(data_dir, tmp_path, capsys):
    """The issue's 10-epoch command: IWAE (K=5) reaches a lower test NLL than the ELBO."""
    nll = {}
    for objective, extra in [("elbo", []), ("iwae", ["--particles", "5"])]:
        args = ["train", "vae", "--dataset", "binarized_mnist", "--data-dir", str(data_dir),
                "--epochs", "10", "--batch-size", "100", "--lr", "1e-3", "--latent-dim", "50",
                "--hidden", "200,200", "--activation", "tanh", "--objective", objective, *extra,
                "--seed", "0", "--out", str(tmp_path / objective), "--no-progress", "--no-figures"]
        assert main(args) == 0
        nll[objective] = json.loads(capsys.readouterr().out)["test_nll"]
    assert nll["iwae"] < nll["elbo"], nll
    assert 80 < nll["iwae"] < 110, nll  # the range reported for this budget and architecture
