"""The one ArviZ adapter: arviz 0.2x (Python 3.11) and arviz 1.x (Python >= 3.12).

arviz 0.2x's ``from_dict`` takes each group as a keyword and returns an
``InferenceData``; arviz 1.x's takes one dict of groups and returns an xarray
``DataTree``. Both write netCDF with ``to_netcdf`` and read it back with
``arviz.from_netcdf``. Arrays are ``(chain, draw, ...)`` for the posterior and
the log-likelihood.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np


def _major_version() -> int:
    import arviz

    return int(arviz.__version__.split(".")[0])


def to_inference_data(posterior: Dict[str, np.ndarray], log_likelihood: Optional[Dict[str, np.ndarray]] = None,
                      observed_data: Optional[Dict[str, np.ndarray]] = None,
                      dims: Optional[Dict[str, list]] = None, coords: Optional[Dict[str, list]] = None):
    """Build ArviZ data with the groups ``posterior``, ``log_likelihood``, ``observed_data``.

    >>> import numpy as np
    >>> idata = to_inference_data({"mu": np.zeros((2, 5))}, {"x": np.zeros((2, 5, 3))},
    ...                           {"x": np.zeros(3)})
    >>> sorted(group_names(idata))
    ['log_likelihood', 'observed_data', 'posterior']
    """
    import arviz

    groups = {"posterior": {k: np.asarray(v) for k, v in posterior.items()}}
    if log_likelihood is not None:
        groups["log_likelihood"] = {k: np.asarray(v) for k, v in log_likelihood.items()}
    if observed_data is not None:
        groups["observed_data"] = {k: np.asarray(v) for k, v in observed_data.items()}
    if _major_version() >= 1:
        return arviz.from_dict(groups, dims=dims, coords=coords)
    return arviz.from_dict(**groups, dims=dims, coords=coords)


def group_names(idata) -> list:
    """The group names of ArviZ data of either major version."""
    if hasattr(idata, "groups") and callable(idata.groups):
        return [g.strip("/") for g in idata.groups()]
    return [name for name in idata.children]


def save_netcdf(idata, path) -> None:
    """Write ArviZ data to a netCDF file readable by ``arviz.from_netcdf``."""
    idata.to_netcdf(str(path))


def loo(idata):
    """PSIS-LOO of ArviZ data (``arviz.loo`` in 0.2x, ``arviz_stats.loo`` in 1.x)."""
    if _major_version() >= 1:
        import arviz_stats

        return arviz_stats.loo(idata)
    import arviz

    return arviz.loo(idata)
