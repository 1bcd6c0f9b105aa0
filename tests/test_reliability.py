"""Runs never lose data, and every mistake gets a clear one-line answer.

Each case states a bad input or a fault and the expected behaviour: the exit
status (2: a usage error, 1: a failed run), a phrase of the one-line message,
no traceback, and no file of an existing run changed.
"""

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyro
import numpy as np
import pytest
import torch

from pyro_lvm.checkpoint import CheckpointError, load_checkpoint
from pyro_lvm.cli import describe_error, main
from pyro_lvm.files import atomic_write, claim_output_folder, remove_partial_files, write_json
from pyro_lvm.models import VAE, BernVAE
from pyro_lvm.objectives import ELBO, TraceGraphELBO
from pyro_lvm.train import TrainConfig, Trainer, TrainingDivergedError
from resuming import assert_same_parameters, straight_and_resumed

TINY = ["--epochs", "1", "--no-progress", "--no-figures", "--eval-particles", "2", "--latent-dim", "2",
        "--hidden", "8"]


def _digest(folder: Path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained vae run and a trained textvae run (tiny), shared read-only by the cases."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", "vae", *TINY, "--out", str(root / "vae")]) == 0
    sentences = [f"the {w} said it would {v} the market" for w in ("company", "bank", "firm", "group")
                 for v in ("buy", "sell", "leave", "watch", "join")] * 3
    (root / "text.txt").write_text("\n".join(sentences) + "\n")
    assert main(["train", "textvae", "--epochs", "1", "--no-progress", "--no-figures", "--eval-particles", "2",
                 "--embed-dim", "4", "--hidden-dim", "8", "--encoder-hidden-dim", "8", "--data-file",
                 str(root / "text.txt"), "--out", str(root / "text")]) == 0
    (root / "table.csv").write_text("a,b\n" + "".join(f"{i % 7},{(i * 3) % 11}\n" for i in range(60)))
    return root


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------ the command line
BAD_COMMANDS = [
    # (name, argv with {R} = the vae run, {T} = the text run, {D} = their folder, {N} = a new path, status, phrase)
    ("train into a run folder", ["train", "vae", *TINY, "--out", "{R}"], 2, "not empty.*--resume.*--overwrite"),
    ("resume and overwrite", ["train", "vae", "--resume", "--overwrite", "--out", "{R}"], 2, "give one"),
    ("resume nothing", ["train", "vae", "--resume", "--out", "{N}"], 2, "nothing to resume"),
    ("out is a file", ["train", "vae", *TINY, "--out", "{D}/table.csv"], 2, "is a file"),
    ("out below a file", ["train", "vae", *TINY, "--out", "{D}/table.csv/run"], 2, "cannot create|is a file"),
    ("epochs 0", ["train", "vae", "--epochs", "0", "--out", "{N}"], 2, "at least 1"),
    ("epochs negative", ["train", "vae", "--epochs", "-3", "--out", "{N}"], 2, "epochs"),
    ("batch 0", ["train", "vae", "--batch-size", "0", "--out", "{N}"], 2, "batch_size must be positive"),
    ("lr 0", ["train", "vae", "--lr", "0", "--out", "{N}"], 2, "lr must be positive"),
    ("lr nan", ["train", "vae", "--lr", "nan", "--out", "{N}"], 2, "lr must be positive"),
    ("clip 0", ["train", "vae", "--clip-norm", "0", "--out", "{N}"], 2, "clip_norm"),
    ("eval particles 0", ["train", "vae", "--eval-particles", "0", "--out", "{N}"], 2, "eval-particles"),
    ("particles 0", ["train", "vae", "--particles", "0", "--out", "{N}"], 2, "num_particles"),
    ("vimco with one particle", ["train", "vae", "--objective", "vimco", "--particles", "1", "--out", "{N}"],
     2, "num_particles >= 2"),
    ("free bits negative", ["train", "vae", "--free-bits", "-1", "--out", "{N}"], 2, "free_bits"),
    ("beta negative", ["train", "vae", "--beta", "-1", "--out", "{N}"], 2, "beta"),
    ("anneal steps 0", ["train", "vae", "--kl-anneal", "linear", "--anneal-steps", "0", "--out", "{N}"], 2,
     "--anneal-steps: expected 1 or more"),
    ("anneal start 0", ["train", "vae", "--kl-anneal", "linear", "--anneal-start", "0", "--out", "{N}"], 2,
     r"--anneal-start: expected a number in \(0, 1\]"),
    ("anneal steps without a schedule", ["train", "vae", "--anneal-steps", "50", "--out", "{N}"], 2,
     "kl_anneal is 'none': name a schedule"),
    ("anneal start with none", ["train", "vae", "--kl-anneal", "none", "--anneal-start", "0.1", "--out", "{N}"], 2,
     "kl_anneal is 'none': name a schedule"),
    ("free bits on iwae", ["train", "vae", "--objective", "iwae", "--free-bits", "1", "--out", "{N}"], 2,
     "does not take free_bits"),
    ("latent dim 0", ["train", "vae", "--latent-dim", "0", "--out", "{N}"], 2, "latent_dim"),
    ("hidden words", ["train", "vae", "--hidden", "a,b", "--out", "{N}"], 2, "comma-separated integers"),
    ("activation unknown", ["train", "vae", "--activation", "swishy", "--out", "{N}"], 2, "activation"),
    ("likelihood unknown", ["train", "vae", "--likelihood", "poisson", "--out", "{N}"], 2, "likelihood"),
    ("device unknown", ["train", "vae", *TINY, "--device", "gpu7", "--out", "{N}"], 2, "device"),
    ("device mps", ["train", "vae", *TINY, "--device", "mps", "--out", "{N}"], 2, "device"),
    ("relaxed guide with elbo", ["train", "bernvae", *TINY[:-4], "--estimator", "gumbel", "--objective", "elbo",
                                 "--out", "{N}"], 2, "outside the support.*meanfield"),
    ("discrete guide with meanfield", ["train", "bernvae", *TINY[:-4], "--estimator", "vimco", "--objective",
                                       "meanfield", "--out", "{N}"], 2, "no rsample"),
    ("vae on text", ["train", "vae", *TINY, "--data-file", "{D}/text.txt", "--out", "{N}"], 2,
     "cannot be trained.*sentences.*textvae"),
    ("textvae on images", ["train", "textvae", "--epochs", "1", "--out", "{N}"], 2, "vectors.*vae"),
    ("text file missing", ["train", "textvae", "--data-file", "{D}/missing.txt", "--out", "{N}"], 2,
     "no text file"),
    ("text file not utf-8", ["train", "textvae", "--data-file", "{D}/latin1.txt", "--out", "{N}"], 2, "UTF-8"),
    ("text file empty", ["train", "textvae", "--data-file", "{D}/empty.txt", "--out", "{N}"], 2,
     "no sentences.*blank"),
    ("valid file alone", ["train", "textvae", "--valid-file", "{D}/text.txt", "--out", "{N}"], 2,
     "go with --data-file"),
    ("data file and another data set", ["train", "textvae", "--dataset", "ptb", "--data-file", "{D}/text.txt",
                                        "--out", "{N}"], 2, "data set 'text'"),
    ("resume with another batch size", ["train", "vae", "--resume", "--batch-size", "7", "--out", "{R}"], 2,
     "batch_size 7"),
    ("resume with another model option", ["train", "vae", "--resume", "--latent-dim", "5", "--out", "{R}"], 2,
     "latent_dim 5"),
    ("resume with another objective", ["train", "vae", "--resume", "--objective", "iwae", "--out", "{R}"], 2,
     "objective 'iwae'"),
    ("resume with another seed", ["train", "vae", "--resume", "--seed", "3", "--out", "{R}"], 2, "seed 3"),
    ("evaluate no run", ["evaluate", "{N}"], 2, "not a run folder"),
    ("evaluate a data folder", ["evaluate", "{D}"], 2, "not a run folder"),
    ("evaluate particles 0", ["evaluate", "{R}", "--particles", "0"], 2, "particles"),
    ("amortization gap of a discrete run", ["evaluate", "{D}/bern", "--amortization-gap", "--particles", "2"],
     2, "Gaussian guide"),
    ("gradients of a vae", ["gradients", "{R}", "--draws", "3"], 2, "discrete-latent"),
    ("gradients one draw", ["gradients", "{D}/bern", "--draws", "1"], 2, "num_draws"),
    ("conv vqvae with its own number of codes", ["train", "vqvae", "--network", "conv", "--num-latents", "16",
                                                 "--out", "{N}"], 2, "7x7 grid, so num_latents is 49"),
    ("conv network on vectors", ["train", "vae", "--network", "conv", "--data-file", "{D}/vectors.npy",
                                 "--out", "{N}"], 2, "needs the image shape"),
    ("sample words of an image run", ["sample", "{R}", "--sample-words"], 2, "--sample-words is for sentence"),
    ("sample zero images", ["sample", "{R}", "--num", "0"], 2, "--num must be a positive integer"),
    ("sample pixels of a text run", ["sample", "{T}", "--draw-pixels"], 2, "--draw-pixels is for images"),
    ("sample zero sentences", ["sample", "{T}", "--num", "0"], 2, "num must be positive"),
    ("beam negative", ["interpolate", "{T}", "the company", "the bank", "--beam", "-1"], 2, "beam"),
    ("steps 1", ["interpolate", "{T}", "the company", "the bank", "--steps", "1"], 2, "steps"),
    ("reconstruct an empty sentence", ["reconstruct", "{T}", ""], 2, "empty"),
    ("ppc zero draws", ["ppc", "{R}", "--num-samples", "0"], 2, "positive integer"),
    ("export zero draws", ["export", "{R}", "--num-samples", "0"], 2, "positive integer"),
    ("export format unknown", ["export", "{R}", "--format", "hdf9"], 2, "invalid choice"),
    ("compare one run", ["compare", "{R}", "--out", "{N}"], 2, "at least two"),
    ("compare a run with itself", ["compare", "{R}", "{R}", "--out", "{N}"], 2, "given twice"),
    ("compare across test sets", ["compare", "{R}", "{T}", "--out", "{N}"], 2, "same test set"),
    ("gmm csv missing", ["train", "gmm", "--data-file", "{D}/none.csv", "--out", "{N}"], 2, "no data file"),
    ("gmm csv underscores", ["train", "gmm", "--data-file", "{D}/underscore.csv", "--out", "{N}"], 2,
     "'1_000' is not a number"),
    ("gmm csv not utf-8", ["train", "gmm", "--data-file", "{D}/latin1.csv", "--out", "{N}"], 2, "UTF-8"),
    ("gmm csv text column", ["train", "gmm", "--data-file", "{D}/words.csv", "--out", "{N}"], 2, "not a number"),
    ("gmm csv empty", ["train", "gmm", "--data-file", "{D}/empty.txt", "--out", "{N}"], 2, "empty"),
    ("gmm plot columns unknown", ["train", "gmm", "--data-file", "{D}/table.csv", "--plot-columns", "a,zz",
                                  "--out", "{N}"], 2, "plot-columns"),
    ("gmm zero components", ["train", "gmm", "--data-file", "{D}/table.csv", "--components", "0", "--out", "{N}"],
     2, "components"),
    ("gmm more components than rows", ["train", "gmm", "--data-file", "{D}/table.csv", "--components", "80",
                                       "--out", "{N}"], 2, "fewer than"),
    ("gmm every restart degenerate", ["train", "gmm", "--data-file", "{D}/three_points.csv", "--components", "3",
                                      "--reg-covar", "0", "--restarts", "2", "--out", "{N}"], 2, "degenerate|collapsed"),
    ("gmm zero restarts", ["train", "gmm", "--data-file", "{D}/table.csv", "--restarts", "0", "--out", "{N}"], 2,
     "restarts"),
    ("gmm into a run folder", ["train", "gmm", "--data-file", "{D}/table.csv", "--out", "{R}"], 2, "not empty"),
    ("select held-out fraction", ["select", "gmm", "--data-file", "{D}/table.csv", "--heldout", "1.5", "--out",
                                  "{N}"], 2, "heldout"),
    ("select range", ["select", "gmm", "--data-file", "{D}/table.csv", "--components", "3..1", "--out", "{N}"], 2,
     "positive integers"),
    ("unknown command", ["frobnicate"], 2, ""),
    ("evaluate on a missing GPU", ["evaluate", "{R}", "--device", "cuda", "--particles", "2"], 2, "no CUDA device"),
    ("evaluate on a device with a typo", ["evaluate", "{R}", "--device", "cuda:abc"], 2, "unknown device"),
    ("sample on an unknown device", ["sample", "{T}", "--device", "tpu"], 2, "device"),
    ("ppc negative points", ["ppc", "{R}", "--num-points", "-5"], 2, "at least 0"),
    ("compare negative points", ["compare", "{R}", "{D}/bern", "--num-points", "-3", "--out", "{N}"], 2,
     "at least 0"),
    ("export zero particles", ["export", "{R}", "--particles", "0"], 2, "--particles must be a positive"),
    ("gradients batch 0", ["gradients", "{D}/bern", "--batch-size", "0", "--draws", "2"], 2, "--batch-size"),
    ("gap learning rate 0", ["evaluate", "{R}", "--amortization-gap", "--gap-lr", "0"], 2, "--gap-lr"),
    ("gap points negative", ["evaluate", "{R}", "--amortization-gap", "--gap-points", "-1"], 2, "--gap-points"),
    ("gap steps 0", ["evaluate", "{R}", "--amortization-gap", "--steps", "0"], 2, "--steps"),
    ("resume a mixture fit", ["train", "vae", "--resume", "--out", "{D}/gmm"], 2, "its own fitting method"),
    ("evaluate a mixture fit", ["evaluate", "{D}/gmm"], 2, "named data set"),
    ("broken vocabulary", ["sample", "{D}/text_broken_vocab"], 2, "not a vocabulary file"),
    ("hidden sizes with an empty item", ["train", "vae", *TINY, "--hidden", "16,,16", "--out", "{N}"], 2,
     "comma-separated integers"),
    ("negative pretraining", ["train", "vae", *TINY, "--pretrain-steps", "-1", "--out", "{N}"], 2, "0 or more"),
    ("annealing start below 0", ["train", "vae", *TINY, "--kl-anneal", "linear", "--anneal-start", "-1",
                                 "--out", "{N}"], 2, r"in \(0, 1\]"),
    ("evaluation particles beyond any budget", ["train", "vae", *TINY, "--eval-particles", "1000000000000",
                                                "--out", "{N}"], 2, "at most 10000000"),
    ("evaluate with particles beyond any budget", ["evaluate", "{R}", "--particles", "1000000000000"], 2,
     "at most 10000000"),
    ("gmm empty column name", ["train", "gmm", "--data-file", "{D}/table.csv", "--columns", "a,,b", "--out",
                               "{N}"], 2, "column names separated by commas"),
]


