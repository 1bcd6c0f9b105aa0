"""One suite over every registered model x every objective, ours and Pyro's (the scikit-learn habit)."""

import copy
import warnings

import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive, RenyiELBO

from pyro_lvm import MODELS
from pyro_lvm.objectives import OBJECTIVES, InvalidObjectiveError, Objective
from pyro_lvm.train import TrainConfig, Trainer

from cases import (
    ALL_OBJECTIVES,
    COVERS,
    MODEL_CASES,
    OBJECTIVE_CASES,
    OBJECTIVE_COVERS,
    STOCK_CASES,
    TRAINING_PREFERENCE,
    UNTRAINED,
    expected_refusal,
    host_read,
)


def test_every_registered_model_has_a_case():
    assert set(MODELS.names()) == set(COVERS), "add the new model to tests/cases.py"
    for cases in COVERS.values():
        assert all(c in MODEL_CASES for c in cases)


def test_every_registered_objective_has_a_case():
    assert set(OBJECTIVES.names()) == OBJECTIVE_COVERS
    covered = {name.split("-")[0] for name in OBJECTIVE_CASES}
    assert covered == OBJECTIVE_COVERS


#: every (model case, objective case) pair, ours and Pyro's
ALL_PAIRS = [(m, o) for m in sorted(MODEL_CASES) for o in ALL_OBJECTIVES]
#: the pairs that must train
VALID = [(m, o) for m, o in ALL_PAIRS if expected_refusal(m, o) is None]
#: the pairs of our own objectives that must train
PAIRS = [(m, o) for m, o in VALID if o in OBJECTIVE_CASES]


def test_every_model_has_an_objective():
    assert {m for m, _ in PAIRS} == set(MODEL_CASES)


@pytest.fixture(autouse=True)
def _nothing_to_enumerate_is_fine():
    """Pyro's own note that TraceEnum_ELBO found nothing to enumerate (it is then Trace_ELBO)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites configured for enumeration")
        yield


def _steps(model, objective, x, steps=3, **kwargs):
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-2}), objective)
    return [svi.step(x, **kwargs) for _ in range(steps)]


@pytest.mark.parametrize("model_case, objective_case", ALL_PAIRS)
def test_pyro_svi_trains_or_refuses(model_case, objective_case):
    """Stock ``pyro.infer.SVI`` with each objective: every parameter moves, or a clear refusal."""
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(8)
    objective = ALL_OBJECTIVES[objective_case]()
    phrase = expected_refusal(model_case, objective_case)
    if phrase is not None:
        with pytest.raises(InvalidObjectiveError, match=phrase) as info:
            _steps(model, objective, x, steps=1)
        message = str(info.value)
        assert "use " in message and "\n" not in message, message  # one line that says what to do
        return
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = _steps(model, objective, x)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses), losses
    store = pyro.get_param_store()
    assert {f"{model.pyro_name}$$${n}" for n, p in model.named_parameters() if p.requires_grad} <= set(store.keys())
    skip = UNTRAINED.get((model_case, objective_case))
    for name, p in model.named_parameters():
        if not p.requires_grad or (skip and name.startswith(skip)):
            continue
        assert not torch.equal(before[name], p), f"{name} did not move"
        assert torch.isfinite(p).all(), name


@pytest.mark.parametrize("model_case, objective_case", PAIRS)
def test_loss_and_gradients(model_case, objective_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(8)
    objective = OBJECTIVE_CASES[objective_case][0]()
    terms = objective.terms(model.model, model.guide, x, step=3)
    assert terms.loss.dim() == 0 and torch.isfinite(terms.loss)
    assert not terms.loss.requires_grad
    terms.surrogate.backward()
    skip = UNTRAINED.get((model_case, objective_case))
    for name, p in model.named_parameters():
        if not p.requires_grad or (skip and name.startswith(skip)):
            continue
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("model_case, objective_case", [(m, o) for m, o in PAIRS if o in ("elbo", "iwae", "vimco")])
def test_differentiable_loss_is_the_loss_with_the_estimators_gradient(model_case, objective_case):
    """``differentiable_loss`` has the value of ``terms().loss`` and the gradient of ``terms().surrogate``."""
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(8)
    objective = OBJECTIVE_CASES[objective_case][0]()
    state = copy.deepcopy(model.state_dict())
    pyro.set_rng_seed(3)
    terms = objective.terms(model.model, model.guide, x, data_size=40)
    terms.surrogate.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    pyro.set_rng_seed(3)
    value = objective.differentiable_loss(model.model, model.guide, x, data_size=40)
    value.backward()
    assert torch.allclose(value.detach(), terms.loss, rtol=1e-5)
    for n, g in grads.items():
        assert torch.allclose(dict(model.named_parameters())[n].grad, g, rtol=1e-4, atol=1e-6), n


def _applicable_scaling(model_case, objective_case):
    return objective_case != "RenyiELBO"  # refuses any scaled site: tested below


@pytest.mark.parametrize("model_case, objective_case", [(m, o) for m, o in VALID if _applicable_scaling(m, o)])
def test_minibatch_scaling(model_case, objective_case):
    """With data_size=N a batch of B counts N/B times, for every objective, ours and Pyro's."""
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(8)
    objective = ALL_OBJECTIVES[objective_case]()
    state = copy.deepcopy(model.state_dict())  # a call may update state (an EMA codebook)

    def loss(**kwargs):
        if isinstance(objective, Objective):
            return objective.terms(model.model, model.guide, x, **kwargs).loss
        return torch.tensor(objective.loss(model.model, model.guide, x, **kwargs))

    pyro.set_rng_seed(1)
    full = loss()
    model.load_state_dict(state)
    pyro.set_rng_seed(1)
    scaled = loss(data_size=80)
    assert torch.allclose(scaled, 10 * full, rtol=1e-4), (scaled, full)


