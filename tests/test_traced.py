"""The recorded and replayed training loss (pyro_lvm.traced): what it refuses, what it gives up on,
and that it never changes a step. That every recordable pair of the common suite trains bit for bit
as eagerly is tests/test_common.py::test_recorded_steps_are_the_eager_steps."""

import json

import pytest
import torch

from pyro_lvm.models import VAE
from pyro_lvm.objectives import ELBO, IWAE, LossTerms
from pyro_lvm.objectives.base import scale_gradients
from pyro_lvm.traced import TracedLoss, why_not_traced
from pyro_lvm.train import TrainConfig, Trainer


def _data(n=30, d=6):
    return torch.bernoulli(torch.full((n, d), 0.3), generator=torch.Generator().manual_seed(0))


def _train(objective_factory, trace, epochs=2, **config):
    torch.manual_seed(0)
    model = VAE(input_dim=6, latent_dim=2, hidden=(5,))
    trainer = Trainer(model, objective_factory(), _data(),
                      config=TrainConfig(epochs=epochs, batch_size=10, progress=False, trace=trace, **config))
    trainer.fit()
    return trainer


def _same_parameters(a, b):
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(p, q), name


class _BranchesOnAValue(ELBO):
    """Declares itself recordable, but looks at a value in Python (as Pyro's score-function
    estimators do with ``torch_item``): recording raises, and the step runs eagerly."""

    not_replayable = None

    def loss_terms(self, model, guide, args, kwargs, kl_weight):
        terms = super().loss_terms(model, guide, args, kwargs, kl_weight)
        if terms.loss > 0:
            return terms
        return LossTerms(terms.loss, terms.surrogate * 2)


def test_a_branch_on_a_value_is_not_frozen_but_run_eagerly():
    traced = _train(_BranchesOnAValue, trace=True)
    assert traced.traced.graphs == 0
    assert "GuardOnDataDependent" in traced.traced.failed  # torch's reason, kept for the user
    _same_parameters(traced, _train(_BranchesOnAValue, trace=False))


class _DReGClaimsToBeRecordable(IWAE):
    """DReG registering its backward hooks inside the loss instead of returning its gradient
    scales (as it did before they were returned), wrongly declared recordable: a replay would
    lose the hooks."""

    not_replayable = None

    def __init__(self):
        super().__init__(num_particles=3, gradient="dreg")

    def scaled_loss_terms(self, model, guide, args, kwargs, kl_weight):
        terms, scales = super().scaled_loss_terms(model, guide, args, kwargs, kl_weight)
        scale_gradients(scales)  # hooks on the recording's fake tensors: lost
        return terms, ()


def test_a_recording_whose_gradients_differ_is_dropped_with_a_warning():
    with pytest.warns(RuntimeWarning, match="another loss or other gradients than the eager step"):
        traced = _train(_DReGClaimsToBeRecordable, trace=True)
    assert traced.traced.graphs == 0 and traced.traced.failed
    _same_parameters(traced, _train(_DReGClaimsToBeRecordable, trace=False))


class _IWAEDoubled(IWAE):
    """A subclass redefining loss_terms below IWAE, which defines scaled_loss_terms."""

    not_replayable = None

    def __init__(self):
        super().__init__(num_particles=3)

    def loss_terms(self, model, guide, args, kwargs, kl_weight):
        terms = super().loss_terms(model, guide, args, kwargs, kl_weight)
        return LossTerms(terms.loss, 2 * terms.surrogate)


def test_a_subclass_redefining_loss_terms_is_recorded_through_its_own_loss_terms():
    """Objective.recorded_terms runs the subclass's loss_terms, not IWAE's scaled_loss_terms
    (which would leave the doubling out, and fall back to eager steps with a warning)."""
    traced = _train(_IWAEDoubled, trace=True)
    assert traced.traced.graphs == 1 and traced.traced.failed is None
    _same_parameters(traced, _train(_IWAEDoubled, trace=False))