@pytest.fixture(scope="module")
def bad_files(runs):
    (runs / "latin1.txt").write_bytes("le caf\xe9 est ferm\xe9\n".encode("latin-1"))
    (runs / "latin1.csv").write_bytes("a,b\n1,caf\xe9\n".encode("latin-1"))
    (runs / "empty.txt").write_text("")
    (runs / "underscore.csv").write_text("a,b\n1_000,2\n3,4\n5,6\n")
    (runs / "words.csv").write_text("a,b\n1,x\n2,y\n")
    (runs / "three_points.csv").write_text("a,b\n" + "0,0\n" * 5 + "1,1\n" * 5 + "2,0\n" * 5)
    (runs / "bom.csv").write_bytes("\ufeffa,b\n1,2\n3,5\n4,1\n7,7\n2,9\n".encode("utf-8"))
    np.save(runs / "vectors.npy", np.random.default_rng(0).random((50, 6)).astype(np.float32))
    if not (runs / "gmm").exists():
        assert main(["train", "gmm", "--data-file", str(runs / "table.csv"), "--components", "2", "--restarts", "1",
                     "--out", str(runs / "gmm")]) == 0
    if not (runs / "text_broken_vocab").exists():
        shutil.copytree(runs / "text", runs / "text_broken_vocab")
        (runs / "text_broken_vocab" / "vocab.json").write_text('{"wörds": 1')
    if not (runs / "bern").exists():
        assert main(["train", "bernvae", "--estimator", "st", "--epochs", "1", "--no-progress", "--no-figures",
                     "--eval-particles", "2", "--latent-dim", "4", "--hidden", "8", "--out", str(runs / "bern")]) == 0
    return runs


