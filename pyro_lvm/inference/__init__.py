"""Fitting methods beside the amortized objectives: EM, NUTS, per-datapoint guides."""

from pyro_lvm.inference.em import EMResult, fit_em, kmeans_plusplus
from pyro_lvm.inference.kmeans import KMeansResult, kmeans
from pyro_lvm.inference.local import LocalGaussianGuide, fit_local_guide

__all__ = ["EMResult", "KMeansResult", "LocalGaussianGuide", "fit_em", "fit_local_guide", "kmeans",
           "kmeans_plusplus"]
