"""Exact checks of the models of issue 15: M2's enumerated objective written out by hand, the
VampPrior's density normalised, the flows' log-determinants against autograd Jacobians, and the
command line on real data."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from pyro_lvm.cli import main
from pyro_lvm.data.labels import balanced_labels, stratified_order
from pyro_lvm.distributions import UniformGaussianMixture
from pyro_lvm.models import CVAE, HVAE, SSVAE, VAE
from pyro_lvm.models.flows import ConditionalFlow
from pyro_lvm.objectives import EnumELBO


def _m2_by_hand(m, rows, draws):
    """The negative M2 objective of the rows, the sum over classes written out, with the guide's z
    draws given per (row, class): labelled rows L(x, y) + alpha log q(y|x); unlabelled rows
    sum_y q(y|x) [L(x, y) - log q(y|x)]."""
    x, y = m.split(rows)
    c = m.config.num_classes
    log_py = -math.log(c)
    total = 0.0
    for i in range(rows.shape[0]):
        logits = m.classify_logits(x[i:i + 1])[0]
        log_q = logits.log_softmax(-1)

        def elbo(k):
            onehot = torch.nn.functional.one_hot(torch.tensor(k), c).float().unsqueeze(0)
            q = m.encode_with(x[i:i + 1], onehot)
            z = draws[i, k].unsqueeze(0)
            return (m.decode_with(z, onehot).log_prob(x[i:i + 1]) + log_py
                    + m.prior(1).log_prob(z) - q.log_prob(z))[0]

        if y[i] >= 0:
            total = total + elbo(int(y[i])) + m.config.alpha * log_q[int(y[i])]
        else:
            total = total + sum(log_q[k].exp() * (elbo(k) - log_q[k]) for k in range(c))
    return -total


def test_enumerated_m2_objective_equals_the_sum_over_classes_by_hand():
    pyro.set_rng_seed(0)
    m = SSVAE(input_dim=5, num_classes=3, latent_dim=2, hidden=(6,), alpha=2.0)
    x = torch.bernoulli(torch.full((4, 5), 0.4))
    rows = m.with_labels(x, torch.tensor([1, -1, 2, -1]))
    # fix every draw of z: zero noise in q(z | x, y), so both sides see z = the encoder's mean
    draws = torch.zeros(4, 3, 2)
    for i in range(4):
        for k in range(3):
            onehot = torch.nn.functional.one_hot(torch.tensor(k), 3).float().unsqueeze(0)
            draws[i, k] = m.encode_with(x[i:i + 1], onehot).mean[0]
    with pyro.poutine.block(), torch.no_grad():
        with _zero_noise():
            ours = EnumELBO().loss(m.model, m.guide, rows)
            pyros = TraceEnum_ELBO(max_plate_nesting=1).loss(m.model, m.guide, rows)
        expected = _m2_by_hand(m, rows, draws)
    assert float(pyros) == pytest.approx(float(expected), rel=1e-5)
    assert float(ours) == pytest.approx(float(expected), rel=1e-5)


class _zero_noise:
    """Inside, Normal.rsample returns the mean (the reparameterization's noise set to zero)."""

    def __enter__(self):
        self.original = torch.distributions.Normal.rsample
        torch.distributions.Normal.rsample = lambda d, sample_shape=torch.Size(): d.loc.expand(
            d._extended_shape(sample_shape)).clone()

    def __exit__(self, *exc):
        torch.distributions.Normal.rsample = self.original


def test_ssvae_minibatch_scales_each_part_by_its_own_count():
    m = SSVAE(input_dim=5, num_classes=2, latent_dim=2, hidden=(4,))
    m.labelled_count.fill_(10)
    lab = torch.tensor([True, True, False, False, False])
    assert m._scales(lab, data_size=100) == (10 / 2, 90 / 3)
    assert m._scales(lab, data_size=None) == (None, None)
    rows = m.with_labels(torch.zeros(300, 5), torch.tensor([0, 1] * 10 + [-1] * 280))
    m.initialize(rows)  # counts: 20 labelled of 300, and Kingma et al.'s alpha = 0.1 N
    assert int(m.labelled_count) == 20 and m.alpha == pytest.approx(30.0)
    assert SSVAE(input_dim=5, num_classes=2, latent_dim=2, hidden=(4,), alpha=7.0).alpha == 7.0


def test_vampprior_density_is_normalised():
    torch.manual_seed(0)
    m = VAE(input_dim=4, latent_dim=2, hidden=(8,), prior="vamp", pseudo_inputs=3, likelihood="gaussian")
    m.initialize(torch.randn(20, 4))
    grid = torch.linspace(-12, 12, 601)
    step = float(grid[1] - grid[0])
    z = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        mass = m.prior(1).log_prob(z).exp().sum() * step ** 2
    assert float(mass) == pytest.approx(1.0, abs=2e-3)


def test_uniform_gaussian_mixture_matches_the_direct_sum_and_samples_its_components():
    torch.manual_seed(1)
    loc, scale = torch.randn(5, 3), torch.rand(5, 3) + 0.3
    p = UniformGaussianMixture(loc, scale)
    z = torch.randn(7, 2, 3)
    direct = dist.Normal(loc, scale).log_prob(z[..., None, :]).sum(-1).logsumexp(-1) - math.log(5)
    assert torch.allclose(p.log_prob(z), direct, atol=1e-5)
    far = UniformGaussianMixture(torch.tensor([[100.0], [-100.0]]), torch.ones(2, 1)).expand([4000]).sample()
    assert (far.abs() > 90).all() and 0.4 < (far > 0).float().mean() < 0.6
    with pytest.raises(ValueError, match=r"\(K, D\)"):
        UniformGaussianMixture(torch.zeros(3), torch.ones(3))


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_flow_log_determinants_match_autograd_jacobians(kind):
    torch.manual_seed(2)
    d = 3
    flow = ConditionalFlow(kind, latent_dim=d, context_dim=2, layers=2, hidden=(7,))
    context = torch.randn(2)
    base = dist.Normal(torch.zeros(d), 1.0).to_event(1)
    q = flow.transform(base, context)
    z0 = torch.randn(d)

    def push(v):
        for t in q.transforms:
            v = t(v)
        return v

    jac = torch.autograd.functional.jacobian(push, z0)
    expected = base.log_prob(z0) - torch.linalg.slogdet(jac)[1]
    z = push(z0)  # the transforms remember this draw, so log q(z) needs no inverse
    assert torch.allclose(q.log_prob(z), expected, atol=1e-5)


def test_hvae_scores_both_layers():
    pyro.set_rng_seed(3)
    m = HVAE(input_dim=6, latent_dims=(3, 2), hidden=(8,), hidden2=(4,))
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    guide = pyro.poutine.trace(m.guide).get_trace(x)
    model = pyro.poutine.trace(pyro.poutine.replay(m.model, trace=guide)).get_trace(x)
    z1, z2 = guide.nodes["z1"]["value"], guide.nodes["z2"]["value"]
    expected = (m.prior(5).log_prob(z2) + m.conditional_prior(z2).log_prob(z1) + m.decode(z1).log_prob(x)
                - m.encode(x).log_prob(z1) - m.encode_top(z1).log_prob(z2))
    got = sum(model.nodes[s]["fn"].log_prob(model.nodes[s]["value"]) for s in ("z2", "z1", "x")) - sum(
        guide.nodes[s]["fn"].log_prob(guide.nodes[s]["value"]) for s in ("z1", "z2"))
    assert torch.allclose(got, expected, atol=1e-5)


def test_balanced_labels_and_stratified_batches():
    y = torch.arange(100) % 5
    kept = balanced_labels(y, 10, 5, seed=0)
    assert torch.bincount(y[kept]).tolist() == [2] * 5
    assert torch.equal(kept, balanced_labels(y, 10, 5, seed=0))
    unlabelled = torch.tensor(sorted(set(range(100)) - set(kept.tolist())))
    order = stratified_order(kept, unlabelled, share=0.2)(100, 10, torch.Generator().manual_seed(0))
    seen = torch.cat(order)
    assert all((torch.isin(b, kept)).sum() == 2 for b in order)  # 2 labelled rows in every batch of 10
    assert sorted(seen[~torch.isin(seen, kept)].tolist()) == unlabelled.tolist()  # each unlabelled row once
    with pytest.raises(ValueError, match="class 0"):
        balanced_labels(y, 500, 5, seed=0)


def test_ssvae_label_share_sets_the_labelled_rows_per_batch():
    from pyro_lvm.data.datasets import DataSplits

    g = torch.Generator().manual_seed(0)
    rows = torch.bernoulli(torch.full((200, 6), 0.5), generator=g)
    labels = torch.arange(200) % 3
    data = DataSplits("toy", rows, rows[:30], rows[:30], support="binary",
                      labels={"train": labels, "valid": labels[:30], "test": labels[:30]})
    for share, per_batch in ((0.1, 1), (0.5, 5)):
        m = SSVAE(input_dim=6, num_classes=3, latent_dim=2, hidden=(5,), labels=30, label_share=share)
        prepared = m.prepare_data(data)
        order = prepared.batch_order(200, 10, torch.Generator().manual_seed(0))
        known = prepared.train[:, -1] >= 0
        assert int(known.sum()) == 30
        assert all(int(known[b].sum()) == per_batch for b in order)
        assert sorted(torch.cat(order)[~known[torch.cat(order)]].tolist()) == (~known).nonzero().squeeze(-1).tolist()
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match="label_share"):
            SSVAE(input_dim=6, num_classes=3, latent_dim=2, hidden=(5,), label_share=bad)


