import os
from pathlib import Path

import pyro
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# A relative data directory (the README's PYRO_LVM_DATA=../shared/data) must
# still hold in subprocesses that run elsewhere.
if os.environ.get("PYRO_LVM_DATA"):
    os.environ["PYRO_LVM_DATA"] = os.path.abspath(os.environ["PYRO_LVM_DATA"])


# Under pytest-xdist (setup.cfg runs two workers) each worker computes on one thread, so that
# the workers share the cores instead of fighting over them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data sets: $PYRO_LVM_DATA, else ../shared/data beside the repo."""
    path = Path(os.environ.get("PYRO_LVM_DATA") or REPO.parent / "shared" / "data")
    if not (path / "binarized_mnist").is_dir():
        pytest.skip(f"real data sets not found at {path} (set PYRO_LVM_DATA)")
    return path
