"""Latent-variable models; importing this package registers them all."""

from pyro_lvm.models.gmm import GMM, GMMConfig
from pyro_lvm.models.ppca import PPCA, PPCAConfig
from pyro_lvm.models.vae import VAE, VAEConfig

__all__ = ["GMM", "GMMConfig", "PPCA", "PPCAConfig", "VAE", "VAEConfig"]
