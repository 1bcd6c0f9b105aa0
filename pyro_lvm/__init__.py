"""pyro_lvm: latent-variable models as Pyro model/guide pairs."""

from pyro_lvm import models, objectives  # noqa: F401  (registers models and objectives)
from pyro_lvm.base import LatentVariableModel
from pyro_lvm.registry import MODELS, get_model, model_names

__version__ = "0.2.0"

__all__ = ["LatentVariableModel", "MODELS", "get_model", "model_names", "__version__"]
