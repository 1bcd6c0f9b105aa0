"""The exact-resume check shared by the trainer's and the reliability tests."""

import torch


def straight_and_resumed(make_trainer, tmp_path, epochs=3, between=None):
    """``(straight, resumed)``: a Trainer fitted for ``epochs`` epochs in one go, and one fitted
    for one epoch, then (after ``between()``, e.g. clearing Pyro's param store as a new process
    would) resumed from its checkpoint to ``epochs``. ``make_trainer(run_dir, epochs)`` builds
    a fresh Trainer writing to ``run_dir``."""
    straight = make_trainer(tmp_path / "a", epochs)
    straight.fit()
    make_trainer(tmp_path / "b", 1).fit()
    if between is not None:
        between()
    resumed = make_trainer(tmp_path / "b", epochs)
    resumed.fit(resume=True)
    return straight, resumed


def assert_same_parameters(a, b):
    """Every parameter of the two trainers' models is bit-identical."""
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(p, q), name
