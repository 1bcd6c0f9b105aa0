"""Estimators against exact answers on probabilistic PCA, whose log p(x) is closed-form."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_lvm.evaluation import (
    active_units,
    elbo_split,
    elbo_terms,
    log_marginal_likelihood,
    mutual_information,
)
from pyro_lvm.models import PPCA, VAE
from pyro_lvm.objectives import (
    ELBO,
    IWAE,
    LinearSchedule,
    MeanFieldELBO,
    SigmoidSchedule,
    TraceGraphELBO,
    free_bits_kl,
)
from pyro_lvm.objectives.free_bits import kl_per_dim


def make_ppca(input_dim=4, latent_dim=2, seed=0, weight_scale=1.5):
    torch.manual_seed(seed)
    m = PPCA(input_dim=input_dim, latent_dim=latent_dim)
    with torch.no_grad():
        m.loading.weight.copy_(torch.randn(input_dim, latent_dim) * weight_scale)
        m.loading.bias.copy_(torch.randn(input_dim))
        m.log_noise.fill_(math.log(0.7))
    return m


def sample_data(m, n):
    with torch.no_grad():
        return m.model(num_samples=n)


@pytest.mark.parametrize("objective", [ELBO(), MeanFieldELBO(), TraceGraphELBO(), IWAE(5),
                                       IWAE(5, gradient="dreg")], ids=repr)
def test_bound_is_exact_when_guide_is_the_posterior(objective):
    m = make_ppca()
    x = sample_data(m, 30)
    m.set_exact_guide()
    exact = m.log_marginal(x).sum()
    for _ in range(3):  # zero variance: every draw is exact
        assert torch.allclose(-objective.terms(m.model, m.guide, x).loss, exact, rtol=1e-5)


def test_elbo_split_adds_up_and_is_exact():
    m = make_ppca()
    x = sample_data(m, 30)
    m.set_exact_guide()
    terms = elbo_terms(m.model, m.guide, x)
    assert torch.allclose(terms["elbo"], m.log_marginal(x), atol=1e-4)
    split = elbo_split(m.model, m.guide, x, batch_size=7)
    assert split["neg_elbo"] == pytest.approx(-m.log_marginal(x).mean().item(), abs=1e-4)
    assert split["kl"] > 0
    assert split["recon"] - split["kl"] == pytest.approx(-split["neg_elbo"], abs=1e-5)


def test_importance_sampling_matches_closed_form_at_5000_particles():
    m = make_ppca()
    x = sample_data(m, 20)
    m.set_exact_guide(covariance_scale=1.2)  # a good but not exact proposal
    with torch.no_grad():
        m.recognition.bias.add_(0.05)
    pyro.set_rng_seed(0)
    est = log_marginal_likelihood(m.model, m.guide, x, num_particles=5000, batch_size=7,
                                  max_elements=20000)  # forces chunking over K
    err = (est - m.log_marginal(x)).abs().max().item()
    assert err < 0.01, err
    # a poor proposal gives a lower estimate on average (a stochastic lower bound)
    m.set_exact_guide(covariance_scale=0.2)
    poor = log_marginal_likelihood(m.model, m.guide, x, num_particles=50)
    assert poor.mean().item() < m.log_marginal(x).mean().item() - 0.05


def test_naive_prior_estimator_converges_in_low_dimension():
    m = make_ppca(input_dim=2, latent_dim=1, weight_scale=1.0)
    x = sample_data(m, 10)
    est = log_marginal_likelihood(m.model, None, x, num_particles=20000, proposal="prior")
    assert (est - m.log_marginal(x)).abs().max().item() < 0.05


def test_iwae_bound_increases_with_particles():
    m = make_ppca()
    x = sample_data(m, 50)
    m.set_exact_guide(covariance_scale=0.3)  # a too-narrow guide leaves a gap
    exact = m.log_marginal(x).mean().item()
    means = []
    with torch.no_grad():
        for k in (1, 5, 50):
            reps = [IWAE(k).bound(m.model, m.guide, x).mean().item() for _ in range(40)]
            means.append(sum(reps) / len(reps))
    assert means[0] < means[1] < means[2] < exact, (means, exact)
    assert exact - means[0] > 0.1


def test_iwae_with_one_particle_is_the_elbo():
    m = make_ppca()
    x = sample_data(m, 10)
    pyro.set_rng_seed(3)
    a = IWAE(1).terms(m.model, m.guide, x, data_size=40).loss
    pyro.set_rng_seed(3)
    b = ELBO().terms(m.model, m.guide, x, data_size=40).loss
    assert torch.allclose(a, b, rtol=1e-5)


def test_iwae_scales_the_per_datapoint_bound_not_the_weights():
    m = make_ppca()
    x = sample_data(m, 8)
    obj = IWAE(10)
    pyro.set_rng_seed(5)
    loss = obj.terms(m.model, m.guide, x, data_size=800).loss
    pyro.set_rng_seed(5)
    bound = obj.bound(m.model, m.guide, x)
    assert torch.allclose(loss, -100 * bound.sum(), rtol=1e-5)


def _mean_grads(objective, m, x, reps):
    grads = []
    for i in range(reps):
        m.zero_grad()
        pyro.set_rng_seed(i)
        objective.terms(m.model, m.guide, x).surrogate.backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]).clone())
    g = torch.stack(grads)
    return g.mean(0), g.std(0) / math.sqrt(reps)


def test_dreg_is_unbiased_for_the_iwae_gradient():
    m = make_ppca(input_dim=3, latent_dim=1)
    x = sample_data(m, 4)
    m.set_exact_guide(covariance_scale=0.5)
    with torch.no_grad():
        m.recognition.bias.add_(0.3)
    mean_r, se_r = _mean_grads(IWAE(4), m, x, 800)
    mean_d, se_d = _mean_grads(IWAE(4, gradient="dreg"), m, x, 800)
    z = (mean_r - mean_d).abs() / (se_r**2 + se_d**2).sqrt().clamp_min(1e-6)
    assert z.max() < 5, z
    # ... and its guide gradient has lower variance
    assert (se_d[-4:] ** 2).sum() < (se_r[-4:] ** 2).sum()


def test_beta_weights_the_kl_exactly():
    m = VAE(input_dim=6, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    pyro.set_rng_seed(2)
    terms = elbo_terms(m.model, m.guide, x)
    pyro.set_rng_seed(2)
    loss = MeanFieldELBO(beta=0.3).terms(m.model, m.guide, x).loss
    assert torch.allclose(loss, -(terms["recon"] - 0.3 * terms["kl"]).sum(), rtol=1e-5)
    pyro.set_rng_seed(2)
    annealed = MeanFieldELBO(annealing=LinearSchedule(100, start=0.1)).terms(m.model, m.guide, x, step=50).loss
    assert torch.allclose(annealed, -(terms["recon"] - 0.55 * terms["kl"]).sum(), rtol=1e-5)


def test_free_bits_floor_and_gradient():
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 1.0, 0.0]], requires_grad=True)
    value = free_bits_kl(kl, 0.5)
    assert value.item() == pytest.approx(2 * (0.5 + 1.5 + 0.5))
    value.backward()
    assert torch.equal(kl.grad[:, 0], torch.zeros(2))  # under the floor: no pressure
    assert torch.allclose(kl.grad[:, 1], torch.ones(2))


@pytest.mark.parametrize("objective", [ELBO, MeanFieldELBO], ids=["elbo", "meanfield"])
def test_free_bits_objective_equals_formula(objective):
    # under both objectives the floor applies to the closed-form KL of each dimension
    m = VAE(input_dim=6, latent_dim=3, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    pyro.set_rng_seed(4)
    terms = elbo_terms(m.model, m.guide, x)
    q, p = m.encode(x), m.prior(5)
    per_dim = torch.distributions.kl_divergence(q.base_dist, p.base_dist).detach()
    expected = -(terms["recon"].sum() - 5 * per_dim.mean(0).clamp_min(0.7).sum())
    pyro.set_rng_seed(4)
    loss = objective(free_bits=0.7).terms(m.model, m.guide, x).loss
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_free_bits_kl_is_closed_form_when_registered_else_one_sample():
    loc, scale = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.5, 2.0]])
    q = dist.Normal(loc, scale).to_event(1)
    z = q.sample()
    site = {"name": "z", "fn": q, "value": z}
    normal = {"fn": dist.Normal(torch.zeros(1, 2), 1.0).to_event(1)}
    closed = torch.distributions.kl_divergence(q.base_dist, normal["fn"].base_dist)
    assert torch.allclose(kl_per_dim(site, normal), closed)
    student = {"fn": dist.StudentT(3.0, torch.zeros(1, 2), 1.0).to_event(1)}  # no closed form
    one_sample = q.base_dist.log_prob(z) - student["fn"].base_dist.log_prob(z)
    assert torch.allclose(kl_per_dim(site, student), one_sample)


@pytest.mark.parametrize("schedule", [LinearSchedule(100, 0.05), SigmoidSchedule(100, 0.05)], ids=repr)
def test_annealing_schedules_start_above_zero_and_reach_one(schedule):
    values = [schedule(t) for t in range(0, 150)]
    assert values[0] == pytest.approx(0.05)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[100] == 1.0 and values[-1] == 1.0
    with pytest.raises(ValueError):
        type(schedule)(100, start=0.0)


def test_active_units_counts_used_dimensions():
    m = make_ppca(input_dim=5, latent_dim=3)
    with torch.no_grad():
        m.loading.weight[:, 1] = 0.0  # the second latent dimension is unused
    x = sample_data(m, 500)
    m.set_exact_guide()
    count, variances = active_units(m.encode, x)
    assert count == 2
    assert variances[1] < 1e-6


def test_mutual_information_matches_closed_form():
    m = make_ppca(input_dim=3, latent_dim=2, weight_scale=1.0)
    x = sample_data(m, 5000)
    m.set_exact_guide()
    mi = mutual_information(m.encode, x, generator=torch.Generator().manual_seed(0))
    assert mi == pytest.approx(m.mutual_information().item(), abs=0.1)
    assert mi <= math.log(5000)


def test_fast_elbo_path_equals_pyro_trace_elbo():
    from pyro.infer import Trace_ELBO

    m = VAE(input_dim=6, latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    for beta, particles in [(1.0, 1), (0.3, 1), (1.0, 4)]:
        pyro.set_rng_seed(7)
        ours = ELBO(beta=beta, num_particles=particles).terms(m.model, m.guide, x, data_size=50)
        ours.surrogate.backward()
        grads = [p.grad.clone() for p in m.parameters()]
        m.zero_grad()
        pyro.set_rng_seed(7)
        from pyro_lvm.objectives import weight_latents

        ref = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1,
                         max_plate_nesting=1).differentiable_loss(
            weight_latents(m.model, beta), weight_latents(m.guide, beta), x, data_size=50)
        ref.backward()
        assert torch.allclose(ours.loss, ref.detach(), rtol=1e-5)
        for g, p in zip(grads, m.parameters()):
            assert torch.allclose(g, p.grad, rtol=1e-4, atol=1e-5)
        m.zero_grad()


def test_gaussian_mutual_information_matches_the_generic_blocks(monkeypatch):
    """The matrix-product path for diagonal-Gaussian guides gives the pairwise densities and the
    mutual information of the direct ``(b, N, d)`` evaluation, small scales included."""
    from pyro_lvm.evaluation import latents

    g = torch.Generator().manual_seed(0)
    loc = 3 * torch.randn(300, 4, generator=g)
    scale = torch.exp(torch.empty(300, 4).uniform_(math.log(1e-3), math.log(2.0), generator=g))
    z = loc[:50] + scale[:50] * torch.randn(50, 4, generator=g)
    direct = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(1))
    fast = latents._gaussian_log_densities(z, loc, scale)
    assert fast.shape == (50, 300)
    assert torch.allclose(fast.to(direct), direct, rtol=1e-5, atol=1e-3)

    def encode(x):
        return dist.Normal(x[:, :4], x[:, 4:]).to_event(1)

    data = torch.cat([loc, scale], -1)
    fast_mi = mutual_information(encode, data, batch_size=70, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(latents, "_diagonal_gaussian", lambda dists: None)
    slow_mi = mutual_information(encode, data, batch_size=70, generator=torch.Generator().manual_seed(1))
    assert fast_mi == pytest.approx(slow_mi, abs=1e-4)


def test_the_lean_standard_normal_is_normal_0_1_bit_for_bit():
    """StandardNormal (the prior of the Gaussian-latent models) computes -z^2/2 - log sqrt(2 pi) in
    three operations: the same values, gradients and closed-form KL as Normal(0, 1), bit for bit,
    under expand and to_event as the models use it, and with validation refusing what Normal refuses."""
    from torch.distributions import kl_divergence

    from pyro_lvm.distributions import StandardNormal

    torch.manual_seed(0)
    z = (3 * torch.randn(5, 7, 4)).requires_grad_()
    weights = torch.randn(5, 7)
    lean = StandardNormal(torch.empty(4)).expand([7, 4]).to_event(1)
    full = dist.Normal(torch.zeros(4), torch.ones(4)).expand([7, 4]).to_event(1)
    a, b = lean.log_prob(z), full.log_prob(z)
    assert torch.equal(a, b)
    ga, = torch.autograd.grad((a * weights).sum(), z)
    gb, = torch.autograd.grad((b * weights).sum(), z)
    assert torch.equal(ga, gb)
    q = dist.Normal(torch.randn(7, 4), torch.rand(7, 4) + 0.5).to_event(1)
    assert torch.equal(kl_divergence(q, lean), kl_divergence(q, full))
    assert lean.sample([3]).shape == (3, 7, 4) and lean.batch_shape == (7,)
    with pytest.raises(ValueError):
        StandardNormal(torch.empty(2), validate_args=True).log_prob(torch.tensor([0.0, float("nan")]))


@pytest.mark.parametrize("latent_dim", [1, 3])
def test_ppca_maximum_likelihood_is_a_stationary_point_above_any_other_fit(latent_dim):
    """The closed form maximizes the exact log-likelihood: zero gradient there, the data's top
    eigenvalues kept, the others averaged, and no perturbation or gradient fit does better."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    m = PPCA(input_dim=6, latent_dim=latent_dim).double()
    m.set_maximum_likelihood(x)
    best = m.log_marginal(x).mean()
    params = [m.loading.weight, m.loading.bias, m.log_noise]
    for grad in torch.autograd.grad(best, params):
        assert grad.abs().max() < 1e-9
    data = torch.linalg.eigvalsh(torch.cov(x.T, correction=0)).flip(0)
    fitted = torch.linalg.eigvalsh(m.marginal().covariance_matrix).flip(0)
    torch.testing.assert_close(fitted[:latent_dim], data[:latent_dim])
    torch.testing.assert_close(fitted[latent_dim:], data[latent_dim:].mean().expand(6 - latent_dim))
    torch.testing.assert_close(m.exact_posterior(x).loc, m.encode(x).loc)  # the guide is exact
    with torch.no_grad():
        for _ in range(5):
            for p in params:
                p.add_(1e-2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            assert m.log_marginal(x).mean() < best
            m.set_maximum_likelihood(x)
    other = PPCA(input_dim=6, latent_dim=latent_dim).double()  # fitted by gradient ascent instead
    opt = torch.optim.LBFGS([other.loading.weight, other.loading.bias, other.log_noise], max_iter=500,
                            tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -other.log_marginal(x).mean()
        loss.backward()
        return loss

    opt.step(closure)
    reached = other.log_marginal(x).mean().item()
    assert reached <= best.item() + 1e-9 and reached == pytest.approx(best.item(), abs=1e-6)


def test_ppca_maximum_likelihood_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="rows of 4 values"):
        PPCA(input_dim=4, latent_dim=2).set_maximum_likelihood(torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        PPCA(input_dim=4, latent_dim=2).set_maximum_likelihood(torch.randn(1, 4))
    with pytest.raises(ValueError, match="latent_dim < input_dim"):
        PPCA(input_dim=4, latent_dim=4).set_maximum_likelihood(torch.randn(10, 4))
