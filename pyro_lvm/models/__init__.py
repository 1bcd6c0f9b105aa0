"""Latent-variable models; importing this package registers them all."""

from pyro_lvm.models.ppca import PPCA, PPCAConfig
from pyro_lvm.models.vae import VAE, VAEConfig

__all__ = ["PPCA", "PPCAConfig", "VAE", "VAEConfig"]