def test_renyi_elbo_refuses_minibatch_scaling_and_says_what_to_use():
    from pyro_lvm.models import VAE

    vae = VAE(input_dim=12, latent_dim=3, hidden=(16,))
    x = torch.bernoulli(torch.full((8, 12), 0.3))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), RenyiELBO(num_particles=3))
    assert torch.isfinite(torch.tensor(svi.step(x)))  # the whole data set: a valid bound
    with pytest.raises(InvalidObjectiveError, match=r"minibatch scale N/B.*pyro_lvm\.objectives\.IWAE"):
        svi.step(x, data_size=80)


@pytest.mark.parametrize("model_case", sorted(MODEL_CASES))
def test_predictive_generates_and_reconstructs(model_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(5)
    prior_pred = Predictive(model.model, num_samples=3)(num_samples=4)
    assert prior_pred["x"].shape[0] == 3
    width = model.observed_values(x).shape[-1]  # a row without its label column, if it has one
    if model.data_support == "tokens":  # sentences: as long as each decoding runs
        assert prior_pred["x"].shape[-2] == 4 and (prior_pred["x"] < model.input_dim).all()
    else:
        assert prior_pred["x"].shape[-2:] == (4, width)
    if not model.latent_sites:
        return
    posterior_pred = Predictive(model.model, guide=model.guide, num_samples=2)(x)  # its latent sites
    assert posterior_pred and all(v.shape[0] == 2 for v in posterior_pred.values())
    if model.data_support == "tokens":
        assert model.generate(6).shape[0] == 6 and model.reconstruct(x).shape[0] == x.shape[0]
        return
    assert model.generate(6).shape == (6, width)
    assert model.reconstruct(x).shape == (x.shape[0], width)


@pytest.mark.parametrize("model_case", sorted(MODEL_CASES))
def test_config_and_state_round_trip(model_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(5)
    clone = type(model).from_config(model.config_dict())
    clone.load_state_dict(model.state_dict())
    assert clone.pyro_name != model.pyro_name  # two models never share parameters in Pyro's store
    with pytest.raises(ValueError, match="unknown"):
        type(model).from_config({**model.config_dict(), "nonsense": 1})
    if not model.latent_sites:
        for a, b in zip(model.state_dict().values(), clone.state_dict().values()):
            assert torch.equal(a, b)
        return
    draws = []
    for m in (model, clone):  # the same draw and density (a flow guide scores its own draws only)
        torch.manual_seed(0)
        q = m.encode(x)
        z = q.sample()
        draws.append((z, q.log_prob(z)))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


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
    if model.data_support == "binary":
        with pytest.raises(ValueError, match="binary"):
            model.check_data(x * 0.5)


def _training_pairs():
    """Per model case: its own default objective, and the first of TRAINING_PREFERENCE that applies
    (every valid pair takes SVI steps in test_pyro_svi_trains_or_refuses)."""
    pairs = set()
    for m in sorted(MODEL_CASES):
        valid = [o for mm, o in PAIRS if mm == m]
        pairs.add((m, MODEL_CASES[m][0]().default_objective))
        pairs.add((m, next(o for o in TRAINING_PREFERENCE if o in valid)))
    return sorted(pairs)


@pytest.mark.parametrize("model_case, objective_case", _training_pairs())
def test_training_improves_the_objective(model_case, objective_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(200)
    objective = OBJECTIVE_CASES[objective_case][0]()
    trainer = Trainer(model, objective, x, valid=x[:50],
                      config=TrainConfig(epochs=8, batch_size=25, lr=1e-2, progress=False))
    history = trainer.fit()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("model_case, objective_case",
                         [(m, o) for m, o in ALL_PAIRS if expected_refusal(m, o) and o in OBJECTIVE_CASES])
def test_trainer_refuses_before_training(model_case, objective_case):
    """An invalid pair is refused when the Trainer is built, with nothing trained or changed."""
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(20)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidObjectiveError, match=expected_refusal(model_case, objective_case)):
        Trainer(model, OBJECTIVE_CASES[objective_case][0](), x, config=TrainConfig(progress=False))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("objective_case", sorted(STOCK_CASES))
def test_trainer_takes_pyros_own_elbos(objective_case):
    make_model, make_data = MODEL_CASES["vae-bernoulli"]
    model, x = make_model(), make_data(200)
    if expected_refusal("vae-bernoulli", objective_case):
        pytest.skip("refused for this model")
    trainer = Trainer(model, STOCK_CASES[objective_case](), x, valid=x[:50],
                      config=TrainConfig(epochs=6, batch_size=50 if objective_case != "RenyiELBO" else 200,
                                         lr=1e-2, progress=False))
    history = trainer.fit()
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("model_case, objective_case", PAIRS)
def test_every_pair_has_a_validation_loss(model_case, objective_case):
    """The validation loss (the objective under ``torch.no_grad()`` with the model in ``eval()``
    mode, e.g. exact discrete latents where training relaxes them) is a finite number for every
    pair that trains. (Free bits refused the exact latents of the relaxed discrete VAEs here,
    so their first epoch ended in an error; the CUDA test found it.)"""
    make_model, make_data = MODEL_CASES[model_case]
    x = make_data(24)
    trainer = Trainer(make_model(), OBJECTIVE_CASES[objective_case][0](), x, valid=x[:8],
                      config=TrainConfig(epochs=0, batch_size=8, progress=False))
    loss = trainer.validate()
    assert isinstance(loss, float) and loss == loss and abs(loss) != float("inf")


@pytest.mark.cuda
@pytest.mark.parametrize("model_case, objective_case", PAIRS)
def test_cuda_step_and_evaluation(model_case, objective_case):
    from pyro_lvm.evaluation import evaluate

    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model(), make_data(64)
    trainer = Trainer(model, OBJECTIVE_CASES[objective_case][0](), x, valid=x[:16],
                      config=TrainConfig(epochs=1, batch_size=16, device="cuda", progress=False))
    trainer.fit()
    assert next(model.parameters()).is_cuda
    if not hasattr(model, "log_likelihood"):
        result = evaluate(model, x.cuda(), num_particles=20)
        assert all(v == v for v in result.values())
    else:
        assert torch.isfinite(model.log_likelihood(x.cuda())).all()


@pytest.mark.cuda
@pytest.mark.parametrize("model_case, objective_case", [(m, o) for m, o in VALID if o in STOCK_CASES])
def test_cuda_pyro_svi(model_case, objective_case):
    make_model, make_data = MODEL_CASES[model_case]
    model, x = make_model().cuda(), make_data(16).cuda()
    losses = _steps(model, ALL_OBJECTIVES[objective_case](), x, steps=2)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses)



#: pairs whose training step must be recorded and replayed (pyro_lvm.traced): a change that sends
#: them back to the eager step, e.g. a new host synchronisation in a model, fails here
REPLAYED = {(m, o) for m in ("vae-bernoulli", "vae-gaussian", "vae-conv-dlogistic", "vae-vamp", "vae-iaf",
                             "vae-planar", "hvae", "ppca")
            for o in ("elbo", "elbo-3particles-beta", "iwae", "iwae-beta-annealed", "meanfield")} | {
    ("bernvae-vimco", "vimco"), ("catvae-vimco", "vimco")} | {
    (m, "iwae-dreg") for m in ("vae-bernoulli", "vae-gaussian", "vae-conv-dlogistic", "vae-vamp", "ppca")} | {
    (m, o) for m in ("vqvae-gaussian", "vqvae-ema", "vqvae-bernoulli", "vqvae-conv")  # after their first step
    for o in ("elbo", "elbo-3particles-beta", "iwae", "iwae-beta-annealed", "vimco")} | {
    (m, o) for m in ("bernvae-vimco", "catvae-vimco") for o in ("elbo", "elbo-3particles-beta")}  # score functions


@pytest.mark.parametrize("model_case, objective_case", PAIRS)
def test_recorded_steps_are_the_eager_steps(model_case, objective_case):
    """Training with the loss recorded and replayed (the default) gives bit for bit the parameters
    of training with Pyro's handlers at every step (``TrainConfig(trace=False)``), including the
    last, smaller minibatch of each epoch and annealed KL weights."""
    from pyro_lvm.traced import why_not_traced

    make_model, make_data = MODEL_CASES[model_case]
    x = make_data(25)
    declared = why_not_traced(make_model(), OBJECTIVE_CASES[objective_case][0]())
    if declared is not None:  # never recorded: the Trainer says why, and trains as with trace=False
        assert (model_case, objective_case) not in REPLAYED
        trainer = Trainer(make_model(), OBJECTIVE_CASES[objective_case][0](), x,
                          config=TrainConfig(epochs=0, batch_size=10, progress=False))
        assert trainer.traced is None and trainer.not_traced == declared
        return
    runs = {}
    for trace in (True, False):
        torch.manual_seed(0)
        model = make_model()
        trainer = Trainer(model, OBJECTIVE_CASES[objective_case][0](), x,
                          config=TrainConfig(epochs=2, batch_size=10, lr=1e-2, progress=False, trace=trace))
        trainer.fit()
        runs[trace] = (model.state_dict(), trainer)
    for k, v in runs[False][0].items():
        assert torch.equal(v, runs[True][0][k]), k
    traced = runs[True][1].traced
    if (model_case, objective_case) in REPLAYED:
        assert traced.failed is None and traced.graphs == 2  # batches of 10 and 5


@pytest.mark.parametrize("model_case, objective_case", PAIRS)
def test_a_training_step_reads_no_value_on_the_host(model_case, objective_case, monkeypatch):
    """After its first steps (checks, recording, a codebook initialised from data), a training step
    of the Trainer computes the loss and the gradients without reading any tensor's value on the
    host (item, float, int, bool, tolist): on a GPU each such read waits for the device. The pairs
    of ``HOST_READS`` do read one, and are checked to, so that the list stays true."""
    make_model, make_data = MODEL_CASES[model_case]
    x = make_data(16)
    trainer = Trainer(make_model(), OBJECTIVE_CASES[objective_case][0](), x,
                      config=TrainConfig(epochs=1, batch_size=8, progress=False))
    trainer.model.train()
    with pyro.validation_enabled(False):  # as in fit(): the data is checked at the public boundary
        for _ in range(2):
            trainer.train_step(x[:8])

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor's value was read on the host during a training step")

    why = host_read(model_case, objective_case)
    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__float__", "__bool__", "__int__", "__index__", "cpu", "numpy"):
            m.setattr(torch.Tensor, name, refuse)  # (cpu: a copy to the host, such as sequence packing's)
        with pyro.validation_enabled(False):
            if why is None:
                loss = trainer.train_step(x[8:])
            else:
                with pytest.raises(AssertionError, match="read on the host"):
                    trainer.train_step(x[8:])
                return
    assert torch.isfinite(loss)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype feature")  # torch's own notice
@pytest.mark.parametrize("model_case, objective_case", [(m, o) for m, o in PAIRS if host_read(m, o) is None])
def test_a_training_step_does_not_synchronise_on_cuda(model_case, objective_case):
    """On a GPU, ``torch.cuda.set_sync_debug_mode("error")`` finds no synchronisation in a training
    step of a pair that reads nothing on the host (after its first steps), whatever the way."""
    make_model, make_data = MODEL_CASES[model_case]
    x = make_data(16).cuda()
    trainer = Trainer(make_model(), OBJECTIVE_CASES[objective_case][0](), x,
                      config=TrainConfig(epochs=1, batch_size=8, device="cuda", progress=False))
    trainer.model.train()
    with pyro.validation_enabled(False):
        for _ in range(2):
            trainer.train_step(x[:8])
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            trainer.train_step(x[8:])
        finally:
            torch.cuda.set_sync_debug_mode("default")
