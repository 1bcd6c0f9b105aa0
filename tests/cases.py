"""Tiny instances of every registered model and every objective, for the common suite."""

import torch

from pyro_lvm.models import GMM, LSTMLM, PPCA, VAE, VQVAE, BernVAE, CatVAE, TextVAE
from pyro_lvm.objectives import ELBO, IWAE, VIMCO, EnumELBO, LinearSchedule, MeanFieldELBO, TraceGraphELBO


def _binary(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, d), 0.3), generator=g)


def _unit(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g)


def _tokens(n, vocab=9, seed=0):
    """n padded sentences of 1-5 words from indices 4..vocab-1, each closed by <eos> (3)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 6, (n,), generator=g)
    x = torch.zeros(n, 6, dtype=torch.long)
    for i, k in enumerate(lengths.tolist()):
        x[i, :k] = torch.randint(4, vocab, (k,), generator=g)
        x[i, k] = 3
    return x


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
    "bernvae-gumbel-concrete": (lambda: BernVAE(input_dim=12, latent_dim=4, hidden=(16,), estimator="gumbel",
                                                relaxed_kl="concrete"), lambda n: _binary(n, 12)),
    "catvae-gumbel-concrete": (lambda: CatVAE(input_dim=12, num_latents=3, num_classes=4, hidden=(16,),
                                              estimator="gumbel", relaxed_kl="concrete"), lambda n: _binary(n, 12)),
    "catvae-enum": (lambda: CatVAE(input_dim=12, num_latents=1, num_classes=4, hidden=(16,), estimator="enum"),
                    lambda n: _binary(n, 12)),
    "vqvae-gaussian": (lambda: VQVAE(input_dim=12, hidden=(16,), num_latents=3, code_dim=2, codebook_size=8),
                       lambda n: _unit(n, 12)),
    "vqvae-ema": (lambda: VQVAE(input_dim=12, hidden=(16,), num_latents=3, code_dim=2, codebook_size=8,
                                ema_decay=0.9), lambda n: _unit(n, 12)),
    "vqvae-bernoulli": (lambda: VQVAE(input_dim=12, hidden=(16,), num_latents=2, code_dim=3, codebook_size=4,
                                      likelihood="bernoulli"), lambda n: _binary(n, 12)),
    "textvae": (lambda: TextVAE(vocab_size=9, embed_dim=4, hidden_dim=8, encoder_hidden_dim=8, latent_dim=2,
                                word_dropout=0.2), _tokens),
    "lstmlm": (lambda: LSTMLM(vocab_size=9, embed_dim=4, hidden_dim=8), _tokens),
    "gmm-full": (lambda: GMM(input_dim=3, components=3), lambda n: _real(n, 3)),
    "gmm-diag": (lambda: GMM(input_dim=3, components=2, covariance="diag"), lambda n: _real(n, 3)),
    "gmm-spherical": (lambda: GMM(input_dim=3, components=2, covariance="spherical"), lambda n: _real(n, 3)),
}

#: registry name -> the cases that cover it
COVERS = {"vae": ["vae-bernoulli", "vae-gaussian"], "ppca": ["ppca"],
          "vqvae": ["vqvae-gaussian", "vqvae-ema", "vqvae-bernoulli"],
          "textvae": ["textvae"], "lstmlm": ["lstmlm"],
          "gmm": ["gmm-full", "gmm-diag", "gmm-spherical"],
          "bernvae": [f"bernvae-{e}" for e in ("reinforce", "vimco", "st", "gumbel", "st-gumbel",
                                               "gumbel-concrete")],
          "catvae": [f"catvae-{e}" for e in ("reinforce", "vimco", "st", "gumbel", "st-gumbel", "enum",
                                             "gumbel-concrete")]}

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
