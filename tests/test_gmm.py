"""Gaussian mixture: exact enumerated objective, EM, SVI, NUTS with ArviZ, CSV input."""

import json
import math
import re

import numpy as np
import pytest
import torch

from pyro_lvm.cli import main
from pyro_lvm.data.tabular import read_csv_table
from pyro_lvm.inference import fit_em
from pyro_lvm.models import GMM
from pyro_lvm.objectives import EnumELBO
from pyro_lvm.runs_gmm import bic, num_parameters


def blobs(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 2, generator=g) * torch.tensor([1.0, 0.3]) + torch.tensor([-3.0, 0.0])
    b = torch.randn(n, 2, generator=g) @ torch.tensor([[0.8, 0.4], [0.0, 0.5]]) + torch.tensor([3.0, 1.0])
    return torch.cat([a, b]).double()


def write_csv(path, x, names=None):
    names = names or [f"c{i}" for i in range(x.shape[1])]
    np.savetxt(path, np.asarray(x), delimiter=",", header=",".join(names), comments="")
    return path


def by_hand_log_likelihood(gmm, x):
    """log sum_k w_k N(x | mu_k, Sigma_k) written out with numpy."""
    w = gmm.weights.detach().double().numpy()
    mu = gmm.locs.detach().double().numpy()
    cov = gmm.covariances().detach().double().numpy()
    x = x.numpy()
    out = []
    for k in range(len(w)):
        diff = x - mu[k]
        sol = np.linalg.solve(cov[k], diff.T).T
        maha = (diff * sol).sum(-1)
        _, logdet = np.linalg.slogdet(cov[k])
        out.append(math.log(w[k]) - 0.5 * (maha + logdet + x.shape[1] * math.log(2 * math.pi)))
    out = np.stack(out, 1)
    m = out.max(1, keepdims=True)
    return (m[:, 0] + np.log(np.exp(out - m).sum(1)))


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_enumerated_objective_is_the_exact_log_likelihood(covariance):
    torch.manual_seed(0)
    gmm = GMM(input_dim=2, components=3, covariance=covariance).double()
    x = blobs(20)
    loss = EnumELBO().terms(gmm.model, gmm.guide, x).loss
    assert loss.item() == pytest.approx(-by_hand_log_likelihood(gmm, x).sum(), rel=1e-10)
    scaled = EnumELBO().terms(gmm.model, gmm.guide, x, data_size=400).loss
    assert scaled.item() == pytest.approx(400 / x.shape[0] * loss.item(), rel=1e-10)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_em_never_decreases_the_log_likelihood(covariance):
    gmm = GMM(input_dim=2, components=4, covariance=covariance).double()
    result = fit_em(gmm, blobs(), restarts=2, tol=1e-9, max_iter=150)
    h = np.array(result.history)
    assert (np.diff(h) > -1e-9).all()
    assert result.loglik_per_point == pytest.approx(gmm.log_likelihood(blobs()).mean().item(), abs=1e-9)


def test_em_matches_scikit_learn_on_iris():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.mixture import GaussianMixture

    x = load_iris().data
    for covariance in ("full", "spherical"):
        ref = GaussianMixture(3, covariance_type=covariance, n_init=10, tol=1e-8, max_iter=2000,
                              random_state=0).fit(x).score(x)
        gmm = GMM(input_dim=4, components=3, covariance=covariance).double()
        ours = fit_em(gmm, torch.tensor(x), restarts=10, tol=1e-8, max_iter=2000).loglik_per_point
        assert ours >= ref - 1e-3, (covariance, ours, ref)
    assert sklearn


def test_degenerate_restarts_are_set_aside():
    x = torch.cat([blobs(100), torch.tensor([[10.0, 10.0]] * 5, dtype=torch.float64)])
    gmm = GMM(input_dim=2, components=3).double()
    result = fit_em(gmm, x, restarts=6)
    assert torch.linalg.eigvalsh(result.covariances).min() > 1e-4 or result.degenerate_restarts == 6


def test_responsibilities_and_map_assignments():
    x = blobs(100)
    gmm = GMM(input_dim=2, components=2).double()
    fit_em(gmm, x, restarts=2)
    resp = gmm.responsibilities(x)
    assert torch.allclose(resp.sum(-1), torch.ones(200, dtype=torch.float64))
    labels = gmm.map_assignments(x)
    assert torch.equal(labels, resp.argmax(-1))
    assert len(set(labels[:100].tolist())) == 1 and labels[0] != labels[150]  # the two blobs


def test_bic_counts_parameters():
    assert num_parameters(3, 2, "full") == 2 + 6 + 9
    assert num_parameters(3, 2, "diag") == 2 + 6 + 6
    assert bic(-100.0, 50, 1, 1, "spherical") == pytest.approx(200 + 2 * math.log(50))


