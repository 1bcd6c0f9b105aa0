"""Fitting methods other than stochastic gradients: EM and NUTS."""

from pyro_lvm.inference.em import EMResult, fit_em, kmeans_plusplus
from pyro_lvm.inference.kmeans import KMeansResult, kmeans

__all__ = ["EMResult", "KMeansResult", "fit_em", "kmeans", "kmeans_plusplus"]
