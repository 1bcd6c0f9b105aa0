"""Discrete-latent VAEs: exact answers on a one-latent model, bounds, temperature, CLI."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_lvm.cli import main
from pyro_lvm.evaluation import elbo_split, log_marginal_likelihood
from pyro_lvm.distributions import (
    BernoulliStraightThrough,
    HardRelaxedBernoulliStraightThrough,
    HardRelaxedOneHotCategoricalStraightThrough,
    RelaxedBernoulliCategoricalKL,
    RelaxedOneHotCategoricalCategoricalKL,
)
from pyro_lvm.models import BernVAE, CatVAE
from pyro_lvm.models.discrete_vae import ESTIMATOR_OBJECTIVES, RELAXED_KL
from pyro_lvm.objectives import OBJECTIVES, InvalidObjectiveError
from pyro_lvm.train import TrainConfig, Trainer


def _binary(n, d=12, seed=0):
    return torch.bernoulli(torch.full((n, d), 0.3), generator=torch.Generator().manual_seed(seed))


def one_latent_model(estimator="enum"):
    torch.manual_seed(0)
    return CatVAE(input_dim=12, num_latents=1, num_classes=5, hidden=(16,), estimator=estimator)


def exact_log_marginal(m, x):
    """log p(x) = log sum_k p(z=k) p(x | z=k) for one categorical latent."""
    K = m.config.num_classes
    codes = torch.eye(K)
    log_lik = torch.stack([m.decode(codes[k].expand(len(x), K)).log_prob(x) for k in range(K)], -1)
    return torch.logsumexp(log_lik - math.log(K), -1)


def test_importance_sampling_and_hard_elbo_against_exact_log_marginal():
    m = one_latent_model()
    x = _binary(20)
    m.eval()
    with torch.no_grad():
        exact = exact_log_marginal(m, x)
        est = log_marginal_likelihood(m.model, m.guide, x, num_particles=3000)
        split = elbo_split(m.model, m.guide, x)
    assert (est - exact).abs().max() < 0.02
    assert split["neg_elbo"] >= -exact.mean().item() - 1e-4  # hard-sample ELBO is a lower bound


def test_enum_objective_is_the_exact_elbo():
    m = one_latent_model()
    x = _binary(8)
    q = torch.softmax(m.encoder_logits(x), -1)  # (B, K)
    K = m.config.num_classes
    codes = torch.eye(K)
    log_joint = torch.stack([m.decode(codes[k].expand(len(x), K)).log_prob(x) for k in range(K)], -1) - math.log(K)
    exact_elbo = (q * (log_joint - q.log())).sum()
    loss = OBJECTIVES.get("enum")().terms(m.model, m.guide, x).loss
    assert loss.item() == pytest.approx(-exact_elbo.item(), rel=1e-5)


@pytest.mark.parametrize("cls", [BernVAE, CatVAE])
@pytest.mark.parametrize("relaxed_kl", RELAXED_KL)
@pytest.mark.parametrize("estimator", sorted(ESTIMATOR_OBJECTIVES))
def test_each_estimator_builds_its_own_guide_site(cls, estimator, relaxed_kl):
    """The guide's site ``z`` in training: the exact posterior, marked for what scores it, or the
    estimator's own straight-through or relaxed distribution."""
    if cls is BernVAE and estimator == "enum":
        pytest.skip("BernVAE refuses enum")
    m = cls(input_dim=12, hidden=(16,), estimator=estimator, relaxed_kl=relaxed_kl,
            **({"latent_dim": 3} if cls is BernVAE else {"num_latents": 1, "num_classes": 4}))
    site = pyro.poutine.trace(m.guide).get_trace(_binary(5)).nodes["z"]
    base = site["fn"].base_dist if isinstance(site["fn"], dist.Independent) else site["fn"]
    expected = {
        "vimco": (dist.Bernoulli, dist.OneHotCategorical),
        "reinforce": (dist.Bernoulli, dist.OneHotCategorical),
        "enum": (None, dist.OneHotCategorical),
        "st": (BernoulliStraightThrough, dist.OneHotCategoricalStraightThrough),
        "st-gumbel": (HardRelaxedBernoulliStraightThrough, HardRelaxedOneHotCategoricalStraightThrough),
        "gumbel": ((RelaxedBernoulliCategoricalKL, dist.RelaxedBernoulli),
                   (RelaxedOneHotCategoricalCategoricalKL, dist.RelaxedOneHotCategorical)),
    }[estimator][cls is CatVAE]
    if estimator == "gumbel":
        expected = expected[RELAXED_KL.index(relaxed_kl)]
    assert type(base) is expected
    assert ("baseline" in site["infer"]) == (estimator == "reinforce")
    assert (site["infer"].get("enumerate") == "parallel") == (estimator == "enum")


@pytest.mark.parametrize("estimator", ["reinforce", "vimco", "st", "gumbel", "st-gumbel"])
def test_evaluation_uses_hard_samples_whatever_the_estimator(estimator):
    m = CatVAE(input_dim=12, num_latents=3, num_classes=4, hidden=(16,), estimator=estimator)
    x = _binary(5)
    m.eval()
    z = pyro.poutine.trace(m.guide).get_trace(x).nodes["z"]["value"]
    assert set(z.unique().tolist()) <= {0.0, 1.0} and torch.equal(z.sum(-1), torch.ones(5, 3))
    m.train()
    z = pyro.poutine.trace(m.guide).get_trace(x).nodes["z"]["value"]
    if estimator == "gumbel":  # training sees the relaxation
        assert ((z > 0) & (z < 1)).any()


