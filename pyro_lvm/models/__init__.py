"""Latent-variable models; importing this package registers them all."""

from pyro_lvm.models.cvae import CVAE, CVAEConfig
from pyro_lvm.models.discrete_vae import BernVAE, BernVAEConfig, CatVAE, CatVAEConfig
from pyro_lvm.models.gmm import GMM, GMMConfig
from pyro_lvm.models.hvae import HVAE, HVAEConfig
from pyro_lvm.models.ppca import PPCA, PPCAConfig
from pyro_lvm.models.ssvae import SSVAE, SSVAEConfig
from pyro_lvm.models.text_vae import LSTMLM, LSTMLMConfig, TextVAE, TextVAEConfig
from pyro_lvm.models.vae import VAE, VAEConfig
from pyro_lvm.models.vqvae import VQVAE, VQVAEConfig

__all__ = ["BernVAE", "BernVAEConfig", "CVAE", "CVAEConfig", "CatVAE", "CatVAEConfig", "GMM", "GMMConfig", "HVAE", "HVAEConfig", "LSTMLM", "LSTMLMConfig", "PPCA", "PPCAConfig", "SSVAE", "SSVAEConfig", "TextVAE", "TextVAEConfig", "VAE", "VAEConfig", "VQVAE", "VQVAEConfig"]
