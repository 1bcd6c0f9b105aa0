"""pyro_lvm models the Pyro way: stock SVI and ELBOs, our objectives inside SVI, the Trainer and SVI agreeing."""

import copy

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

from pyro_lvm.data import load_dataset
from pyro_lvm.models import GMM, LSTMLM, PPCA, VAE, BernVAE, CatVAE, TextVAE
from pyro_lvm.objectives import ELBO, IWAE, VIMCO, LinearSchedule, MeanFieldELBO
from pyro_lvm.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def mnist():
    """The embedded binarized MNIST (5000 real training digits)."""
    return load_dataset("binarized_mnist_small").train


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ------------------------------------------------------------ the Trainer and SVI
def _svi_run(model, loss, x, epochs, batch_size, seed, lr=1e-3):
    """What the Trainer does, written with pyro.infer.SVI: the same seed and batch order."""
    pyro.set_rng_seed(seed)
    order = torch.Generator().manual_seed(seed)
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": lr}), loss)
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=order).split(batch_size):
            svi.step(x[idx], data_size=x.shape[0])


@pytest.mark.parametrize("trainer_objective, svi_loss", [
    (lambda: ELBO(), lambda: ELBO()),
    (lambda: ELBO(), lambda: Trace_ELBO()),  # our fast path and Pyro's own estimator
    (lambda: Trace_ELBO(), lambda: Trace_ELBO()),  # the Trainer takes Pyro's ELBOs too
    (lambda: MeanFieldELBO(), lambda: TraceMeanField_ELBO()),
    (lambda: IWAE(num_particles=5, gradient="dreg"), lambda: IWAE(num_particles=5, gradient="dreg")),
    (lambda: ELBO(annealing=LinearSchedule(steps=6, start=0.1)),  # the step count anneals the same way
     lambda: ELBO(annealing=LinearSchedule(steps=6, start=0.1))),
], ids=["elbo", "elbo-vs-Trace_ELBO", "Trace_ELBO", "meanfield-vs-TraceMeanField_ELBO", "iwae-dreg", "annealed"])
def test_trainer_and_pyro_svi_take_the_same_steps(trainer_objective, svi_loss, mnist):
    x = mnist[:300]
    a = VAE(input_dim=784, latent_dim=4, hidden=(32,))
    b, initial = copy.deepcopy(a), _params(a)
    trainer = Trainer(a, trainer_objective(), x, config=TrainConfig(epochs=2, batch_size=100, lr=1e-3, seed=7,
                                                                     progress=False))
    trainer.fit()
    _svi_run(b, svi_loss(), x, epochs=2, batch_size=100, seed=7)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert not torch.allclose(p, initial[name], atol=1e-4), name  # six steps moved it
        assert torch.allclose(p, q, atol=2e-6, rtol=1e-5), (name, (p - q).abs().max())


def test_our_objective_counts_its_steps_under_svi():
    vae = VAE(input_dim=6, latent_dim=2, hidden=(8,))
    objective = ELBO(annealing=LinearSchedule(steps=10, start=0.1))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), objective)
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    assert objective.kl_weight() == pytest.approx(0.1)
    for _ in range(5):
        svi.step(x)
    assert objective.step == 5 and objective.kl_weight() == pytest.approx(0.55)
    svi.evaluate_loss(x)  # evaluating is no training step
    assert objective.step == 5


# -------------------------------------------------------------- the param store
def test_two_models_never_share_parameters(mnist):
    x = mnist[:100]
    a, b = VAE(input_dim=784, latent_dim=4, hidden=(16,)), VAE(input_dim=784, latent_dim=4, hidden=(16,))
    assert a.pyro_name != b.pyro_name
    b_before = _params(b)
    svi = SVI(a.model, a.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        svi.step(x)
    assert all(torch.equal(b_before[n], p) for n, p in b.named_parameters())  # b untouched
    names = set(pyro.get_param_store().keys())
    assert names and all(n.startswith(a.pyro_name + "$$$") for n in names)
    assert copy.deepcopy(a).pyro_name != a.pyro_name


def test_clearing_the_param_store_between_uses_is_harmless(mnist):
    x = mnist[:100]
    vae = VAE(input_dim=784, latent_dim=4, hidden=(16,))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    svi.step(x)
    pyro.clear_param_store()
    before = _params(vae)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    svi.step(x)
    assert all(not torch.equal(before[n], p) for n, p in vae.named_parameters())  # still trains
    store = pyro.get_param_store()
    assert all(store[f"{vae.pyro_name}$$${n}"] is p for n, p in vae.named_parameters())  # the module's own


def test_jit_trace_elbo_trains_a_vae(mnist):
    vae = VAE(input_dim=784, latent_dim=4, hidden=(16,))
    before = _params(vae)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}),
              JitTrace_ELBO(max_plate_nesting=1, ignore_jit_warnings=True))
    for start in range(0, 500, 100):
        svi.step(mnist[start:start + 100], data_size=5000)
    assert all(not torch.equal(before[n], p) for n, p in vae.named_parameters())


