"""Full-budget checks on real data; opt-in with ``pytest -m slow`` (minutes each)."""

import json

import pytest

from pyro_lvm.cli import main

# each of these runs for many minutes: lift setup.cfg's 600 s per-test limit
pytestmark = pytest.mark.timeout(3 * 3600)


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


def _train(args, capsys):
    assert main([*args, "--no-progress", "--no-figures"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_catvae_gumbel_beats_reinforce_and_vqvae_beats_kmeans(data_dir, tmp_path, capsys):
    """Issue 4's checks through the CLI: 5 epochs of catvae, 3 of vqvae."""
    common = ["--dataset", "binarized_mnist", "--data-dir", str(data_dir), "--epochs", "5", "--seed", "0",
              "--eval-particles", "100"]
    gumbel = _train(["train", "catvae", *common, "--estimator", "gumbel", "--out", str(tmp_path / "g")], capsys)
    reinforce = _train(["train", "catvae", *common, "--estimator", "reinforce", "--out", str(tmp_path / "r")],
                       capsys)
    assert gumbel["test_neg_elbo"] < reinforce["test_neg_elbo"], (gumbel, reinforce)
    vq = _train(["train", "vqvae", "--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "3",
                 "--codebook-size", "64", "--eval-particles", "1", "--out", str(tmp_path / "vq")], capsys)
    assert vq["codebook_usage"] >= 0.5 and vq["test_recon_mse"] < vq["shallow_recon_mse"], vq


@pytest.mark.slow
def test_text_vae_collapses_without_cures_and_not_with_them(data_dir, tmp_path, capsys):
    """Issue 5's commands at 2 epochs of PTB (about 30 minutes on 2 CPU cores)."""
    ptb = ["--dataset", "ptb", "--data-dir", str(data_dir), "--epochs", "2", "--seed", "0",
           "--eval-particles", "50"]
    lm = _train(["train", "lstmlm", *ptb, "--out", str(tmp_path / "lm")], capsys)
    plain = _train(["train", "textvae", *ptb, "--out", str(tmp_path / "plain")], capsys)
    cured = _train(["train", "textvae", *ptb, "--word-dropout", "0.3", "--kl-anneal", "linear",
                    "--anneal-steps", "5000", "--free-bits", "0.25", "--out", str(tmp_path / "cured")], capsys)
    assert plain["test_kl"] < 0.5, plain
    assert cured["test_kl"] >= 3 and cured["active_units"] >= 5, cured
    # measured 156.1 against 149.0 (1.047x) on 2 threads, 1.0496x on one: a thin margin
    assert cured["test_ppl"] <= 1.05 * lm["test_ppl"], (cured["test_ppl"], lm["test_ppl"])
