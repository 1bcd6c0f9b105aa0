"""Tiny instances of every registered model and every objective, for the common suite."""

import torch
from pyro.infer import JitTrace_ELBO, RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

from pyro_lvm.models import CVAE, GMM, HVAE, LSTMLM, PPCA, SSVAE, VAE, VQVAE, BernVAE, CatVAE, TextVAE
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


def _labelled(n, d, classes, unknown, seed=0):
    """binary rows with a label column; every other label unknown (-1) when ``unknown``"""
    y = torch.arange(n) % classes
    if unknown:
        y[1::2] = -1
    return torch.cat([_binary(n, d, seed), y.float().unsqueeze(-1)], dim=-1)


def _eight_bit(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, d), generator=g).float() / 255


def _real(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g)


#: name -> (factory of a tiny model, factory of data for it)
MODEL_CASES = {
    "vae-bernoulli": (lambda: VAE(input_dim=12, latent_dim=3, hidden=(16,)), lambda n: _binary(n, 12)),
    "vae-gaussian": (lambda: VAE(input_dim=12, latent_dim=3, hidden=(16, 8), likelihood="gaussian",
                                 activation="relu"), lambda n: _real(n, 12)),
    "vae-conv-dlogistic": (lambda: VAE(input_dim=60, latent_dim=3, network="conv", channels=(3, 4),
                                       image_shape=(2, 6, 5), likelihood="discretized_logistic"),
                           lambda n: _eight_bit(n, 60)),
    "vae-vamp": (lambda: VAE(input_dim=12, latent_dim=3, hidden=(16,), prior="vamp", pseudo_inputs=4),
                 lambda n: _binary(n, 12)),
    "vae-iaf": (lambda: VAE(input_dim=12, latent_dim=3, hidden=(16,), guide_flow="iaf", flow_hidden=(8,),
                            flow_context=4), lambda n: _binary(n, 12)),
    "vae-planar": (lambda: VAE(input_dim=12, latent_dim=3, hidden=(16,), guide_flow="planar", flow_layers=3,
                               flow_hidden=(8,), flow_context=4, likelihood="gaussian"), lambda n: _real(n, 12)),
    "hvae": (lambda: HVAE(input_dim=12, latent_dims=(4, 2), hidden=(16,), hidden2=(8,)), lambda n: _binary(n, 12)),
    "ssvae": (lambda: SSVAE(input_dim=12, num_classes=3, latent_dim=2, hidden=(16,)),
              lambda n: _labelled(n, 12, 3, unknown=True)),
    "ssvae-all-labelled": (lambda: SSVAE(input_dim=12, num_classes=3, latent_dim=2, hidden=(16,)),
                           lambda n: _labelled(n, 12, 3, unknown=False)),
    "cvae": (lambda: CVAE(input_dim=12, num_classes=3, latent_dim=2, hidden=(16,)),
             lambda n: _labelled(n, 12, 3, unknown=False)),
    "ppca": (lambda: PPCA(input_dim=4, latent_dim=2), lambda n: _real(n, 4)),
    "bernvae-conv-st": (lambda: BernVAE(input_dim=49, latent_dim=4, network="conv", channels=(3,),
                                        image_shape=(1, 7, 7), estimator="st"), lambda n: _binary(n, 49)),
    "vqvae-conv": (lambda: VQVAE(input_dim=64, network="conv", channels=(4, 4), image_shape=(1, 8, 8), code_dim=2,
                                 codebook_size=8, residual_blocks=1), lambda n: _unit(n, 64)),
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
COVERS = {"vae": ["vae-bernoulli", "vae-gaussian", "vae-conv-dlogistic", "vae-vamp", "vae-iaf", "vae-planar"],
          "hvae": ["hvae"], "ppca": ["ppca"], "ssvae": ["ssvae", "ssvae-all-labelled"], "cvae": ["cvae"],
          "vqvae": ["vqvae-gaussian", "vqvae-ema", "vqvae-bernoulli", "vqvae-conv"],
          "textvae": ["textvae"], "lstmlm": ["lstmlm"],
          "gmm": ["gmm-full", "gmm-diag", "gmm-spherical"],
          "bernvae": [f"bernvae-{e}" for e in ("reinforce", "vimco", "st", "gumbel", "st-gumbel",
                                               "gumbel-concrete", "conv-st")],
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

#: Pyro's own ELBOs, as a user would build them
STOCK_CASES = {
    "Trace_ELBO": lambda: Trace_ELBO(max_plate_nesting=1),
    "TraceGraph_ELBO": lambda: TraceGraph_ELBO(max_plate_nesting=1),
    "TraceMeanField_ELBO": lambda: TraceMeanField_ELBO(max_plate_nesting=1),
    "TraceEnum_ELBO": lambda: TraceEnum_ELBO(max_plate_nesting=1),
    "RenyiELBO": lambda: RenyiELBO(num_particles=3, max_plate_nesting=1),
    "JitTrace_ELBO": lambda: JitTrace_ELBO(max_plate_nesting=1, ignore_jit_warnings=True),
}

#: every objective case, ours and Pyro's: name -> factory
ALL_OBJECTIVES = {**{name: make for name, (make, _) in OBJECTIVE_CASES.items()}, **STOCK_CASES}

_GMM = {"gmm-full", "gmm-diag", "gmm-spherical"}
_VQ = {"vqvae-gaussian", "vqvae-ema", "vqvae-bernoulli", "vqvae-conv"}
#: a relaxed (Gumbel-softmax) sample against a discrete prior: only a closed-form KL may score it
_RELAXED = {"bernvae-gumbel", "catvae-gumbel"}
#: guides without rsample (score-function estimators)
_DISCRETE = {f"{m}-{e}" for m in ("bernvae", "catvae") for e in ("reinforce", "vimco")}
#: hard samples with a straight-through gradient
_STRAIGHT_THROUGH = {"bernvae-st", "catvae-st", "bernvae-st-gumbel", "catvae-st-gumbel", "bernvae-conv-st"}
_NOT_REBUILDABLE = {"bernvae-gumbel-concrete", "catvae-gumbel-concrete", "vae-iaf", "vae-planar"}
_IMPORTANCE_WEIGHTED = {"iwae", "iwae-dreg", "iwae-beta-annealed", "vimco", "RenyiELBO"}
_CLOSED_FORM_KL = {"meanfield", "meanfield-annealed-freebits", "elbo-freebits", "TraceMeanField_ELBO"}
_ENUM = {"enum", "TraceEnum_ELBO"}
_FREE_BITS = {"elbo-freebits", "meanfield-annealed-freebits"}

#: (model cases, objective cases, a phrase the refusal must contain), first match wins;
#: every pair listed nowhere must train
REFUSALS = [
    ({"ssvae"}, {"JitTrace_ELBO"}, "torch.jit.trace"),
    (_GMM | {"catvae-enum", "ssvae"}, set(ALL_OBJECTIVES) - _ENUM, "enumeration"),
    (_RELAXED, set(ALL_OBJECTIVES) - _CLOSED_FORM_KL, "outside the support"),
    (_DISCRETE, _CLOSED_FORM_KL, "no rsample"),
    (_DISCRETE, {"RenyiELBO"}, "no score-function gradient"),
    (_DISCRETE, {"iwae-dreg"}, "doubly reparameterized"),
    (_STRAIGHT_THROUGH, _IMPORTANCE_WEIGHTED, "straight-through gradient"),
    (_NOT_REBUILDABLE, {"iwae-dreg"}, "stopped parameters"),
    ({"hvae"}, _CLOSED_FORM_KL | {"meanfield-annealed-freebits"}, "not mean-field"),
    ({"hvae"}, {"iwae-dreg"}, "pathwise gradient through"),
    (_VQ | {"ppca", "vae-iaf", "vae-planar", "vae-vamp"}, _FREE_BITS, "independent dimensions"),
    (_VQ, {"meanfield", "TraceMeanField_ELBO", "iwae-dreg"}, "factor 'vq_loss'"),
    (_VQ | {"textvae", "lstmlm", "bernvae-reinforce", "catvae-reinforce", "ssvae-all-labelled"}, {"JitTrace_ELBO"},
     "torch.jit.trace"),
]

#: parameters that a pair may leave unchanged: the learned REINFORCE baseline, which only
#: TraceGraph_ELBO (objective 'tracegraph') trains
UNTRAINED = {(m, o): "baseline." for m in ("bernvae-reinforce", "catvae-reinforce")
             for o in ALL_OBJECTIVES if o not in ("tracegraph", "TraceGraph_ELBO")}


def expected_refusal(model_case, objective_case):
    """The phrase the refusal of this pair must contain, or ``None`` if it must train."""
    for models, objectives, phrase in REFUSALS:
        if model_case in models and objective_case in objectives:
            return phrase
    return None


#: (model cases, objective cases, why) of the pairs whose training step reads a tensor's value on
#: the host (a synchronisation per step on a GPU); the step of every other pair must not
HOST_READS = [
    ({"ssvae", "ssvae-all-labelled"}, set(OBJECTIVE_CASES),
     "the sizes of the labelled and the unlabelled part of a minibatch are read from its labels"),
    (set(MODEL_CASES), {"enum"}, "Pyro's Dice estimator (TraceEnum_ELBO) asks whether any enumerated "
     "probability is zero"),
]


def host_read(model_case, objective_case):
    """Why this pair's training step reads a tensor's value on the host, or ``None``."""
    for models, objectives, why in HOST_READS:
        if model_case in models and objective_case in objectives:
            return why
    return None
