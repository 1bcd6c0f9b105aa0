"""Gradient estimators for discrete latents against exact gradients by enumeration."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_lvm.objectives import IWAE, VIMCO
from pyro_lvm.objectives.vimco import leave_one_out_bounds

X = torch.tensor([-1.5, 0.3, 2.0])


class TwoStateModel(nn.Module):
    """z ~ Bernoulli(0.4), x | z ~ N(mu_z, 1); guide q(z=1 | x) = sigmoid(a x + b)."""

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor([-1.0, 1.5]))
        self.ab = nn.Parameter(torch.tensor([0.7, -0.2]))

    def model(self, x, data_size=None):
        with pyro.plate("data", data_size or len(x), subsample=torch.arange(len(x))):
            z = pyro.sample("z", dist.Bernoulli(0.4))
            pyro.sample("x", dist.Normal(self.mu[z.long()], 1.0), obs=x)

    def guide(self, x, data_size=None):
        with pyro.plate("data", data_size or len(x), subsample=torch.arange(len(x))):
            pyro.sample("z", dist.Bernoulli(logits=self.ab[0] * x + self.ab[1]))

    def exact_expected_bound(self, x, k):
        """E_q[log (1/K) sum_k w_k], summed over data points, by enumerating all z tuples."""
        q1 = torch.sigmoid(self.ab[0] * x + self.ab[1])
        total = 0.0
        for zs in itertools.product([0, 1], repeat=k):
            z = torch.tensor(zs, dtype=torch.float).unsqueeze(-1)  # (K, 1)
            log_q = dist.Bernoulli(probs=q1).log_prob(z)  # (K, B)
            log_w = (dist.Bernoulli(0.4).log_prob(z) + dist.Normal(self.mu[z.long()], 1.0).log_prob(x)
                     - log_q)
            bound = torch.logsumexp(log_w, 0) - math.log(k)
            total = total + (log_q.sum(0).exp() * bound).sum()
        return total


def _grad(fn, m):
    m.zero_grad()
    fn().backward()
    return torch.cat([p.grad.flatten() for p in m.parameters()]).clone()


REPLICAS = 100
X_REPLICATED = X.repeat(REPLICAS)  # independent particles per replica: one call averages 100 draws


def _mean_of_draws(objective, m):
    return _grad(lambda: objective.terms(m.model, m.guide, X_REPLICATED).surrogate, m) / REPLICAS


@pytest.mark.parametrize("objective", [VIMCO(num_particles=3), IWAE(num_particles=3)], ids=repr)
def test_estimator_is_unbiased_against_enumeration(objective):
    m = TwoStateModel()
    exact = _grad(lambda: -m.exact_expected_bound(X, 3), m)
    draws = torch.stack([_mean_of_draws(objective, m) for _ in range(60)])  # 6000 draws in all
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
    z = (mean - exact).abs() / se.clamp_min(1e-8)
    assert z.max() < 4.5, (mean, exact, se)
    assert exact[2:].abs().min() > 1e-3  # the encoder gradient is not trivially zero


def test_vimco_has_lower_variance_than_plain_score_function():
    m = TwoStateModel()

    def encoder_grads(objective):
        return torch.stack([_mean_of_draws(objective, m)[2:] for _ in range(40)])

    assert encoder_grads(VIMCO(5)).var(0).sum() < encoder_grads(IWAE(5)).var(0).sum()


def test_vimco_value_is_the_iwae_bound():
    m = TwoStateModel()
    pyro.set_rng_seed(0)
    a = VIMCO(4).terms(m.model, m.guide, X, data_size=30).loss
    pyro.set_rng_seed(0)
    b = IWAE(4).terms(m.model, m.guide, X, data_size=30).loss
    assert torch.allclose(a, b)


def test_leave_one_out_matches_the_definition():
    log_w = torch.randn(4, 3)
    loo = leave_one_out_bounds(log_w)
    for k in range(4):
        others = torch.cat([log_w[:k], log_w[k + 1:]])
        replaced = log_w.clone()
        replaced[k] = others.mean(0)
        assert torch.allclose(loo[k], torch.logsumexp(replaced, 0) - math.log(4))
    with pytest.raises(ValueError):
        VIMCO(num_particles=1)


def _tiny_catvae():
    from pyro_lvm.models import CatVAE

    torch.manual_seed(0)
    return CatVAE(input_dim=12, num_latents=1, num_classes=4, hidden=(16,)), \
        torch.bernoulli(torch.full((16, 12), 0.4), generator=torch.Generator().manual_seed(0))


def test_diagnostics_reinforce_is_unbiased_against_enumeration():
    from pyro_lvm.evaluation import gradient_diagnostics

    m, x = _tiny_catvae()
    d = gradient_diagnostics(m, x, ["reinforce"], num_draws=1500)
    assert d["enum"]["exact_norm"] > 0.1
    assert d["reinforce"]["bias_z"] < 4.5, d  # max over all encoder coordinates
    assert d["reinforce"]["relative_bias"] < 0.05


def test_diagnostics_relaxed_and_straight_through_give_encoder_gradients_with_bias():
    from pyro_lvm.evaluation import gradient_diagnostics

    m, x = _tiny_catvae()
    d = gradient_diagnostics(m, x, ["st", "gumbel", "st-gumbel"], num_draws=300)
    for est in ("st", "gumbel", "st-gumbel"):
        assert d[est]["mean_norm"] > 0.1 * d["enum"]["exact_norm"], est
        assert d[est]["bias_z"] > 6, est  # biased: the test of the unbiased estimator can fail


def test_diagnostics_reject_bad_input():
    from pyro_lvm.evaluation import gradient_diagnostics
    from pyro_lvm.models import VAE

    m, x = _tiny_catvae()
    with pytest.raises(ValueError, match="unknown estimators"):
        gradient_diagnostics(m, x, ["nope"])
    with pytest.raises(ValueError, match="num_draws"):
        gradient_diagnostics(m, x, ["st"], num_draws=1)
    with pytest.raises(TypeError, match="discrete-latent"):
        gradient_diagnostics(VAE(input_dim=12), x)


@pytest.mark.parametrize("case", ["bernvae-reinforce", "catvae-reinforce", "two-state"])
def test_score_function_terms_are_pyros_trace_elbo_on_the_same_traces(case):
    """The ELBO's terms for guides without rsample equal Trace_ELBO's particle (loss and surrogate
    gradients) on the same traces, with a minibatch scale and a KL weight; the loss is a tensor."""
    import copy

    from pyro.infer import Trace_ELBO

    from pyro_lvm.base import param_store_registration
    from pyro_lvm.objectives.elbo import _pyro_particle_terms, score_function_terms_from_traces
    from pyro_lvm.objectives.kl_weight import weight_latents
    from pyro_lvm.objectives.traces import trace_pair

    if case == "two-state":
        net, x = TwoStateModel(), X
    else:
        from cases import MODEL_CASES

        make_model, make_data = MODEL_CASES[case]
        net, x = make_model(), make_data(6)
    pyro.set_rng_seed(0)
    with param_store_registration(False):
        traces = trace_pair(weight_latents(net.model, 0.7), weight_latents(net.guide, 0.7), (x,),
                            {"data_size": 50}, None, 1)
    ours = score_function_terms_from_traces(*copy.copy(traces))
    theirs = _pyro_particle_terms(Trace_ELBO(), *(t.copy() for t in traces), num_particles=1)  # Pyro's
    assert isinstance(ours[0], torch.Tensor) and not ours[0].requires_grad
    assert ours[0].item() == pytest.approx(theirs[0].item(), rel=1e-5)
    params = [p for p in net.parameters() if p.requires_grad]
    g_ours = torch.autograd.grad(ours[1], params, retain_graph=True, allow_unused=True)
    g_theirs = torch.autograd.grad(theirs[1], params, allow_unused=True)
    for a, b in zip(g_ours, g_theirs):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    assert any(a is not None and a.abs().sum() > 0 for a in g_ours)
