"""The Gaussian mixture's covariance structures against closed forms."""

import pyro
import pytest
import torch

from pyro_lvm.models import GMM
from pyro_lvm.models.covariance import COVARIANCES

K, D = 3, 4


def _spd(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(K, D, D, generator=g, dtype=torch.float64)
    return a @ a.transpose(-1, -2) + 0.5 * torch.eye(D, dtype=torch.float64)


def _restricted(cov, name):
    """The covariances a structure can hold: all, their diagonal, or its mean times I."""
    var = cov.diagonal(dim1=-2, dim2=-1)
    return {"full": cov, "diag": torch.diag_embed(var),
            "spherical": var.mean(-1)[:, None, None] * torch.eye(D, dtype=cov.dtype)}[name]


def test_the_structures_are_those_the_config_accepts():
    assert tuple(COVARIANCES) == ("full", "diag", "spherical")
    with pytest.raises(ValueError, match="covariance must be one of"):
        GMM(input_dim=2, components=2, covariance="tied")


@pytest.mark.parametrize("name", list(COVARIANCES))
@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_raw_holds_the_covariances_it_was_set_from(name, floor):
    s = COVARIANCES[name]
    cov = _restricted(_spd(0), name)
    L = s.scale_tril(s.raw_from(cov, floor), floor, D)
    assert L.shape == (K, D, D) and torch.equal(L, L.tril())
    torch.testing.assert_close(L @ L.transpose(-1, -2), cov)


@pytest.mark.parametrize("name", list(COVARIANCES))
def test_the_initial_raw_gives_identity_covariances(name):
    s = COVARIANCES[name]
    L = s.scale_tril(s.raw_init(K, D), 0.0, D)
    torch.testing.assert_close(L, torch.eye(D).expand(K, D, D))


@pytest.mark.parametrize("name", list(COVARIANCES))
def test_m_step_is_the_weighted_covariance_restricted_to_the_structure(name):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, D, generator=g, dtype=torch.float64)
    resp = torch.softmax(torch.randn(50, K, generator=g, dtype=torch.float64), -1)
    counts = resp.sum(0)
    locs = (resp.T @ x) / counts[:, None]
    expected = torch.stack([sum(resp[n, k] * torch.outer(x[n] - locs[k], x[n] - locs[k]) for n in range(50))
                            / counts[k] for k in range(K)])
    reg = 1e-3
    got = COVARIANCES[name].m_step(x, resp, locs, counts, reg)
    torch.testing.assert_close(got, _restricted(expected, name) + reg * torch.eye(D, dtype=x.dtype))


@pytest.mark.parametrize("name", list(COVARIANCES))
def test_nuts_starts_at_the_fitted_covariances(name):
    """The prior's sites at a fitted model's covariances give back its Cholesky factors."""
    s = COVARIANCES[name]
    cov = _restricted(_spd(2), name)
    values = s.initial_values(cov)
    torch.testing.assert_close(s.scale_tril_of_draws(values, D), torch.linalg.cholesky(cov))
    draws = {k: v.unsqueeze(0).expand(5, *v.shape) for k, v in values.items()}  # 5 equal draws
    assert s.scale_tril_of_draws(draws, D).shape == (5, K, D, D)


@pytest.mark.parametrize("name, dim, sites", [("full", D, {"scales", "corr_cholesky"}), ("full", 1, {"scales"}),
                                               ("diag", D, {"scales"}), ("spherical", D, {"scales"})])
def test_the_prior_samples_lower_triangular_factors_with_the_structures_sites(name, dim, sites):
    loc, scale = torch.zeros(dim), torch.full((dim,), 2.0)

    def model():
        with pyro.plate("components", K, dim=-1):
            return COVARIANCES[name].sample_scale_tril(loc, scale, 2.0)

    trace = pyro.poutine.trace(model).get_trace()
    L = trace.nodes["_RETURN"]["value"]
    assert {n for n, site in trace.nodes.items() if site["type"] == "sample"} - {"components"} == sites
    assert L.shape == (K, dim, dim) and torch.equal(L, L.tril()) and (L.diagonal(dim1=-2, dim2=-1) > 0).all()
    if name != "full":  # no correlation
        assert torch.equal(L, torch.diag_embed(L.diagonal(dim1=-2, dim2=-1)))
    if name == "spherical":
        assert trace.nodes["scales"]["value"].shape == (K,)


@pytest.mark.parametrize("name", list(COVARIANCES))
def test_free_parameters_count_what_raw_can_vary(name):
    """The BIC's count: the rank of the map from ``raw`` to the covariances, at a generic point."""
    s = COVARIANCES[name]
    raw = s.raw_init(1, D).double() + 0.1 * torch.randn(s.raw_init(1, D).shape, dtype=torch.float64)
    if name == "full":
        raw = raw.tril()  # the entries above the diagonal are not used

    def covariance(r):
        L = s.scale_tril(r, 0.0, D)
        return (L @ L.transpose(-1, -2)).flatten()

    jacobian = torch.autograd.functional.jacobian(covariance, raw).reshape(D * D, -1)
    assert torch.linalg.matrix_rank(jacobian).item() == s.free_parameters(D)
