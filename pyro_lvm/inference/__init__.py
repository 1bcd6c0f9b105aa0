"""Fitting methods beside the amortized objectives: EM, NUTS, per-datapoint guides."""

from pyro_lvm.clustering import KMeansResult, kmeans, kmeans_plusplus
from pyro_lvm.inference.em import EMResult, fit_em
from pyro_lvm.inference.local import LocalGaussianGuide, fit_local_guide

__all__ = ["EMResult", "KMeansResult", "LocalGaussianGuide", "fit_em", "fit_local_guide", "kmeans",
           "kmeans_plusplus"]
