"""A handler that weights the latent sample sites of a model or guide."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from pyro.poutine.messenger import Messenger


class LatentScaleMessenger(Messenger):
    r"""Multiply the ``scale`` of every *latent* sample site by ``weight``.

    Applied to both model and guide, it turns the ELBO
    :math:`E_q[\log p(x \mid z) + \log p(z) - \log q(z \mid x)]` into
    :math:`E_q[\log p(x \mid z)] - w\,\mathrm{KL}`: with ``Trace_ELBO`` the
    latent site must be scaled in both, with ``TraceMeanField_ELBO`` the guide
    site's scale weights the analytic KL. Unlike ``poutine.scale`` a weight of
    zero is allowed. Observed sites are untouched. The weight may be a 0-dim tensor (as in a
    recorded loss, :mod:`pyro_lvm.traced`, where it is an input of the graph).
    """

    def __init__(self, weight: Union[float, torch.Tensor]):
        super().__init__()
        self.weight = weight if isinstance(weight, torch.Tensor) else float(weight)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = _times(self.weight, msg["scale"])


def _times(weight, scale):
    """``weight * scale``, for two numbers in the default float dtype, as a recorded loss
    (:mod:`pyro_lvm.traced`) computes it from its 0-dim weight tensor: eager and replayed steps
    then agree bit for bit."""
    if isinstance(weight, torch.Tensor) or isinstance(scale, torch.Tensor):
        return weight * scale
    rounded = _HOST_FLOATS.get(torch.get_default_dtype())
    if rounded is None:
        return torch.tensor(weight, dtype=torch.get_default_dtype()).mul(scale).item()
    return float(rounded(weight) * rounded(scale))  # numbers on the host, no tensor to read back


#: the host's numbers in torch's default float dtypes (products rounded as torch rounds them)
_HOST_FLOATS = {torch.float32: np.float32, torch.float64: np.float64}


def weight_latents(fn, weight: Union[float, torch.Tensor]):
    """``fn`` with its latent sites weighted by ``weight`` (``fn`` itself when the number 1)."""
    if not isinstance(weight, torch.Tensor) and weight == 1.0:
        return fn
    return LatentScaleMessenger(weight)(fn)
