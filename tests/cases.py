"""Tiny instances of every registered model and every objective, for the common suite."""

import torch

from pyro_lvm.models import GMM, PPCA, VAE, BernVAE, CatVAE
from pyro_lvm.objectives import ELBO, IWAE, VIMCO, EnumELBO, LinearSchedule, MeanFieldELBO, TraceGraphELBO


def _binary(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, d), 0.3), generator=g)


def _real(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g)


#: name -> (factory of a tiny model, factory of data for it)
MODEL_CASES = {
    "vae-bernoulli": (lambda: VAE(input_dim=12, latent_dim=3, hidden=(16,)), lambda n: _binary(n, 12)),
    "vae-gaussian": (lambda: VAE(input_dim=12, latent_dim=3, hidden=(16, 8), likelihood="gaussian",
                                 activation="relu"), lambda n: _real(n, 12)),
    "ppca": (lambda: PPCA(input_dim=4, latent_dim=2), lambda n: _real(n, 4)),
    **{f"bernvae-{e}": (lambda e=e: BernVAE(input_dim=12, latent_dim=4, hidden=(16,), estimator=e),
                        lambda n: _binary(n, 12))
       for e in ("reinforce", "vimco", "st", "gumbel", "st-gumbel")},
    **{f"catvae-{e}": (lambda e=e: CatVAE(input_dim=12, num_latents=3, num_classes=4, hidden=(16,),
                                          estimator=e), lambda n: _binary(n, 12))
       for e in ("reinforce", "vimco", "st", "gumbel", "st-gumbel")},
    "catvae-enum": (lambda: CatVAE(input_dim=12, num_latents=1, num_classes=4, hidden=(16,), estimator="enum"),
                    lambda n: _binary(n, 12)),
    "gmm-full": (lambda: GMM(input_dim=3, components=3), lambda n: _real(n, 3)),
    "gmm-diag": (lambda: GMM(input_dim=3, components=2, covariance="diag"), lambda n: _real(n, 3)),
    "gmm-spherical": (lambda: GMM(input_dim=3, components=2, covariance="spherical"), lambda n: _real(n, 3)),
}

#: registry name -> the cases that cover it
COVERS = {"vae": ["vae-bernoulli", "vae-gaussian"], "ppca": ["ppca"],
          "gmm": ["gmm-full", "gmm-diag", "gmm-spherical"],
          "bernvae": [f"bernvae-{e}" for e in ("reinforce", "vimco", "st", "gumbel", "st-gumbel")],
          "catvae": [f"catvae-{e}" for e in ("reinforce", "vimco", "st", "gumbel", "st-gumbel", "enum")]}

#: name -> (factory, needs independent latent dimensions)
OBJECTIVE_CASES = {
    "elbo": (lambda: ELBO(), False),
    "elbo-3particles-beta": (lambda: ELBO(num_particles=3, beta=0.5), False),
    "elbo-freebits": (lambda: ELBO(free_bits=0.2), True),
    "meanfield": (lambda: MeanFieldELBO(), False),
    "meanfield-annealed-freebits": (lambda: MeanFieldELBO(annealing=LinearSchedule(10), free_bits=0.2), True),
    "tracegraph": (lambda: TraceGraphELBO(), False),
    "iwae": (lambda: IWAE(num_particles=4), False),
    "iwae-dreg": (lambda: IWAE(num_particles=4, gradient="dreg"), False),
    "iwae-beta-annealed": (lambda: IWAE(num_particles=4, beta=2.0, annealing=LinearSchedule(5)), False),
    "enum": (lambda: EnumELBO(), False),
    "vimco": (lambda: VIMCO(num_particles=3), False),
}

OBJECTIVE_COVERS = {"elbo", "meanfield", "tracegraph", "iwae", "enum", "vimco"}

#: for the training test: the first objective that applies to a model
TRAINING_PREFERENCE = ["elbo", "iwae-dreg", "tracegraph", "enum", "meanfield", "vimco"]