def test_temperature_anneals_during_training():
    m = BernVAE(input_dim=12, latent_dim=4, hidden=(16,), estimator="gumbel", temperature=1.0,
                min_temperature=0.5, anneal_rate=0.05)
    x = _binary(64)
    Trainer(m, OBJECTIVES.get("meanfield")(), x, config=TrainConfig(epochs=2, batch_size=8, progress=False)).fit()
    assert m.temperature.item() == pytest.approx(max(0.5, math.exp(-0.05 * 15)), rel=1e-6)
    m.set_step(10**6)
    assert m.temperature.item() == 0.5


def test_configuration_errors():
    with pytest.raises(ValueError, match="num_latents=1"):
        CatVAE(num_latents=3, estimator="enum")
    with pytest.raises(ValueError, match="catvae"):
        BernVAE(estimator="enum")
    with pytest.raises(ValueError, match="estimator"):
        BernVAE(estimator="magic")
    with pytest.raises(InvalidObjectiveError, match="outside the support.*meanfield"):  # a relaxed sample, no density
        Trainer(BernVAE(input_dim=12, latent_dim=2, estimator="gumbel"), OBJECTIVES.get("elbo")(), _binary(4))


@pytest.mark.parametrize("model, estimator, extra", [
    ("catvae", "gumbel", ["--num-latents", "4", "--num-classes", "5"]),
    ("catvae", "st-gumbel", ["--num-latents", "4", "--num-classes", "5"]),
    ("bernvae", "reinforce", ["--latent-dim", "8"]),
    ("bernvae", "vimco", ["--latent-dim", "8", "--particles", "3"]),
])
def test_cli_trains_discrete_models(model, estimator, extra, tmp_path, capsys):
    code = main(["train", model, "--estimator", estimator, *extra, "--hidden", "64", "--epochs", "1",
                 "--eval-particles", "5", "--out", str(tmp_path / "run"), "--no-progress", "--no-figures"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("test_neg_elbo", "test_nll", "test_kl", "train_steps", "train_seconds"):
        assert math.isfinite(metrics[key]), key
    assert metrics["train_steps"] == 50


@pytest.mark.parametrize("cls,kwargs", [(BernVAE, {"latent_dim": 4}),
                                        (CatVAE, {"num_latents": 3, "num_classes": 4})])
def test_gumbel_categorical_kl_is_the_exact_kl_with_relaxed_reconstruction(cls, kwargs):
    # Jang et al.'s objective: E_{relaxed z}[log p(x|z)] - KL(q(z|x) || p(z)) with the discrete KL
    m = cls(input_dim=12, hidden=(16,), estimator="gumbel", temperature=0.7, **kwargs)
    x = _binary(6)
    pyro.set_rng_seed(3)
    loss = OBJECTIVES.get("meanfield")().terms(m.model, m.guide, x).loss
    pyro.set_rng_seed(3)
    z = pyro.poutine.trace(m.guide).get_trace(x).nodes["z"]["value"]
    assert ((z > 0) & (z < 1)).any()  # relaxed
    with torch.no_grad():
        recon = m.decode(z).log_prob(x).sum()
        kl = torch.distributions.kl_divergence(m.encode(x), m.prior(6)).sum()
    assert loss.item() == pytest.approx(-(recon - kl).item(), rel=1e-5)


def test_cli_gradients_command(tmp_path):
    run = str(tmp_path / "cat")
    assert main(["train", "catvae", "--dataset", "binarized_mnist_small", "--epochs", "1", "--num-latents", "1",
                 "--num-classes", "5", "--hidden", "32", "--estimator", "enum", "--eval-particles", "2",
                 "--no-progress", "--no-figures", "--out", run]) == 0
    assert main(["gradients", run, "--estimators", "reinforce,st,gumbel,vimco", "--draws", "20",
                 "--batch-size", "10"]) == 0
    result = json.loads((tmp_path / "cat" / "gradients.json").read_text())
    rows = result["estimators"]
    assert set(rows) == {"enum", "reinforce", "st", "gumbel", "vimco"}
    assert "relative_bias" in rows["st"] and "relative_bias" not in rows["vimco"]
    assert (tmp_path / "cat" / "gradients.md").read_text().startswith("| estimator")


def test_catvae_category_grid_changes_one_latent_per_row():
    m = CatVAE(input_dim=12, num_latents=3, num_classes=4, hidden=(16,))
    images = m.category_grid(_binary(1)[0])
    assert images.shape == (12, 12)
    base = m._mode(m.encoder_logits(_binary(1)))[0]
    for i in range(3):  # the entry of row i at the base class reproduces the base code's decoding
        k = int(base[i].argmax())
        assert torch.allclose(images[i * 4 + k], m.decode(base.unsqueeze(0)).mean[0])


def test_catvae_offers_its_category_grid_as_an_image_grid():
    from types import SimpleNamespace

    m = CatVAE(input_dim=12, num_latents=3, num_classes=4, hidden=(16,))
    x = _binary(2)
    grids = m.image_grids(SimpleNamespace(test=x))
    images, title, columns = grids["category_grid"]
    assert torch.equal(images, m.category_grid(x[0])) and columns == 4 and "latent i" in title
    assert m.training  # drawn in eval mode, the mode given back
