"""One suite over every registered model x every objective (the scikit-learn habit)."""

import copy

import pyro
import pytest
import torch
from pyro.infer import Predictive
from torch.distributions import Independent

from pyro_lvm import MODELS
from pyro_lvm.objectives import OBJECTIVES
from pyro_lvm.train import TrainConfig, Trainer

from cases import COVERS, MODEL_CASES, OBJECTIVE_CASES, OBJECTIVE_COVERS, TRAINING_PREFERENCE


def test_every_registered_model_has_a_case():
    assert set(MODELS.names()) == set(COVERS), "add the new model to tests/cases.py"
    for cases in COVERS.values():
        assert all(c in MODEL_CASES for c in cases)


def test_every_registered_objective_has_a_case():
    assert set(OBJECTIVES.names()) == OBJECTIVE_COVERS
    covered = {name.split("-")[0] for name in OBJECTIVE_CASES}
    assert covered == OBJECTIVE_COVERS


def _supported(model, objective_case):
    names = model.supported_objectives
    return names is None or objective_case.split("-")[0] in names


#: every (model case, objective case) pair whose model declares the objective
PAIRS = [(m, o) for m in sorted(MODEL_CASES) for o in sorted(OBJECTIVE_CASES)
         if _supported(MODEL_CASES[m][0](), o)]


def test_every_model_has_an_objective():
    assert {m for m, _ in PAIRS} == set(MODEL_CASES)


def _applicable(model, objective_case, x):
    _, needs_independent = OBJECTIVE_CASES[objective_case]
    if not needs_independent or not model.latent_sites:
        return True
    return isinstance(model.encode(x[:1]), Independent)


@pytest.mark.parametrize("model_case, objective_case", PAIRS)
def test_loss_and_gradients(model_case, objective_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(8)
    objective = OBJECTIVE_CASES[objective_case][0]()
    if not _applicable(model, objective_case, x):
        with pytest.raises(ValueError, match="independent dimensions"):
            objective(model.model, model.guide, x)
        return
    terms = objective(model.model, model.guide, x, step=3)
    assert terms.loss.dim() == 0 and torch.isfinite(terms.loss)
    assert not terms.loss.requires_grad
    terms.surrogate.backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:  # e.g. an EMA codebook, updated without gradients
            continue
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("model_case, objective_case",
                         [(m, o) for m, o in PAIRS if _applicable(MODEL_CASES[m][0](), o, MODEL_CASES[m][1](2))])
def test_minibatch_scaling(model_case, objective_case):
    """With data_size=N a batch of B counts N/B times, for every objective."""
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(8)
    objective = OBJECTIVE_CASES[objective_case][0]()
    state = copy.deepcopy(model.state_dict())  # a call may update state (an EMA codebook)
    pyro.set_rng_seed(1)
    full = objective(model.model, model.guide, x).loss
    model.load_state_dict(state)
    pyro.set_rng_seed(1)
    scaled = objective(model.model, model.guide, x, data_size=80).loss
    assert torch.allclose(scaled, 10 * full, rtol=1e-5), (scaled, full)


@pytest.mark.parametrize("model_case", sorted(MODEL_CASES))
def test_predictive_generates_and_reconstructs(model_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(5)
    prior_pred = Predictive(model.model, num_samples=3)(num_samples=4)
    assert prior_pred["x"].shape[0] == 3
    if model.data_support == "tokens":  # sentences: as long as each decoding runs
        assert prior_pred["x"].shape[-2] == 4 and (prior_pred["x"] < model.input_dim).all()
    else:
        assert prior_pred["x"].shape[-2:] == (4, model.input_dim)
    if not model.latent_sites:
        return
    posterior_pred = Predictive(model.model, guide=model.guide, num_samples=2, return_sites=["z"])(x)
    assert posterior_pred["z"].shape[0] == 2
    if model.data_support == "tokens":
        assert model.generate(6).shape[0] == 6 and model.reconstruct(x).shape[0] == x.shape[0]
        return
    assert model.generate(6).shape == (6, model.input_dim)
    assert model.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("model_case", sorted(MODEL_CASES))
def test_config_and_state_round_trip(model_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(5)
    clone = type(model).from_config(model.config_dict())
    clone.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="unknown"):
        type(model).from_config({**model.config_dict(), "nonsense": 1})
    if not model.latent_sites:
        for a, b in zip(model.state_dict().values(), clone.state_dict().values()):
            assert torch.equal(a, b)
        return
    q = model.encode(x)
    z = q.sample()
    assert torch.equal(q.log_prob(z), clone.encode(x).log_prob(z))
    with pytest.raises(ValueError, match="unknown"):
        type(model).from_config({**model.config_dict(), "nonsense": 1})


@pytest.mark.parametrize("model_case", sorted(MODEL_CASES))
def test_check_data_rejects_bad_input(model_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(5)
    assert torch.equal(model.check_data(x), x)
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.check_data(x.numpy())
    if model.data_support == "tokens":  # sentences: more in tests/test_text.py
        with pytest.raises(ValueError, match="shape"):
            model.check_data(x[0])
        with pytest.raises(ValueError, match="torch.long"):
            model.check_data(x.float())
        return
    with pytest.raises(ValueError, match="shape"):
        model.check_data(x[:, :-1])
    with pytest.raises(ValueError, match="NaN"):
        model.check_data(torch.full_like(x, float("nan")))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.check_data(x.numpy())
    if model.data_support == "binary":
        with pytest.raises(ValueError, match="binary"):
            model.check_data(x * 0.5)


@pytest.mark.parametrize("model_case, objective_case",
                         [(m, o) for m, o in PAIRS if o in TRAINING_PREFERENCE])
def test_training_improves_the_objective(model_case, objective_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(200)
    objective = OBJECTIVE_CASES[objective_case][0]()
    trainer = Trainer(model, objective, x, valid=x[:50],
                      config=TrainConfig(epochs=8, batch_size=25, lr=1e-2, progress=False))
    history = trainer.fit()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.cuda
@pytest.mark.parametrize("model_case, objective_case", PAIRS)
def test_cuda_step_and_evaluation(model_case, objective_case):
    from pyro_lvm.evaluation import evaluate

    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(64)
    if not _applicable(model, objective_case, x):
        pytest.skip("objective needs independent latent dimensions")
    trainer = Trainer(model, OBJECTIVE_CASES[objective_case][0](), x, valid=x[:16],
                      config=TrainConfig(epochs=1, batch_size=16, device="cuda", progress=False))
    trainer.fit()
    assert next(model.parameters()).is_cuda
    if not hasattr(model, "log_likelihood"):
        result = evaluate(model, x.cuda(), num_particles=20)
        assert all(v == v for v in result.values())
    else:
        assert torch.isfinite(model.log_likelihood(x.cuda())).all()