def test_what_cannot_be_recorded_says_why():
    class LooksAtTheStep(ELBO):  # defines terms without saying whether it may be recorded
        def terms(self, model, guide, *args, **kwargs):
            return super().terms(model, guide, *args, **kwargs)

    vae = VAE(input_dim=6, latent_dim=2, hidden=(5,))
    assert why_not_traced(vae, ELBO()) is None
    assert "LooksAtTheStep computes the loss without saying whether it may be recorded" in \
        why_not_traced(vae, LooksAtTheStep())
    assert why_not_traced(vae, IWAE(num_particles=2, gradient="dreg")) is None  # its scales are graph outputs
    assert "rescales the gradients of intermediate values with hooks (DReG)" in \
        why_not_traced(vae, IWAE(num_particles=2, gradient="dreg"), engine="default")
    from pyro.infer import Trace_ELBO
    assert "Pyro's ELBOs" in why_not_traced(vae, Trace_ELBO())
    from pyro_lvm.models import SSVAE
    assert "labelled and unlabelled rows" in why_not_traced(SSVAE(input_dim=6, num_classes=2), ELBO())
    with pytest.raises(ValueError, match="cannot be recorded and replayed: objective IWAE rescales"):
        TracedLoss(vae, IWAE(num_particles=2, gradient="dreg"), data_size=10, engine="default")
    trainer = Trainer(vae, LooksAtTheStep(), _data(), config=TrainConfig(epochs=1, progress=False))
    assert trainer.traced is None and "LooksAtTheStep" in trainer.not_traced
    off = Trainer(vae, ELBO(), _data(), config=TrainConfig(epochs=1, progress=False, trace=False))
    assert off.traced is None and off.not_traced == "TrainConfig.trace is off"


def test_one_recording_per_shape_whatever_the_kl_weight():
    """The KL weight is an input of the graph: an annealed run records once per minibatch shape,
    and each replay uses that step's weight (the run equals the eager one)."""
    from pyro_lvm.objectives import LinearSchedule

    def annealed():
        return ELBO(annealing=LinearSchedule(5))

    traced = _train(annealed, trace=True, epochs=3)
    assert traced.traced.graphs == 1 and traced.traced.failed is None  # 30 rows: batches of 10
    _same_parameters(traced, _train(annealed, trace=False, epochs=3))


def test_recording_draws_no_random_numbers():
    vae = VAE(input_dim=6, latent_dim=2, hidden=(5,))
    x = _data(10)
    loss = TracedLoss(vae, ELBO(), data_size=10)
    torch.manual_seed(1)
    first = loss(x)  # records (on fake tensors, then checked against the eager run)
    after_recording = torch.get_rng_state()
    torch.manual_seed(1)
    eager = ELBO().terms(vae.model, vae.guide, x, data_size=10)
    assert torch.equal(after_recording, torch.get_rng_state())
    assert torch.equal(first.loss, eager.loss)
    torch.manual_seed(2)
    replayed = loss(x)
    torch.manual_seed(2)
    assert torch.equal(replayed.loss, ELBO().terms(vae.model, vae.guide, x, data_size=10).loss)
    assert loss.graphs == 1