@pytest.mark.parametrize("labelled", [1, 5])
def test_ssvae_evaluation_scores_the_values_alone_whatever_labels_the_rows_carry(labelled):
    """The M2 model's NLL is that of x alone (its test labels are hidden): rows that carry some
    labels are scored as the same rows unlabelled. Its labelled and unlabelled rows lie in two
    plates, so importance weights taken straight from such rows cannot be per point: refused,
    not broadcast into a wrong answer (1 labelled row of 8 would broadcast silently)."""
    from pyro_lvm.evaluation import evaluate, log_marginal_likelihood

    torch.manual_seed(0)
    m = SSVAE(input_dim=5, num_classes=3, latent_dim=2, hidden=(6,))
    x = torch.bernoulli(torch.full((8, 5), 0.4))
    labels = torch.full((8,), -1)
    labels[:labelled] = torch.arange(labelled) % 3
    pyro.set_rng_seed(1)
    mixed = evaluate(m, m.with_labels(x, labels), num_particles=50)
    pyro.set_rng_seed(1)
    hidden = evaluate(m, m.with_labels(x, torch.full((8,), -1)), num_particles=50)
    assert mixed["test_nll"] == hidden["test_nll"] and mixed["test_neg_elbo"] == hidden["test_neg_elbo"]
    with pytest.raises(ValueError, match="one plate over the rows"):
        log_marginal_likelihood(m.model, m.guide, m.with_labels(x, labels), num_particles=4)


