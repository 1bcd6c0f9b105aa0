"""A handler that weights the latent sample sites of a model or guide."""

from __future__ import annotations

from pyro.poutine.messenger import Messenger


class LatentScaleMessenger(Messenger):
    r"""Multiply the ``scale`` of every *latent* sample site by ``weight``.

    Applied to both model and guide, it turns the ELBO
    :math:`E_q[\log p(x \mid z) + \log p(z) - \log q(z \mid x)]` into
    :math:`E_q[\log p(x \mid z)] - w\,\mathrm{KL}`: with ``Trace_ELBO`` the
    latent site must be scaled in both, with ``TraceMeanField_ELBO`` the guide
    site's scale weights the analytic KL. Unlike ``poutine.scale`` a weight of
    zero is allowed. Observed sites are untouched.
    """

    def __init__(self, weight: float):
        super().__init__()
        self.weight = float(weight)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.weight * msg["scale"]


def weight_latents(fn, weight: float):
    """``fn`` with its latent sites weighted by ``weight`` (``fn`` itself when 1)."""
    if weight == 1.0:
        return fn
    return LatentScaleMessenger(weight)(fn)