def test_a_step_that_sets_state_up_runs_eagerly_until_the_model_is_ready():
    """The VQ-VAE initialises its codebook at its first training step (not recordable yet): that
    step runs eagerly, the next one records, and recording it, checking it and tracing it for
    the interpreter leave the moving averages as one eager step leaves them."""
    from pyro_lvm.models import VQVAE

    torch.manual_seed(0)
    vq = VQVAE(input_dim=6, hidden=(8,), num_latents=2, code_dim=2, codebook_size=4, ema_decay=0.9)
    twin = VQVAE(input_dim=6, hidden=(8,), num_latents=2, code_dim=2, codebook_size=4, ema_decay=0.9)
    twin.load_state_dict(vq.state_dict())
    vq.train(), twin.train()
    x = torch.rand(10, 6, generator=torch.Generator().manual_seed(0))
    loss = TracedLoss(vq, ELBO(), data_size=10)
    assert vq.not_recordable_yet and why_not_traced(vq, ELBO()) is None
    for step in range(3):
        torch.manual_seed(step)
        terms = loss(x)
        torch.manual_seed(step)
        eager = ELBO().terms(twin.model, twin.guide, x, data_size=10)
        assert loss.graphs == min(step, 1) and loss.failed is None
        assert torch.equal(terms.loss, eager.loss)
        for (name, b), c in zip(vq.named_buffers(), twin.buffers()):
            assert torch.equal(b, c), (step, name)
    assert not vq.not_recordable_yet


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_compile_compiles_the_recorded_loss():
    """``--compile`` with a recorded loss compiles the whole loss and its backward (one graph, no
    networks compiled on their own); with inductor drawing the eager random numbers, the steps
    equal the eager ones to float tolerance."""
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    with inductor_config.patch(fallback_random=True):  # (a monkeypatch would delete the setting after)
        compiled = _train(ELBO, trace=True, compile="default")
    assert compiled.traced is not None and compiled.traced.engine == "default"
    assert counters["stats"]["unique_graphs"] == 1  # the recorded loss, compiled whole
    assert not getattr(compiled.model.encoder.forward, "_pyro_lvm_compiled", False)
    eager = _train(ELBO, trace=False)
    for (name, p), q in zip(compiled.model.named_parameters(), eager.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_compile_keeps_the_moving_averages_a_recorded_step_updates():
    """A compiled recorded step that updates buffers in place (the VQ-VAE's EMA codebook) updates
    them as the eager steps do: the codebook and the parameters after 2 epochs agree."""
    import torch._inductor.config as inductor_config

    from pyro_lvm.models import VQVAE

    def train(compile):
        torch.manual_seed(0)
        model = VQVAE(input_dim=6, hidden=(8,), num_latents=2, code_dim=2, codebook_size=4, ema_decay=0.9,
                      likelihood="bernoulli")
        trainer = Trainer(model, ELBO(), _data(), config=TrainConfig(epochs=2, batch_size=10, progress=False,
                                                                     compile=compile))
        trainer.fit()
        return trainer

    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        compiled = train("default")
    eager = train(None)
    assert compiled.traced.graphs == 1 and compiled.traced.failed is None
    assert not torch.equal(compiled.model.codebook, VQVAE(input_dim=6, hidden=(8,), num_latents=2, code_dim=2,
                                                          codebook_size=4, ema_decay=0.9).codebook)
    for (name, a), b in zip(compiled.model.state_dict().items(), eager.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


@pytest.mark.cuda
# warnings stay warnings here: torch 2.11's compiler, given a warning turned into an error, reports
# "Attempt to trace generator"; a recording that fell back to eager is caught by traced.failed below
@pytest.mark.filterwarnings("default")
def test_cuda_graphs_of_the_recorded_loss_train_as_eagerly():
    """``--compile reduce-overhead`` on a GPU captures the recorded loss and its backward in CUDA
    graphs, one per minibatch shape (25 points in batches of 10: shapes 10 and 5). A graph
    overwrites its outputs at each replay, so the losses the Trainer keeps until its check must
    be its own copies: the history's losses are those of the eager steps, and so are the
    parameters, to float tolerance (inductor drawing the eager random numbers)."""
    import torch._inductor.config as inductor_config

    def train(trace, compile=None):
        torch.manual_seed(0)
        model = VAE(input_dim=6, latent_dim=2, hidden=(5,))
        trainer = Trainer(model, ELBO(), _data(25).cuda(),
                          config=TrainConfig(epochs=3, batch_size=10, progress=False, trace=trace, device="cuda",
                                             compile=compile))
        trainer.fit()
        return trainer

    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        graphs = train(trace=True, compile="reduce-overhead")
    eager = train(trace=False)
    assert graphs.traced is not None and graphs.traced.failed is None and graphs.traced.graphs == 2
    for a, b in zip(graphs.history, eager.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for (name, p), q in zip(graphs.model.named_parameters(), eager.model.parameters()):
        assert p.is_cuda and torch.allclose(p, q, atol=1e-5), name


def test_command_line_no_trace(tmp_path, capsys):
    from pyro_lvm.cli import main

    for flags, expected in (([], True), (["--no-trace"], False)):
        out = tmp_path / str(expected)
        code = main(["train", "vae", "--epochs", "1", "--no-progress", "--no-figures", "--eval-particles", "2",
                     *flags, "--out", str(out)])
        assert code == 0
        assert json.loads((out / "config.json").read_text())["train"]["trace"] is expected