# ------------------------------------------- 200 steps of stock SVI on real data
def _batches(x, batch_size, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    done = 0
    while True:
        for idx in torch.randperm(x.shape[0], generator=g).split(batch_size):
            if done == steps:
                return
            done += 1
            yield x[idx]


def _two_hundred_steps(model, loss, train, held_out, batch_size, skip=None, eval_loss=None):
    """200 steps of SVI; every parameter moved (but ``skip``) and the held-out loss went down."""
    eval_loss = eval_loss or loss
    pyro.set_rng_seed(0)
    before = _params(model)
    with torch.no_grad():
        pyro.set_rng_seed(1)
        start = eval_loss.loss(model.model, model.guide, held_out)
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}), loss)
    for x in _batches(train, batch_size, 200):
        svi.step(x, data_size=train.shape[0])
    with torch.no_grad():
        pyro.set_rng_seed(1)
        end = eval_loss.loss(model.model, model.guide, held_out)
    still = [n for n, p in model.named_parameters() if torch.equal(before[n], p)
             and not (skip and n.startswith(skip))]
    assert not still, f"parameters that did not move: {still}"
    assert end < start, (start, end)


@pytest.mark.parametrize("name, make, loss, skip", [
    ("vae", lambda: VAE(input_dim=784, latent_dim=8, hidden=(64,)), Trace_ELBO, None),
    ("vae-iwae", lambda: VAE(input_dim=784, latent_dim=8, hidden=(64,)), lambda: IWAE(num_particles=5), None),
    ("bernvae-st", lambda: BernVAE(input_dim=784, latent_dim=16, hidden=(64,), estimator="st"), Trace_ELBO, None),
    ("bernvae-reinforce", lambda: BernVAE(input_dim=784, latent_dim=16, hidden=(64,), estimator="reinforce"),
     lambda: TraceGraph_ELBO(max_plate_nesting=1), None),
    ("bernvae-vimco", lambda: BernVAE(input_dim=784, latent_dim=16, hidden=(64,), estimator="vimco"),
     lambda: VIMCO(num_particles=5), None),
    ("catvae-st", lambda: CatVAE(input_dim=784, num_latents=4, num_classes=5, hidden=(64,), estimator="st"),
     Trace_ELBO, None),
    ("ppca", lambda: PPCA(input_dim=784, latent_dim=8), Trace_ELBO, None),
])
def test_stock_svi_trains_image_models_on_real_data(name, make, loss, skip, mnist):
    train, held_out = mnist[:4000], mnist[4000:4500]
    _two_hundred_steps(make(), loss(), train, held_out, batch_size=100, skip=skip,
                       eval_loss=Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
                       if name.startswith(("bernvae", "catvae")) else None)


def test_stock_svi_trains_a_gmm_on_real_data(mnist):
    # the assignment summed out: TraceEnum_ELBO is exact, so its loss is the negative log-likelihood;
    # the digits as 4 x 4 block means (16 numbers) keep the covariances small
    blocks = mnist.reshape(-1, 4, 7, 4, 7).mean((2, 4)).reshape(-1, 16)
    gmm = GMM(input_dim=16, components=10, covariance="diag")
    _two_hundred_steps(gmm, TraceEnum_ELBO(max_plate_nesting=1), blocks[:4000], blocks[4000:4500], batch_size=100)


@pytest.mark.parametrize("make", [
    lambda v: TextVAE(vocab_size=v, embed_dim=16, hidden_dim=32, encoder_hidden_dim=32, latent_dim=4),
    lambda v: LSTMLM(vocab_size=v, embed_dim=16, hidden_dim=32),
], ids=["textvae", "lstmlm"])
def test_stock_svi_trains_sentence_models_on_ptb(make, data_dir):
    # PTB sentences of at most 20 words, the 2000 most frequent words (the others <unk>): a small softmax
    data = load_dataset("ptb", data_dir, max_vocab=2000, max_length=20)
    model = make(len(data.vocab))
    _two_hundred_steps(model, Trace_ELBO(), data.train, data.valid[:200], batch_size=16)