def test_labelled_models_refuse_rows_without_labels():
    m = CVAE(input_dim=4, num_classes=3, latent_dim=2, hidden=(5,))
    with pytest.raises(ValueError, match="class label last"):
        m.check_data(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="0..2"):
        m.check_data(m.with_labels(torch.zeros(2, 4), torch.tensor([0, -1])))  # every label is needed
    with pytest.raises(ValueError, match="-1 \\(unknown\\) or 0..2"):
        SSVAE(input_dim=4, num_classes=3, latent_dim=2, hidden=(5,)).check_data(
            SSVAE.with_labels(torch.zeros(2, 4), torch.tensor([0, 3])))


@pytest.mark.parametrize("model, options", [
    ("ssvae", ["--labels", "100", "--hidden", "32", "--latent-dim", "4"]),
    ("cvae", ["--hidden", "32", "--latent-dim", "4"]),
])
def test_labelled_models_train_from_the_command_line(model, options, data_dir, tmp_path, monkeypatch):
    from pyro_lvm.data import datasets
    real = datasets.load_dataset

    def smaller(name, *args, **kwargs):  # the real data, cut to a few hundred points
        d = real(name, *args, **kwargs)
        for split, n in (("train", 600), ("valid", 100), ("test", 200)):
            setattr(d, split, getattr(d, split)[:n])
            d.labels[split] = d.labels[split][:n]
        return d

    monkeypatch.setattr("pyro_lvm.runs.load_dataset", smaller)
    out = tmp_path / "run"
    main(["train", model, "--dataset", "dynamic_mnist", "--data-dir", str(data_dir), "--epochs", "1",
          "--eval-particles", "3", "--batch-size", "50", *options, "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["test_nll"]) and metrics["test_nll"] > 0
    assert (out / "class_samples.png").is_file()
    assert not (out / "traversals.png").exists()  # decode reads (z, y): no traversal of z alone
    if model == "ssvae":
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        config = json.loads((out / "config.json").read_text())
        assert config["model_config"]["labels"] == 100
    main(["evaluate", str(out), "--particles", "2"])  # the run reads its data back with the label column
    assert math.isfinite(json.loads((out / "eval.json").read_text())["test_nll"])


# ------------------------------------------------------- decoders start at the data's mean
def _zero_last_weights(net):
    last = net.net[-1] if hasattr(net, "net") else net[-1]
    with torch.no_grad():
        last.weight.zero_()


@pytest.mark.parametrize("make, decoder, likelihood", [
    (lambda: VAE(input_dim=6, latent_dim=2, hidden=(5,)), "decoder", "bernoulli"),
    (lambda: VAE(input_dim=6, latent_dim=2, hidden=(5,), likelihood="gaussian"), "decoder", "gaussian"),
    (lambda: VAE(input_dim=6, latent_dim=2, hidden=(5,), likelihood="discretized_logistic"), "decoder",
     "discretized_logistic"),
    (lambda: HVAE(input_dim=6, latent_dims=(3, 2), hidden=(5,), hidden2=(4,)), "decoder1", "bernoulli"),
    (lambda: CVAE(input_dim=6, num_classes=3, latent_dim=2, hidden=(5,)), "decoder", "bernoulli"),
    (lambda: SSVAE(input_dim=6, num_classes=3, latent_dim=2, hidden=(5,)), "decoder", "bernoulli"),
])
def test_initialize_starts_the_decoder_at_the_data_mean(make, decoder, likelihood):
    torch.manual_seed(0)
    model = make()
    values = torch.randint(0, 256, (40, 6)).float() / 255
    if likelihood == "bernoulli":
        values = (values > 0.7).float()
    labelled = isinstance(model, (CVAE, SSVAE))
    rows = torch.cat([values, torch.randint(0, 3, (40, 1)).float()], -1) if labelled else values
    model.initialize(rows)
    _zero_last_weights(getattr(model, decoder))
    out = getattr(model, decoder)(torch.zeros(1, getattr(model, decoder)[0].in_features))[0, :6]
    expected = values.mean(0)
    if likelihood == "gaussian":
        assert torch.allclose(out, expected, atol=1e-6)
    else:
        assert torch.allclose(torch.sigmoid(out), expected.clamp(1e-3, 1 - 1e-3), atol=1e-5)


def test_initialize_sets_a_conv_decoders_channel_means():
    model = VAE(input_dim=64, latent_dim=2, network="conv", image_shape=(1, 8, 8), channels=(4,),
                likelihood="gaussian")
    values = torch.rand(30, 64)
    model.initialize(values)
    assert model.decoder.net[-1].bias[0].item() == pytest.approx(values.mean().item(), abs=1e-6)


def test_hvae_runs_warm_up_the_kl_over_the_run_unless_told_otherwise(tmp_path, capsys):
    """``pyro-lvm train hvae`` takes the model's warm-up (linear over all 2 x 10 steps here) into the
    run's settings, a resume keeps it, ``--kl-anneal none`` turns it off, and the VAE has none."""
    common = ["--dataset", "binarized_mnist_small", "--batch-size", "500", "--no-progress", "--no-figures",
              "--eval-particles", "2", "--hidden", "8"]
    hvae = ["train", "hvae", "--latent-dims", "4,2", "--hidden2", "4", *common]

    def objective_options(run):
        return json.loads((tmp_path / run / "config.json").read_text())["objective_options"]

    assert main([*hvae, "--epochs", "2", "--out", str(tmp_path / "warm")]) == 0
    assert objective_options("warm") == {"kl_anneal": "linear", "anneal_steps": 20}
    assert main([*hvae, "--epochs", "3", "--resume", "--out", str(tmp_path / "warm")]) == 0
    assert objective_options("warm") == {"kl_anneal": "linear", "anneal_steps": 20}
    assert main([*hvae, "--epochs", "1", "--kl-anneal", "none", "--out", str(tmp_path / "cold")]) == 0
    assert objective_options("cold") == {"kl_anneal": "none"}
    assert main([*hvae, "--epochs", "1", "--anneal-steps", "7", "--out", str(tmp_path / "short")]) == 0
    assert objective_options("short") == {"kl_anneal": "linear", "anneal_steps": 7}  # its length, given
    assert main(["train", "vae", "--latent-dim", "2", *common, "--epochs", "1", "--out", str(tmp_path / "vae")]) == 0
    assert "kl_anneal" not in objective_options("vae")
    capsys.readouterr()


def test_a_warm_up_weights_the_kl_of_the_first_steps():
    """The schedule a warm-up builds scores the first step's latents at the start weight: the loss
    is log p(x|z) + 0.01 (log p(z) - log q(z|x)) for the same draws."""
    from pyro_lvm.runs import build_objective

    m = HVAE(input_dim=6, latent_dims=(3, 2), hidden=(8,), hidden2=(4,))
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    objective = build_objective("elbo", kl_anneal="linear", anneal_steps=20)
    pyro.set_rng_seed(0)
    loss = objective.terms(m.model, m.guide, x, step=0).loss
    pyro.set_rng_seed(0)
    guide = pyro.poutine.trace(m.guide).get_trace(x)
    z1, z2 = guide.nodes["z1"]["value"], guide.nodes["z2"]["value"]
    kl_part = (m.prior(5).log_prob(z2) + m.conditional_prior(z2).log_prob(z1)
               - m.encode(x).log_prob(z1) - m.encode_top(z1).log_prob(z2))
    assert torch.allclose(loss, -(m.decode(z1).log_prob(x) + 0.01 * kl_part).sum(), atol=1e-5)