@pytest.mark.parametrize("name, argv, status, phrase", BAD_COMMANDS, ids=[c[0] for c in BAD_COMMANDS])
def test_bad_command(name, argv, status, phrase, bad_files, tmp_path, capsys):
    root = bad_files
    before = {run: _digest(root / run) for run in ("vae", "text")}
    argv = [a.format(R=root / "vae", T=root / "text", D=root, N=tmp_path / "new") for a in argv]
    try:
        code, _, err = _run(argv, capsys)
    except SystemExit as e:  # argparse's own usage errors: the usage, then "pyro-lvm ...: error: ..."
        code, err = e.code, capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("pyro-lvm") and "error:" in line]
    assert lines, err
    if phrase:
        import re

        assert re.search(phrase, lines[-1]), lines[-1]
    for run in ("vae", "text"):  # no case touches an existing run
        assert _digest(root / run) == before[run], f"{name} changed {run}"
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


# -------------------------------------------------------------- damaged files
def _copy_run(runs, tmp_path, name="vae"):
    dst = tmp_path / name
    shutil.copytree(runs / name, dst)
    return dst


@pytest.mark.parametrize("damage, phrase", [
    ("truncate", "not a readable checkpoint"),
    ("empty", "not a readable checkpoint"),
    ("random bytes", "not a readable checkpoint.*not a zip archive"),
    ("malicious", "refused.*run code"),
    ("other model", "does not hold the vae"),
    ("missing", "no checkpoint"),
])
def test_damaged_checkpoints_are_refused_clearly(damage, phrase, runs, tmp_path, capsys):
    run = _copy_run(runs, tmp_path)
    ckpt = run / "checkpoint.pt"
    marker = tmp_path / "PWNED"
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:500])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "random bytes":
        ckpt.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "malicious":
        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))
        torch.save({"format": 1, "model": Evil()}, ckpt)
    elif damage == "other model":
        from pyro_lvm.checkpoint import save_checkpoint
        from pyro_lvm.models import PPCA

        save_checkpoint(ckpt, {"model": PPCA(input_dim=784, latent_dim=2).state_dict()})
    else:
        ckpt.unlink()
    code, _, err = _run(["evaluate", str(run), "--particles", "2", "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err
    import re

    assert re.search(phrase, err), err
    assert "weights_only=False" not in err and "weights_only" not in err  # never advise an unsafe load
    assert not marker.exists()


def test_damaged_gzip_data_file_is_named(runs, tmp_path, capsys, data_dir):
    data = tmp_path / "data" / "binarized_mnist"
    data.mkdir(parents=True)
    for split in ("train", "valid"):
        shutil.copy(data_dir / "binarized_mnist" / f"binarized_mnist_{split}.amat.gz", data)
    good = (data_dir / "binarized_mnist" / "binarized_mnist_test.amat.gz").read_bytes()
    (data / "binarized_mnist_test.amat.gz").write_bytes(good[: len(good) // 2])
    code, _, err = _run(["train", "vae", *TINY, "--dataset", "binarized_mnist", "--data-dir",
                         str(tmp_path / "data"), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "binarized_mnist_test.amat.gz is a damaged gzip file" in err
    bad = bytearray(gzip.compress(b"0 1 0\n" * 10))
    bad[-8] ^= 0xFF  # a wrong CRC
    (data / "binarized_mnist_test.amat.gz").write_bytes(bytes(bad))
    code, _, err = _run(["train", "vae", *TINY, "--dataset", "binarized_mnist", "--data-dir",
                         str(tmp_path / "data"), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "damaged gzip" in err and "Traceback" not in err


def test_corrupted_config_is_refused(runs, tmp_path, capsys):
    run = _copy_run(runs, tmp_path)
    (run / "config.json").write_text("{not json")
    code, _, err = _run(["evaluate", str(run), "--particles", "2"], capsys)
    assert code == 2 and "unreadable JSON" in err


# ------------------------------------------------------------- the run folder
def test_overwrite_replaces_the_run_and_keeps_other_files(runs, tmp_path, capsys):
    run = _copy_run(runs, tmp_path)
    (run / "my_notes.txt").write_text("mine")
    (run / "eval.json").write_text("{}")
    code, _, _ = _run(["train", "ppca", "--epochs", "1", "--no-progress", "--no-figures", "--eval-particles", "2",
                       "--latent-dim", "2", "--out", str(run), "--overwrite"], capsys)
    assert code == 0
    assert json.loads((run / "config.json").read_text())["model"] == "ppca"
    assert not (run / "eval.json").exists()  # the old run's evaluation is gone with it
    assert (run / "my_notes.txt").read_text() == "mine"
    assert main(["evaluate", str(run), "--particles", "2", "--no-progress"]) == 0  # consistent files


def test_a_planted_symlink_at_a_temporary_name_is_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json.tmp", "metrics.json.tmp", "history.tmp", "eval.json.tmp"):
        (run / name).symlink_to(outside)  # the old fixed temporary names
    write_json(run / "config.json", {"a": 1})
    write_json(run / "metrics.json", {"b": 2})
    assert outside.read_text() == "precious"
    (run / "link.json").symlink_to(outside)
    write_json(run / "link.json", {"c": 3})  # a symlink at the target is replaced, not followed
    assert outside.read_text() == "precious" and json.loads((run / "link.json").read_text()) == {"c": 3}


def test_a_killed_write_leaves_the_old_file_and_a_removable_temporary(tmp_path):
    target = tmp_path / "f.json"
    write_json(target, {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write('{"new": ')
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"old": True}
    (tmp_path / ".f.json.abc.partial").write_text("left by kill -9")
    assert remove_partial_files(tmp_path) == [".f.json.abc.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_claiming_a_folder_refuses_without_writing(tmp_path):
    (tmp_path / "x").write_text("user data")
    with pytest.raises(ValueError, match="not empty"):
        claim_output_folder(tmp_path, ["*.json"])
    assert (tmp_path / "x").read_text() == "user data"


# ------------------------------------------------------------------ resuming
def test_resume_applies_and_records_the_learning_rate_it_is_given(runs, tmp_path, capsys):
    run = _copy_run(runs, tmp_path)
    code, out, _ = _run(["train", "vae", "--resume", "--epochs", "2", "--lr", "1e-4", "--eval-particles", "3",
                         "--no-progress", "--no-figures", "--out", str(run)], capsys)
    assert code == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    events = [r for r in history if r.get("event") == "resume"]
    assert events and events[0]["resume"] == {"epochs": [1, 2], "lr": [0.001, 0.0001], "eval_particles": [2, 3]}
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["lr"] == 1e-4 and config["eval_particles"] == 3
    assert json.loads(out)["nll_particles"] == 3
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["optimizer"]["param_groups"][0]["lr"] == 1e-4


def test_resume_after_everything_was_trained_finishes_the_evaluation(runs, tmp_path, capsys):
    run = _copy_run(runs, tmp_path)
    (run / "metrics.json").unlink()  # killed during evaluation
    code, out, _ = _run(["train", "vae", "--resume", "--no-progress", "--no-figures", "--out", str(run)], capsys)
    assert code == 0 and json.loads(out)["train_steps"] == 50 and (run / "metrics.json").is_file()


def test_a_text_run_reads_its_own_vocabulary_and_notices_a_changed_data_file(runs, tmp_path, capsys):
    text = runs / "text.txt"
    run = _copy_run(runs, tmp_path, "text")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    try:  # from another working directory, the run is still readable
        os.chdir(elsewhere)
        assert main(["evaluate", str(run), "--particles", "2", "--no-progress"]) == 0
    finally:
        os.chdir(cwd)
    capsys.readouterr()
    original = text.read_text()
    try:
        text.write_text(original + "a brand new sentence with new words\n")
        code, _, err = _run(["evaluate", str(run), "--particles", "2"], capsys)
        assert code == 2 and "changed since the run" in err
    finally:
        text.write_text(original)


def test_reinforce_with_a_batch_that_does_not_divide_the_data_and_exact_resume(tmp_path):
    x = torch.bernoulli(torch.full((70, 12), 0.3), generator=torch.Generator().manual_seed(0))

    def trainer(run_dir, epochs):
        pyro.set_rng_seed(0)  # the same initial weights for every copy
        model = BernVAE(input_dim=12, latent_dim=4, hidden=(16,), estimator="reinforce")
        return Trainer(model, TraceGraphELBO(), x, config=TrainConfig(epochs=epochs, batch_size=32, progress=False),
                       run_dir=run_dir)

    # 3 batches an epoch, the last of 6 points; the param store cleared before resuming
    straight, resumed = straight_and_resumed(trainer, tmp_path, 3, between=pyro.clear_param_store)
    assert_same_parameters(straight, resumed)


# ------------------------------------------------------------------ divergence
class _Explodes(ELBO):
    def terms(self, model, guide, *args, step=None, **kwargs):
        terms = super().terms(model, guide, *args, step=step, **kwargs)
        if step is None and self.step >= self.bad_step:
            nan = terms.surrogate * float("nan")
            return type(terms)(nan.detach(), nan)
        return terms


@pytest.mark.parametrize("bad_step, phrase", [(0, "No checkpoint was written.*first epoch"),
                                              (6, "last good checkpoint, after epoch 1, is intact.*--resume")])
def test_divergence_message_names_only_a_checkpoint_that_exists(bad_step, phrase, tmp_path):
    objective = _Explodes()
    objective.bad_step = bad_step
    x = torch.bernoulli(torch.full((20, 6), 0.5))
    t = Trainer(VAE(input_dim=6, latent_dim=2, hidden=(4,)), objective, x,
                config=TrainConfig(epochs=3, batch_size=5, progress=False), run_dir=tmp_path)
    with pytest.raises(TrainingDivergedError, match=phrase):
        t.fit()
    assert (tmp_path / "checkpoint.pt").is_file() == (bad_step > 4)


def test_divergence_from_the_command_line_exits_1_with_one_line(tmp_path, capsys):
    code, _, err = _run(["train", "vae", "--epochs", "2", "--lr", "1e12", "--no-progress", "--no-figures",
                         "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and "non-finite" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_perplexity_of_a_diverged_sentence_model_is_inf_not_a_crash():
    from pyro_lvm.models import TextVAE

    m = TextVAE(vocab_size=9, embed_dim=4, hidden_dim=8, encoder_hidden_dim=8, latent_dim=2)
    test = torch.tensor([[4, 5, 3], [6, 3, 0]])
    assert m.extra_metrics(test, test, {"test_nll": 1e9})["test_ppl"] == float("inf")


# ------------------------------------------------------------ errors, no tracebacks
@pytest.mark.parametrize("error, status, phrase", [
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"), 1, "out of memory"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: can't allocate memory"), 1,
     "out of memory"),
    (MemoryError(), 1, "out of memory"),
    (TrainingDivergedError("non-finite loss"), 1, "non-finite"),
    (PermissionError(13, "Permission denied", "/x/run"), 2, "Permission denied: /x/run"),
    (ValueError("bad value\nTrace Shapes: ..."), 2, "^bad value$"),
    (ZeroDivisionError("division by zero"), 1, "internal error.*--debug"),
])
def test_every_error_becomes_one_line(error, status, phrase):
    import re

    code, message = describe_error(error)
    assert code == status and "\n" not in message and re.search(phrase, message), message


def test_debug_shows_the_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pyro_lvm", "evaluate", str(tmp_path / "none"), "--debug"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" in done.stderr
    done = subprocess.run([sys.executable, "-m", "pyro_lvm", "evaluate", str(tmp_path / "none")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr


# ------------------------------------------------------------- the Python API
@pytest.mark.parametrize("bad, phrase", [
    (lambda x: x * 0.5, "binary"),
    (lambda x: x[0], "shape"),
    (lambda x: x[:0], "empty"),
    (lambda x: torch.full_like(x, float("nan")), "NaN"),
    (lambda x: x.numpy(), "torch.Tensor"),
])
def test_public_functions_refuse_bad_data(bad, phrase):
    from pyro_lvm.evaluation import log_marginal_likelihood

    vae = VAE(input_dim=6, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    for call in (lambda d: log_marginal_likelihood(vae.model, vae.guide, d, num_particles=3),
                 lambda d: vae.model(d), lambda d: vae.guide(d)):
        with pytest.raises((ValueError, TypeError), match=phrase):
            call(bad(x))


@pytest.mark.parametrize("particles", [2.5, 0, -1, True])
def test_a_fractional_or_bad_number_of_particles_is_refused(particles):
    from pyro_lvm.evaluation import log_marginal_likelihood
    from pyro_lvm.objectives import IWAE

    vae = VAE(input_dim=6, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    with pytest.raises(ValueError, match="positive integer"):
        log_marginal_likelihood(vae.model, vae.guide, x, num_particles=particles)
    if particles is not True:
        with pytest.raises(ValueError, match="num_particles"):
            IWAE(num_particles=particles)


def test_checkpoint_errors_are_value_errors_with_the_path(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_resume_after_kill_9_is_bit_identical(tmp_path):
    import signal
    import time

    argv = [sys.executable, "-m", "pyro_lvm", "train", "vae", "--epochs", "4", "--latent-dim", "4", "--hidden", "64",
            "--no-progress", "--no-figures", "--eval-particles", "2", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = subprocess.run(argv + ["--out", str(tmp_path / "straight")], env=env, capture_output=True)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen(argv + ["--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = run / "history.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (history.is_file() and history.read_text().strip()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # after the first checkpoint, in the middle of the next epoch
    proc.wait()
    epochs_done = load_checkpoint(run / "checkpoint.pt")["epoch"]
    assert 1 <= epochs_done < 4, "the kill came too late to test anything"
    resumed = subprocess.run(argv[:5] + ["--resume", "--no-progress", "--no-figures", "--out", str(run)], env=env,
                             capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt")
    assert a["step"] == b["step"] == 200
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert not [p for p in run.iterdir() if p.name.endswith(".partial")]


def test_a_csv_with_a_byte_order_mark_and_a_single_component(bad_files, tmp_path, capsys):
    code, out, err = _run(["train", "gmm", "--data-file", str(bad_files / "bom.csv"), "--components", "1",
                           "--columns", "a,b", "--out", str(tmp_path / "g")], capsys)
    assert code == 0, err
    assert json.loads(out)["columns"] == ["a", "b"]


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    import pyro_lvm.files as files

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", denied)  # as a read-only folder answers (root ignores modes)
    code, _, err = _run(["train", "vae", *TINY, "--out", str(tmp_path / "ro")], capsys)
    assert code == 2 and "cannot write into" in err and "Permission denied" in err


def test_resume_accepts_the_runs_own_tuple_options():
    """``--hidden 32`` parses to (32,) and config.json holds [32]: the same option, not a change."""
    from pyro_lvm.runs import _resume_settings

    saved = {"model": "vae", "dataset": "d", "objective": "elbo", "model_config": {"hidden": [32, 16]},
             "train": {"batch_size": 10, "seed": 0, "epochs": 1, "lr": 1e-3, "clip_norm": None},
             "objective_options": {}, "eval_particles": 5}
    assert _resume_settings(saved, {"model_options": {"hidden": (32, 16)}, "epochs": 2}) == {"epochs": [1, 2]}
    with pytest.raises(ValueError, match=r"hidden \(32,\)"):
        _resume_settings(saved, {"model_options": {"hidden": (32,)}})
