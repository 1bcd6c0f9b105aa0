import json
import os
import subprocess
import sys

import pytest

from pyro_lvm.cli import main
from pyro_lvm.registry import MODELS

REQUIRED = {"test_nll", "nll_particles", "test_neg_elbo", "test_recon", "test_kl", "active_units",
            "mutual_info"}


def _fresh_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYRO_LVM_DATA"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path / "home"), MPLBACKEND="Agg")
    return env


def test_embedded_data_suggests_more_epochs():
    from pyro_lvm.data import load_dataset

    assert load_dataset("binarized_mnist_small").default_epochs == 50


def test_main_command_on_embedded_data_with_no_data_dir(tmp_path):
    run = tmp_path / "RUN"
    done = subprocess.run([sys.executable, "-m", "pyro_lvm", "train", "vae", "--epochs", "1",
                           "--out", str(run), "--no-progress"],
                          capture_output=True, text=True, env=_fresh_env(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert REQUIRED | {"train_steps", "train_seconds"} <= set(metrics)
    assert metrics["nll_particles"] == 1000 and metrics["train_steps"] == 50
    assert 60 < metrics["test_nll"] <= metrics["test_neg_elbo"] + 0.5
    for name in ("samples.png", "reconstructions.png", "training_curve.png", "config.json",
                 "checkpoint.pt", "history.jsonl"):
        assert (run / name).stat().st_size > 0, name
    assert json.loads(done.stdout)["test_nll"] == metrics["test_nll"]


def test_full_form_on_binarized_mnist_then_evaluate_and_resume(data_dir, tmp_path, capsys):
    run = str(tmp_path / "RUN")
    args = ["train", "vae", "--dataset", "binarized_mnist", "--data-dir", str(data_dir),
            "--epochs", "1", "--batch-size", "100", "--lr", "1e-3", "--latent-dim", "5",
            "--hidden", "20,20", "--activation", "tanh", "--objective", "iwae", "--particles", "5",
            "--seed", "0", "--out", run, "--eval-particles", "5", "--no-progress", "--no-figures"]
    assert main(args) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["train_steps"] == 500 and metrics["objective"] == "iwae"
    assert main(["evaluate", run, "--particles", "20", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert REQUIRED <= set(result) and result["nll_particles"] == 20
    assert json.loads((tmp_path / "RUN" / "eval.json").read_text()) == result
    assert result["test_nll"] <= metrics["test_nll"] + 0.5  # more particles: tighter
    assert main(["evaluate", run, "--particles", "20", "--proposal", "prior", "--no-progress"]) == 0
    naive = json.loads(capsys.readouterr().out)
    assert naive["nll_proposal"] == "prior"
    # both are stochastic upper bounds on -log p(x); sampling from the prior is never tighter
    # than the guide beyond noise (with 5 latent dims it is only a little looser)
    assert naive["test_nll"] > result["test_nll"] - 0.5
    assert main(["train", "vae", "--out", run, "--resume", "--epochs", "2", "--no-progress",
                 "--no-figures"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["train_steps"] == 1000 and resumed["epochs"] == 2


def test_bad_option_value_is_explained(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "vae", "--hidden", "2x", "--out", "R"])
    assert exit_info.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["train", "vae", "--objective", "iwae", "--free-bits", "1", "--out", "R"], "does not take free_bits"),
    (["train", "vae", "--activation", "swish", "--out", "R"], "activation"),
    (["train", "vae", "--dataset", "mnist", "--likelihood", "bernoulli", "--data-dir", "/nonexistent",
      "--out", "R"], "not a directory"),
    (["evaluate", "/nonexistent/run"], "not a run folder"),
])
def test_errors_are_clear(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(args)
    assert code == 2
    assert message in capsys.readouterr().err


def test_bernoulli_likelihood_asked_for_rejects_grey_levels(data_dir, tmp_path, capsys):
    code = main(["train", "vae", "--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "1",
                 "--likelihood", "bernoulli", "--out", str(tmp_path / "R")])
    assert code == 2 and "binary" in capsys.readouterr().err
    assert not (tmp_path / "R").exists()  # refused before anything was written


def test_list():
    assert main(["list"]) == 0


def test_resume_without_epochs_keeps_the_saved_total(tmp_path, capsys):
    run = str(tmp_path / "RUN")
    common = ["--no-progress", "--no-figures", "--eval-particles", "2"]
    assert main(["train", "ppca", "--dataset", "binarized_mnist_small", "--latent-dim", "2",
                 "--epochs", "1", "--out", run, *common]) == 0
    capsys.readouterr()
    assert main(["train", "ppca", "--out", run, "--resume", *common]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 1  # nothing more to do, not 50


@pytest.mark.parametrize("model", MODELS.names())
def test_every_models_train_help_renders_and_states_its_kl_default(model, capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", model, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    if MODELS.get(model).train_flow == "amortized":  # the help says the model's own default schedule
        expected = "this model's warm-up" if MODELS.get(model).default_kl_warmup else "(default: none)"
        assert expected in text
