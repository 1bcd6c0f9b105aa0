"""Evaluation: marginal likelihood, ELBO split, latent usage, predictive checks, the amortization gap."""

from pyro_lvm.evaluation.amortization import amortization_gap
from pyro_lvm.evaluation.elbo_split import elbo_split, elbo_terms
from pyro_lvm.evaluation.gradients import gradient_diagnostics
from pyro_lvm.evaluation.latents import active_units, mutual_information
from pyro_lvm.evaluation.marginal_likelihood import importance_log_weights, log_marginal_likelihood
from pyro_lvm.evaluation.predictive import (
    posterior_predictive,
    posterior_predictive_check,
    prior_predictive,
)
from pyro_lvm.evaluation.report import evaluate

__all__ = [
    "active_units", "amortization_gap", "elbo_split", "elbo_terms", "evaluate", "gradient_diagnostics",
    "importance_log_weights", "log_marginal_likelihood", "mutual_information", "posterior_predictive",
    "posterior_predictive_check", "prior_predictive",
]

