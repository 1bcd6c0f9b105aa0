"""The Bayesian workflow: predictive checks, ArviZ export, comparison with standard errors, the amortization gap."""

import json

import arviz
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_lvm.cli import main
from pyro_lvm.data import load_dataset
from pyro_lvm.evaluation.amortization import amortization_gap
from pyro_lvm.evaluation.predictive import (
    check_summary,
    extreme_p_values,
    posterior_predictive,
    posterior_predictive_check,
    prior_predictive,
)
from pyro_lvm.export.arviz import from_model, group_names
from pyro_lvm.inference.local import LocalGaussianGuide, fit_local_guide
from pyro_lvm.models import PPCA, SSVAE, VAE
from pyro_lvm.runs_workflow import compare_log_likelihoods

from cases import MODEL_CASES

AMORTIZED = sorted(m for m in MODEL_CASES if not m.startswith("gmm"))


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("binarized_mnist_small")


def _trained_vae(data, steps=600, seed=0):
    pyro.set_rng_seed(seed)
    vae = VAE(input_dim=784, latent_dim=8, hidden=(128,))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 3e-3}), Trace_ELBO())
    for _ in range(steps):
        svi.step(data.train[torch.randint(5000, (100,))], data_size=5000)
    return vae


# ------------------------------------------------------------------ predictive
@pytest.mark.parametrize("model_case", AMORTIZED)
def test_prior_and_posterior_predictive_of_every_amortized_model(model_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(5)
    rep = posterior_predictive(model, x, num_samples=3)
    prior = prior_predictive(model, num_points=5, num_samples=3)
    for draws in (rep, prior):
        assert draws[model.observed_site].shape[:2] == (3, 5)
        for site in model.latent_sites:
            assert draws[site].shape[:2] == (3, 5)
    if model.data_support == "binary":
        assert ((rep["x"] == 0) | (rep["x"] == 1)).all()
    if model.data_support == "tokens":
        assert (rep["x"] < model.input_dim).all()
    assert model.training  # the model's mode is restored
    check = posterior_predictive_check(model, x, num_samples=4)
    for s in check["statistics"].values():
        assert all(0 <= v["p_value"] <= 1 for v in s["summaries"].values())


def test_m2_replicates_a_labelled_row_at_its_label_and_an_unlabelled_one_at_a_guessed_class():
    pyro.set_rng_seed(0)
    m = SSVAE(input_dim=6, num_classes=3, latent_dim=2, hidden=(5,))
    x = torch.bernoulli(torch.full((40, 6), 0.5))
    labels = torch.tensor([2, -1, 0, -1] * 10)
    rep = posterior_predictive(m, m.with_labels(x, labels), num_samples=50)
    assert rep["y"].shape == (50, 40, 3) and rep["x"].shape == (50, 40, 6)
    known = labels >= 0
    assert (rep["y"][:, known].argmax(-1) == labels[known]).all()  # every draw, the row's own label
    guessed = rep["y"][:, ~known].argmax(-1)
    assert len(guessed.unique()) == 3  # drawn from q(y|x), which an untrained classifier spreads
    probs = m.classify_logits(x[~known]).softmax(-1).detach()
    freq = torch.nn.functional.one_hot(guessed, 3).float().mean((0, 1))
    assert torch.allclose(freq, probs.mean(0), atol=0.05)


def test_posterior_predictive_replicates_each_point_from_its_own_posterior():
    m = PPCA(input_dim=2, latent_dim=1, init_noise=0.01)
    with torch.no_grad():
        m.loading.weight.fill_(3.0)
    m.set_exact_guide()
    x = torch.tensor([[3.0, 3.0], [-6.0, -6.0]])
    rep = posterior_predictive(m, x, num_samples=200)["x"]
    assert torch.allclose(rep.mean(0), x, atol=0.05)  # nearly noiseless: replicates sit on their points


def test_a_mixture_has_no_posterior_predictive_from_its_empty_guide():
    make_model, make_data = MODEL_CASES["gmm-full"]
    with pytest.raises(ValueError, match="does not sample.*amortized"):
        posterior_predictive(make_model(), make_data(5), num_samples=2)


def test_predictive_check_flags_a_model_that_misses_the_data_and_passes_one_that_fits(mnist):
    x = mnist.test[:300]
    untrained = VAE(input_dim=784, latent_dim=8, hidden=(128,))  # about half the pixels on
    pyro.set_rng_seed(0)
    bad = posterior_predictive_check(untrained, x, num_samples=20)
    assert bad["statistics"]["mean_intensity"]["summaries"]["mean"]["p_value"] == 1.0
    assert "mean_intensity.mean" in extreme_p_values(bad)
    # a model that fits by construction: PPCA checked against data drawn from itself, exact guide
    pyro.set_rng_seed(0)
    ppca = PPCA(input_dim=5, latent_dim=2, init_noise=0.3)
    ppca.set_exact_guide()
    data = ppca.marginal().sample((300,))
    good = posterior_predictive_check(ppca, data, num_samples=50)
    assert not extreme_p_values(good, level=0.01), check_summary(good)
    json.dumps(check_summary(good))  # the numbers alone are JSON


def test_text_statistics_are_sentence_length_and_unigrams():
    make_model, make_data = MODEL_CASES["textvae"]
    model, x = make_model(), make_data(20)
    check = posterior_predictive_check(model, x, num_samples=5)
    stats = check["statistics"]
    assert set(stats) == {"sentence_length", "unigram"}
    assert torch.equal(stats["sentence_length"]["observed"], (x != 0).sum(-1).double())
    assert stats["unigram"]["observed"].sum().item() == pytest.approx(1.0)
    assert stats["unigram"]["observed"][0] == 0  # padding is no word


# ---------------------------------------------------------------- ArviZ export
@pytest.mark.parametrize("model_case", ["vae-bernoulli", "bernvae-st", "catvae-gumbel", "textvae",
                                        "vqvae-gaussian", "ppca"])
def test_arviz_export_of_the_deep_models(model_case, tmp_path):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(6)
    idata = from_model(model, x, num_samples=3, num_particles=5)
    assert sorted(group_names(idata)) == ["log_likelihood", "observed_data", "posterior",
                                          "posterior_predictive", "prior", "prior_predictive"]
    assert idata.posterior["z"].shape[:3] == (1, 3, 6)
    assert idata.log_likelihood["x"].shape == (1, 3, 6)
    assert idata.log_likelihood["log_marginal"].shape == (6,)
    # every draw's log-likelihood is a log probability of the data point
    assert (idata.log_likelihood["x"].values <= 1e-6).all() or model.data_support == "real"
    path = tmp_path / "idata.nc"
    idata.to_netcdf(str(path))
    back = arviz.from_netcdf(str(path))
    assert sorted(group_names(back)) == sorted(group_names(idata))


def test_export_refuses_a_model_without_latents():
    make_model, make_data = MODEL_CASES["lstmlm"]
    with pytest.raises(ValueError, match="no latent variables"):
        from_model(make_model(), make_data(4), num_samples=2, num_particles=2)


def test_export_of_m2_takes_unlabelled_rows_and_refuses_labelled_ones():
    m = SSVAE(input_dim=6, num_classes=3, latent_dim=2, hidden=(5,))
    x = torch.bernoulli(torch.full((6, 6), 0.5))
    idata = from_model(m, m.with_labels(x, torch.full((6,), -1)), num_samples=3, num_particles=5)
    assert idata.posterior["y"].shape[:3] == (1, 3, 6)
    with pytest.raises(ValueError, match="does not draw 'y' for every row"):
        from_model(m, m.with_labels(x, torch.tensor([2, -1, 0, -1, 1, -1])), num_samples=2, num_particles=2)


# ----------------------------------------------------------------- comparison
def test_paired_comparison_standard_errors_by_hand():
    a = torch.tensor([-10.0, -12.0, -11.0, -9.0])
    b = a - torch.tensor([1.0, 2.0, 3.0, 2.0])  # b is worse by 2 on average
    rows = compare_log_likelihoods({"b": b, "a": a})
    assert [r["model"] for r in rows] == ["a", "b"]
    d = torch.tensor([1.0, 2.0, 3.0, 2.0])
    assert rows[1]["diff_mean"] == pytest.approx(2.0)
    assert rows[1]["diff_se"] == pytest.approx(d.std().item() / 2)
    assert rows[1]["diff_total"] == pytest.approx(8.0)
    assert rows[1]["diff_total_se"] == pytest.approx(2 * d.std().item())  # sqrt(n) sd, as ArviZ's compare
    assert rows[0]["diff_mean"] == 0 and rows[0]["diff_se"] == 0
    with pytest.raises(ValueError, match="same"):
        compare_log_likelihoods({"a": a, "c": a[:3]})


# ------------------------------------------------------------- amortization gap
def test_local_guide_on_ppca_finds_the_exact_posterior_and_no_approximation_gap():
    pyro.set_rng_seed(0)
    m = PPCA(input_dim=4, latent_dim=2, init_noise=0.5)
    with torch.no_grad():
        m.loading.weight.copy_(torch.randn(4, 2))
    x = m.marginal().sample((30,))
    guide = fit_local_guide(m, x, steps=1500, lr=0.1)
    exact = m.exact_posterior(x)
    q = guide.distribution()
    assert torch.allclose(q.mean, exact.mean, atol=1e-4)
    assert torch.allclose(q.covariance_matrix, exact.covariance_matrix.expand_as(q.covariance_matrix), atol=1e-4)
    gaps = amortization_gap(m, x, num_particles=200, local_guide=guide)
    # within Monte Carlo error of 0 (at the exact posterior every estimate is exact: error ~ 0)
    assert abs(gaps["approximation_gap"]) <= 3 * gaps["approximation_gap_se"] + 1e-4
    assert gaps["log_px"] == pytest.approx(m.log_marginal(x).mean().item(), abs=1e-3)
    assert gaps["amortization_gap"] > 0.1  # the untrained encoder is far from the posterior


def test_amortization_gap_of_a_briefly_trained_vae_is_positive(mnist):
    vae = _trained_vae(mnist, steps=300)
    gaps = amortization_gap(vae, mnist.test[:100], steps=300, num_particles=100, elbo_samples=20)
    assert gaps["amortization_gap"] > 3 * gaps["amortization_gap_se"] > 0
    assert gaps["local_elbo"] > gaps["amortized_elbo"]
    assert gaps["log_px"] > gaps["local_elbo"]  # an IS estimate with K=100 above the ELBO of its proposal
    assert gaps["approximation_gap"] == pytest.approx(gaps["log_px"] - gaps["local_elbo"])


def test_local_guides_need_a_gaussian_encoder():
    make_model, make_data = MODEL_CASES["bernvae-st"]
    with pytest.raises(ValueError, match="Gaussian guide.*Bernoulli"):
        LocalGaussianGuide(make_model(), make_data(3))


# ----------------------------------------------------------- the command line
def test_workflow_commands_on_trained_runs(tmp_path, capsys):
    common = ["--epochs", "1", "--no-progress", "--no-figures", "--eval-particles", "5", "--latent-dim", "4",
              "--hidden", "32"]
    elbo, iwae = str(tmp_path / "elbo"), str(tmp_path / "iwae")
    assert main(["train", "vae", *common, "--out", elbo]) == 0
    assert main(["train", "vae", *common, "--objective", "iwae", "--particles", "3", "--out", iwae]) == 0
    capsys.readouterr()

    assert main(["ppc", elbo, "--num-samples", "5", "--num-points", "200"]) == 0
    ppc = json.loads(capsys.readouterr().out)
    assert (tmp_path / "elbo" / "ppc.png").is_file() and (tmp_path / "elbo" / "ppc.json").is_file()
    assert ppc["num_points"] == 200 and "mean_intensity" in ppc["statistics"]

    assert main(["export", elbo, "--format", "arviz", "--num-samples", "4", "--num-points", "50",
                 "--particles", "10", "--no-progress"]) == 0
    exported = json.loads(capsys.readouterr().out)
    idata = arviz.from_netcdf(exported["file"])
    assert sorted(group_names(idata)) == ["log_likelihood", "observed_data", "posterior",
                                          "posterior_predictive", "prior", "prior_predictive"]
    assert idata.posterior["z"].shape == (1, 4, 50, 4)

    out = tmp_path / "compare.json"
    assert main(["compare", elbo, iwae, "--particles", "10", "--out", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "±" in table and "diff/point" in table
    result = json.loads(out.read_text())
    assert {r["run"] for r in result["ranking"]} == {elbo, iwae}
    assert result["ranking"][1]["diff_se"] > 0 and result["num_points"] == 1000
    assert main(["compare", elbo, iwae, "--out", str(out), "--no-progress"]) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err

    assert main(["evaluate", elbo, "--particles", "10", "--amortization-gap", "--steps", "50",
                 "--gap-points", "20", "--no-progress"]) == 0
    evaluated = json.loads((tmp_path / "elbo" / "eval.json").read_text())
    for key in ("log_px", "amortized_elbo", "local_elbo", "approximation_gap", "amortization_gap"):
        assert key in evaluated
    assert evaluated["gap_points"] == 20


def test_compare_refuses_runs_on_different_test_sets(tmp_path, capsys, data_dir):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join((data_dir / "ptb" / "ptb.valid.txt").read_text().splitlines()[:120]))
    common = ["--epochs", "1", "--no-progress", "--no-figures", "--eval-particles", "2"]
    assert main(["train", "vae", *common, "--latent-dim", "2", "--hidden", "8", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "textvae", *common, "--data-file", str(text), "--embed-dim", "4", "--hidden-dim", "8",
                 "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    code = main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c.json")])
    assert code == 2 and "same test set" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