@pytest.mark.parametrize("content, message", [
    ("a,b\n1,x\n2,3\n", "not a number"),
    ("a,b\n1,\n2,3\n", "missing value"),
    ("a,b\n1,2\n1,3\n", "constant"),
    ("a,b\n", "no data rows"),
    ("", "empty"),
])
def test_csv_errors(tmp_path, content, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_csv_table(path)


def test_csv_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("name,a,b\nx,1,2\ny,3,5\n")
    data, names = read_csv_table(path, ["a", "b"])
    assert names == ["a", "b"] and data.tolist() == [[1, 2], [3, 5]]
    with pytest.raises(ValueError, match="no column"):
        read_csv_table(path, ["c"])


def test_cli_em_and_svi_from_csv(tmp_path, capsys):
    csv = write_csv(tmp_path / "blobs.csv", blobs())
    assert main(["train", "gmm", "--data-file", str(csv), "--components", "2", "--covariance", "full",
                 "--method", "em", "--restarts", "5", "--seed", "0", "--out", str(tmp_path / "em")]) == 0
    em = json.loads(capsys.readouterr().out)
    for key in ("train_loglik_per_point", "bic", "components", "method"):
        assert key in em
    assert (tmp_path / "em" / "scatter.png").stat().st_size > 0
    assert (tmp_path / "em" / "params.json").is_file() and (tmp_path / "em" / "assignments.csv").is_file()
    assert main(["train", "gmm", "--data-file", str(csv), "--components", "2", "--method", "svi",
                 "--svi-steps", "50", "--out", str(tmp_path / "svi"), "--no-progress"]) == 0
    svi = json.loads(capsys.readouterr().out)
    assert svi["train_loglik_per_point"] >= em["train_loglik_per_point"] - 1e-2


def test_fitting_methods_come_from_their_registry(tmp_path, monkeypatch, capsys):
    """The command line offers the registered methods, and a method registered anew runs in the
    same pipeline: EM first, then the method, whose log-likelihood the BIC scores."""
    from pyro_lvm import runs_gmm
    from pyro_lvm.registry import Registry

    assert runs_gmm.MIXTURE_FITS.names() == ["em", "nuts", "svi"]
    csv = write_csv(tmp_path / "blobs.csv", blobs())
    with pytest.raises(SystemExit) as usage:
        main(["train", "gmm", "--data-file", str(csv), "--method", "gibbs", "--out", str(tmp_path / "g")])
    assert usage.value.code == 2
    assert re.search(r"invalid choice: 'gibbs' \(choose from '?em'?, '?nuts'?, '?svi'?\)", capsys.readouterr().err)

    fits = Registry("fitting method")
    for name in runs_gmm.MIXTURE_FITS.names():
        fits.register(name)(runs_gmm.MIXTURE_FITS.get(name))
    seen = {}

    @fits.register("halved")
    def halved(model, x, out, **settings):  # EM's fit, its log-likelihood reported halved
        seen.update(settings)
        return runs_gmm.fit_by_em(model, x, out)[0] / 2, {"halved": True}

    monkeypatch.setattr(runs_gmm, "MIXTURE_FITS", fits)
    em = runs_gmm.train_gmm_run(csv, tmp_path / "em", components=2, seed=0)
    halved_run = runs_gmm.train_gmm_run(csv, tmp_path / "halved", components=2, method="halved", seed=0)
    assert halved_run["halved"] is True and seen["seed"] == 0 and seen["svi_steps"] == 300
    assert halved_run["train_loglik_per_point"] == pytest.approx(em["train_loglik_per_point"] / 2)
    n = blobs().shape[0]
    assert halved_run["bic"] == pytest.approx(bic(em["train_loglik_per_point"] * n / 2, n, 2, 2, "full"))
    with pytest.raises(ValueError, match=r"method must be one of \('em', 'halved', 'nuts', 'svi'\)"):
        runs_gmm.train_gmm_run(csv, tmp_path / "bad", components=2, method="gibbs")


def test_cli_rejects_too_few_rows(tmp_path, capsys):
    csv = write_csv(tmp_path / "small.csv", blobs()[:2])
    assert main(["train", "gmm", "--data-file", str(csv), "--components", "3", "--out", str(tmp_path / "r")]) == 2
    assert "fewer than the 3 components" in capsys.readouterr().err


def test_cli_select(tmp_path, capsys):
    csv = write_csv(tmp_path / "blobs.csv", blobs())
    assert main(["select", "gmm", "--data-file", str(csv), "--components", "1..4", "--out", str(tmp_path / "s")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["best_by_bic"] == 2
    assert (tmp_path / "s" / "selection.png").stat().st_size > 0


def test_nuts_two_component_1d_with_arviz(tmp_path, capsys):
    import arviz

    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(60, 1, generator=g) - 2.5, torch.randn(40, 1, generator=g) * 0.7 + 2.0])
    csv = write_csv(tmp_path / "one_d.csv", x.double(), ["value"])
    assert main(["train", "gmm", "--data-file", str(csv), "--components", "2", "--method", "nuts",
                 "--num-samples", "200", "--warmup", "150", "--num-chains", "2", "--out",
                 str(tmp_path / "nuts"), "--no-progress"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    idata = arviz.from_netcdf(tmp_path / "nuts" / "posterior.nc")
    for group in ("posterior", "log_likelihood", "observed_data"):
        assert hasattr(idata, group)
    assert idata.log_likelihood["x"].shape == (2, 200, 100)
    assert math.isfinite(metrics["elpd_loo"])
    assert metrics["r_hat_max"] < 1.05
