import json

import pyro
import pytest
import torch

from pyro_lvm.checkpoint import load_checkpoint, save_checkpoint
from pyro_lvm.models import VAE
from pyro_lvm.objectives import ELBO, IWAE, MeanFieldELBO
from pyro_lvm.objectives.base import LossTerms
from pyro_lvm.train import TrainConfig, Trainer, TrainingDivergedError
from resuming import assert_same_parameters, straight_and_resumed


def _data(n=120):
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((n, 10), 0.3), generator=g)


def _trainer(run_dir, epochs, objective=None, trace=True):
    x = _data()
    torch.manual_seed(0)
    model = VAE(input_dim=10, latent_dim=2, hidden=(8,))
    return Trainer(model, objective or IWAE(3), x[:100], x[100:], run_dir=run_dir,
                   config=TrainConfig(epochs=epochs, batch_size=32, lr=1e-2, seed=3, progress=False, trace=trace))


def test_resume_continues_exactly(tmp_path):
    straight, resumed = straight_and_resumed(_trainer, tmp_path, 3)
    assert_same_parameters(straight, resumed)
    def strip(history):
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in history]

    assert strip(straight.history) == strip(resumed.history)
    lines = (tmp_path / "b" / "history.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]


def test_checkpoint_loads_with_weights_only(tmp_path):
    t = _trainer(tmp_path, 1)
    t.fit()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and "model" in state


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"a": torch.ones(2)})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"a": torch.zeros(2)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


class _ExplodesAtStep(ELBO):
    def __init__(self, bad_step):
        super().__init__()
        self.bad_step = bad_step

    def terms(self, model, guide, *args, step=None, **kwargs):
        terms = super().terms(model, guide, *args, step=step, **kwargs)
        if self.step == self.bad_step and step is None:
            nan = terms.surrogate * float("nan")
            return LossTerms(nan.detach(), nan)
        return terms


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    t = _trainer(tmp_path, 3, objective=_ExplodesAtStep(bad_step=6))  # 4 steps per epoch
    with pytest.raises(TrainingDivergedError, match="non-finite loss.*checkpoint"):
        t.fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(torch.isfinite(p).all() for p in t.model.parameters())  # bad step not applied


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1)
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="bucket_mb must be non-negative"):
            TrainConfig(bucket_mb=bad)
    with pytest.raises(ValueError, match="lr and seed must be set"):
        Trainer(VAE(input_dim=10), ELBO(), _data(), config=TrainConfig(lr=None, progress=False))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            TrainConfig(device="cuda")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Trainer(VAE(input_dim=10), ELBO(), _data(), config=TrainConfig(progress=False)).fit(resume=True)


def test_trainer_rejects_bad_data():
    with pytest.raises(ValueError, match="binary"):
        Trainer(VAE(input_dim=10), ELBO(), _data() * 0.5)


def test_trainer_refuses_an_objective_that_does_not_fit_the_model():
    from pyro_lvm.models import GMM
    from pyro_lvm.objectives import InvalidObjectiveError

    with pytest.raises(InvalidObjectiveError, match="marked for enumeration.*TraceEnum_ELBO"):
        Trainer(GMM(input_dim=2, components=2), ELBO(), torch.randn(10, 2))


