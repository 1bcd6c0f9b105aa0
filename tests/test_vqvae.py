"""VQ-VAE: quantization, gradients, EMA codebook, KL, code statistics, the k-means baseline, CLI."""

import json
import math

import pyro
import pytest
import torch

from pyro_lvm.cli import main
from pyro_lvm.evaluation import elbo_split
from pyro_lvm.inference import kmeans
from pyro_lvm.models import VQVAE
from pyro_lvm.objectives import ELBO


def _model(**kw):
    torch.manual_seed(0)
    return VQVAE(input_dim=10, hidden=(16,), num_latents=3, code_dim=2, codebook_size=5, **kw)


def _data(n=20):
    return torch.rand(n, 10, generator=torch.Generator().manual_seed(0))


def test_quantizes_to_the_nearest_code():
    m = _model()
    z_e = m.encoder_output(_data())
    d = torch.cdist(z_e.reshape(-1, 2), m.codebook)
    assert torch.equal(m.nearest(z_e).reshape(-1), d.argmin(-1))
    assert torch.allclose(m.encode(_data()).mean, m.codebook[m.codes(_data())])


def test_straight_through_and_codebook_gradients():
    m = _model()
    x = _data()
    ELBO().terms(m.model, m.guide, x).surrogate.backward()
    assert m.encoder[0].weight.grad.abs().sum() > 0  # decoder -> encoder through the straight-through path
    assert m.codebook.grad.abs().sum() > 0  # from the codebook term only
    # without the codebook and commitment terms (eval mode) the codebook gets no gradient
    m.zero_grad()
    m.eval()
    ELBO().terms(m.model, m.guide, x).surrogate.backward()
    assert m.codebook.grad is None or m.codebook.grad.abs().sum() == 0


def test_training_loss_is_reconstruction_plus_vq_terms():
    m = _model(commitment=0.5)
    x = _data()
    m.initialized.fill_(True)  # keep the codebook as it is
    loss = ELBO().terms(m.model, m.guide, x).loss
    with torch.no_grad():
        z_e = m.encoder_output(x)
        z_q = m.codebook[m.nearest(z_e)]
        recon = m.decode(z_q).log_prob(x).sum()
        sq = ((z_e - z_q) ** 2).sum()
    expected = -(recon - x.shape[0] * 3 * math.log(5)) + 1.5 * sq
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_kl_is_num_latents_log_codebook_size_in_evaluation():
    m = _model().eval()
    split = elbo_split(m.model, m.guide, _data())
    assert split["kl"] == pytest.approx(3 * math.log(5), rel=1e-6)


def test_ema_update_follows_the_formula():
    m = _model(ema_decay=0.8)
    x = _data(6)
    m.initialized.fill_(True)
    count, total = m.ema_count.clone(), m.ema_sum.clone()
    z_e = m.encoder_output(x).detach()
    idx = m.nearest(z_e)
    ELBO().terms(m.model, m.guide, x)
    n_k = torch.bincount(idx.reshape(-1), minlength=5).float()
    s_k = torch.zeros(5, 2).index_add_(0, idx.reshape(-1), z_e.reshape(-1, 2))
    new_count = 0.8 * count + 0.2 * n_k
    assert torch.allclose(m.ema_count, new_count)
    assert torch.allclose(m.ema_sum, 0.8 * total + 0.2 * s_k)
    n = new_count.sum()
    smoothed = (new_count + 1e-5) / (n + 5e-5) * n
    assert torch.allclose(m.codebook, m.ema_sum / smoothed.unsqueeze(-1))
    assert not m.codebook.requires_grad


def test_codebook_starts_from_encoder_outputs():
    m = _model()
    x = _data()
    pyro.set_rng_seed(0)
    ELBO().terms(m.model, m.guide, x)
    assert bool(m.initialized)
    z_e = m.encoder_output(x).reshape(-1, 2)
    gaps = ((m.codebook.detach()[:, None] - z_e.detach()[None]) ** 2).sum(-1)
    assert gaps.min(-1).values.max() < 1e-12  # every code is an encoder output


def test_a_loaded_state_says_whether_the_codebook_is_initialised():
    """The step remembers on the host that the codebook is initialised (no read of the buffer per
    step); loading a state forgets it: an uninitialised state is initialised again from data."""
    m, fresh = _model(), _model()
    m.train()
    m.guide(_data())
    started = m.codebook.clone()
    assert bool(m.initialized) and not torch.equal(started, fresh.codebook)
    m.guide(_data() * 2)  # initialised already: the codebook stays (no EMA in this configuration)
    assert torch.equal(m.codebook, started)
    m.load_state_dict(fresh.state_dict())
    assert not bool(m.initialized)
    m.guide(_data())
    assert bool(m.initialized) and not torch.equal(m.codebook, fresh.codebook)


def test_code_statistics():
    m = _model()
    codes = torch.tensor([[0, 0, 1], [0, 1, 1]])
    m.codes = lambda x: codes[: x.shape[0]]
    stats = m.code_statistics(torch.zeros(2, 10))
    assert stats["codebook_usage"] == pytest.approx(2 / 5)
    assert stats["code_perplexity"] == pytest.approx(2.0)  # codes 0 and 1, three times each
    assert m.encoder_mutual_information(torch.zeros(2, 10)) == pytest.approx(math.log(2))


def test_kmeans_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.cluster")
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100, 3, generator=g) + 4 * torch.randn(1, 3, generator=g) for _ in range(5)])
    ours = kmeans(x, 5, generator=torch.Generator().manual_seed(1), restarts=10)
    ref = sklearn.KMeans(5, n_init=10, random_state=0).fit(x.numpy())
    assert ours.inertia <= ref.inertia_ / x.shape[0] * 1.01
    with pytest.raises(ValueError, match="k <= N"):
        kmeans(x[:3], 5)


def test_bad_options_say_what_was_expected():
    with pytest.raises(ValueError, match="ema_decay"):
        VQVAE(ema_decay=1.0)
    with pytest.raises(ValueError, match="codebook_size"):
        VQVAE(codebook_size=1)


def test_cli_vqvae_writes_code_metrics(tmp_path):
    run = str(tmp_path / "vq")
    assert main(["train", "vqvae", "--dataset", "binarized_mnist_small", "--epochs", "1",
                 "--codebook-size", "16", "--hidden", "64", "--eval-particles", "2", "--no-progress",
                 "--out", run]) == 0
    m = json.loads((tmp_path / "vq" / "metrics.json").read_text())
    for key in ("test_neg_elbo", "test_nll", "test_kl", "train_steps", "train_seconds", "test_recon_mse",
                "codebook_usage", "code_perplexity", "shallow_recon_mse"):
        assert math.isfinite(m[key]), key
    assert m["test_kl"] == pytest.approx(16 * math.log(16), rel=1e-5)
    assert 0 < m["codebook_usage"] <= 1 and 1 <= m["code_perplexity"] <= 16
