"""Small tensor functions shared by the models."""

import torch


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """The :math:`x` with :math:`\\log(1 + e^x) = y`, for ``y > 0``.

    >>> import torch
    >>> torch.nn.functional.softplus(inverse_softplus(torch.tensor(0.3))).item()  # doctest: +ELLIPSIS
    0.3...
    """
    return y + torch.log(-torch.expm1(-y))
