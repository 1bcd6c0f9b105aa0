import json

import pytest
import torch

from pyro_lvm.checkpoint import load_checkpoint, save_checkpoint
from pyro_lvm.models import VAE
from pyro_lvm.objectives import ELBO, IWAE
from pyro_lvm.objectives.base import LossTerms
from pyro_lvm.train import TrainConfig, Trainer, TrainingDivergedError


def _data(n=120):
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((n, 10), 0.3), generator=g)


def _trainer(run_dir, epochs, objective=None):
    x = _data()
    torch.manual_seed(0)
    model = VAE(input_dim=10, latent_dim=2, hidden=(8,))
    return Trainer(model, objective or IWAE(3), x[:100], x[100:], run_dir=run_dir,
                   config=TrainConfig(epochs=epochs, batch_size=32, lr=1e-2, seed=3, progress=False))


def test_resume_continues_exactly(tmp_path):
    straight = _trainer(tmp_path / "a", 3)
    straight.fit()
    first = _trainer(tmp_path / "b", 1)
    first.fit()
    resumed = _trainer(tmp_path / "b", 3)
    resumed.fit(resume=True)
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
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