def test_divergence_between_checks_restores_the_last_checked_state(tmp_path):
    """Losses are checked every CHECK_EVERY steps, not at each step: a NaN at step 60 is found at
    the check after step 100 (one epoch of 100 batches), and the model and the optimizer go back to
    their state after step 50, exactly that of a run stopped there."""
    from pyro_lvm.train import CHECK_EVERY

    assert CHECK_EVERY == 50
    x = _data(400)

    def trainer(objective, epochs=1):
        torch.manual_seed(0)
        model = VAE(input_dim=10, latent_dim=2, hidden=(8,))
        return Trainer(model, objective, x, run_dir=None,
                       config=TrainConfig(epochs=epochs, batch_size=4, lr=1e-2, seed=3, progress=False))

    broken = trainer(_ExplodesAtStep(bad_step=60))
    with pytest.raises(TrainingDivergedError, match="step 60; the model is back at its state after step 50"):
        broken.fit()
    reference = trainer(ELBO())
    reference.train_data = x[:200]  # 50 steps of the same batches: the permutation's first 50 come first
    order = torch.randperm(400, generator=torch.Generator().manual_seed(3))
    reference.train_data = x
    reference.batch_order = lambda n, b, g: list(order.split(4)[:50])
    reference.fit()
    assert broken.step == reference.step == 50
    for (name, p), q in zip(broken.model.named_parameters(), reference.model.parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(broken.optimizer.state_dict()["state"][0]["exp_avg"],
                       reference.optimizer.state_dict()["state"][0]["exp_avg"])


@pytest.mark.parametrize("trace", [True, False], ids=["recorded", "eager"])
@pytest.mark.parametrize("objective", [ELBO(), IWAE(4), IWAE(4, gradient="dreg"), MeanFieldELBO()],
                         ids=["elbo", "iwae", "dreg", "meanfield"])
def test_a_training_step_never_reads_a_tensor_on_the_host(objective, trace, monkeypatch):
    """No host synchronisation inside a step, recorded and replayed or eager: reading any tensor's
    value (item, float, bool, tolist) while the objective computes the loss and its gradients fails
    this test (Adam's own step counter is a CPU tensor, read without a device synchronisation); the
    loop reads the losses once per check."""
    t = _trainer(None, 1, objective=objective, trace=trace)
    t.fit()  # first run: the objective's checks of the traces (which read values) are done once
    assert (t.traced is not None and t.traced.graphs == 2) == (trace and objective.why_not_replayable() is None)

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read on the host during a training step")

    x = _data()[:32]
    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
            m.setattr(torch.Tensor, name, refuse)
        with pyro.validation_enabled(False):  # as in fit(): data checks are for the public boundary
            loss = t._loss_and_grads(x)
    assert torch.isfinite(loss)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype feature")  # torch's own notice
def test_a_training_step_does_not_synchronise_on_cuda():
    x = _data().cuda()
    torch.manual_seed(0)
    t = Trainer(VAE(input_dim=10, latent_dim=2, hidden=(8,)), ELBO(), x,
                config=TrainConfig(epochs=1, batch_size=32, device="cuda", progress=False))
    t.fit()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pyro.validation_enabled(False):
            t.train_step(x[:32])
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_transformed_training_set_is_checked_after_its_transform_and_for_nan_everywhere():
    """Grey images binarized afresh per minibatch train a Bernoulli VAE; a NaN far down the rows
    (past the rows the transform is tried on) is still refused before training."""
    from pyro_lvm.data.datasets import dynamic_binarize

    grey = torch.rand(1100, 6)
    Trainer(VAE(input_dim=6, latent_dim=2, hidden=(4,)), ELBO(), grey, None, TrainConfig(epochs=1),
            train_transform=dynamic_binarize)
    grey[1050, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Trainer(VAE(input_dim=6, latent_dim=2, hidden=(4,)), ELBO(), grey, None, TrainConfig(epochs=1),
                train_transform=dynamic_binarize)
    with pytest.raises(ValueError, match="binary"):  # without the transform the grey values are refused
        Trainer(VAE(input_dim=6, latent_dim=2, hidden=(4,)), ELBO(), torch.rand(10, 6), None, TrainConfig(epochs=1))


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")  # dynamo's own look
def test_compiled_networks_train_like_eager_ones(tmp_path):
    """``TrainConfig.compile`` for a loss that is not recorded (``trace=False``): the networks run
    through torch.compile, the parameters keep their names, and a few steps give the eager
    parameters to float tolerance."""
    x = torch.bernoulli(torch.full((40, 6), 0.3), generator=torch.Generator().manual_seed(0))
    from torch._dynamo.utils import counters

    runs = {}
    torch._dynamo.reset()
    counters.clear()
    for mode in (None, "default"):
        torch.manual_seed(0)
        m = VAE(input_dim=6, latent_dim=2, hidden=(5,))
        cfg = TrainConfig(epochs=1, batch_size=10, progress=False, compile=mode, trace=False)
        t = Trainer(m, ELBO(), x, config=cfg, run_dir=tmp_path / str(mode))
        t.fit()
        runs[mode] = m.state_dict()
        if mode is not None:
            assert getattr(m.encoder.forward, "_pyro_lvm_compiled", False)
            assert torch._dynamo.config.recompile_limit >= 64  # all networks share one cache
            assert counters["stats"]["unique_graphs"] >= 2  # dynamo compiled the encoder and the decoder
    assert runs[None].keys() == runs["default"].keys()
    for k in runs[None]:
        assert torch.allclose(runs[None][k], runs["default"][k], atol=1e-5), k
    with pytest.raises(ValueError, match="compile must be one of"):
        TrainConfig(compile="fast")


def test_compile_failures_say_what_to_do(monkeypatch):
    from torch._dynamo.exc import TorchDynamoException

    x = torch.bernoulli(torch.full((20, 6), 0.3), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(epochs=1, batch_size=10, progress=False, compile="default")
    m = VAE(input_dim=6, latent_dim=2, hidden=(5,))
    monkeypatch.setattr(VAE, "compile_networks", lambda self, mode: ())
    with pytest.raises(ValueError, match=r"no networks to compile, and its loss cannot be recorded \(TrainConfig.trace"):
        Trainer(m, ELBO(), x, config=TrainConfig(epochs=1, batch_size=10, progress=False, compile="default",
                                                 trace=False))
    monkeypatch.undo()

    def fails(self, batch):
        raise TorchDynamoException("backend failed\nlong details")

    t = Trainer(VAE(input_dim=6, latent_dim=2, hidden=(5,)), ELBO(), x, config=cfg)
    monkeypatch.setattr(Trainer, "_loss_and_grads", fails)
    with pytest.raises(RuntimeError, match=r"torch.compile failed on model vae \(backend failed\); train without"):
        t.fit()
