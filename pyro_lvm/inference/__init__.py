"""Fitting methods other than stochastic gradients: EM and NUTS."""

from pyro_lvm.inference.em import EMResult, fit_em, kmeans_plusplus

__all__ = ["EMResult", "fit_em", "kmeans_plusplus"]
