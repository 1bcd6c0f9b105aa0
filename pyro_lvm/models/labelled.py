r"""What the models with a class label share (:class:`~pyro_lvm.models.SSVAE`, :class:`~pyro_lvm.models.CVAE`).

Their data rows carry the label as the last column (:mod:`pyro_lvm.data.labels`):
``[x_1, ..., x_D, y]`` with ``y`` a class index or ``-1`` (unknown). The decoder
reads :math:`(z, \mathrm{onehot}(y))`; a figure shows class-conditional samples,
a row per class with the same :math:`z` down each column (:meth:`LabelledModel.class_samples`,
drawn by the run's figures as ``class_samples.png`` through :meth:`LabelledModel.image_grids`).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import pyro.distributions as dist
import torch
from torch.nn import functional as F

from pyro_lvm.base import LatentVariableModel
from pyro_lvm.data.labels import UNKNOWN, with_label_column
from pyro_lvm.distributions import StandardNormal


def broadcast_cat(*parts: torch.Tensor) -> torch.Tensor:
    """Concatenate along the last dim after broadcasting the other dims (enumerated and particle dims)."""
    shape = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(shape + p.shape[-1:]) for p in parts], dim=-1)


class LabelledModel(LatentVariableModel):
    """A model whose rows end with a class label; subclasses set ``hide_test_labels`` and the config
    fields ``input_dim``, ``num_classes``, ``latent_dim``, ``min_scale``, and define ``decoder``."""

    #: the test labels are hidden from the model (its NLL is that of x alone)
    hide_test_labels = False
    #: labels may be unknown (-1) in the training rows
    allows_unknown = False

    # ------------------------------------------------------------------ data
    def prepare_data(self, data):
        """The data set with its labels as the last column (see :mod:`pyro_lvm.data.labels`)."""
        hide = ("valid", "test") if self.hide_test_labels else ()
        share = {"share": self.config.label_share} if hasattr(self.config, "label_share") else {}
        return with_label_column(data, self.config.num_classes, keep=getattr(self.config, "labels", None),
                                 seed=getattr(self.config, "label_seed", 0), hide=hide, **share)

    def observed_values(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[..., :-1]

    def split(self, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: the values and the labels (long, ``-1`` unknown) of rows."""
        return rows[..., :-1], rows[..., -1].round().long()

    def evaluation_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows with their labels hidden (``-1``) where the model's NLL is that of the values
        alone (``hide_test_labels``), else unchanged."""
        if not self.hide_test_labels or bool((rows[..., -1] == UNKNOWN).all()):  # (hidden already: no copy)
            return rows
        return self.with_labels(self.observed_values(rows), torch.full_like(rows[..., -1], UNKNOWN))

    @staticmethod
    def with_labels(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Rows for this model from values ``x`` (N, D) and labels ``y`` (N,), ``-1`` for unknown."""
        return torch.cat([x, y.to(x).unsqueeze(-1)], dim=-1)

    def check_data(self, x: Any, name: str = "x") -> torch.Tensor:
        d, c = self.config.input_dim, self.config.num_classes
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[-1] != d + 1:
            raise ValueError(f"{name} must have shape (num_points, {d + 1}): {d} values and the class label "
                             f"last (-1 where unknown; {type(self).__name__}.with_labels(x, y) builds it), "
                             f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.float()
        values, labels = x[:, :-1], x[:, -1]
        self.check_values(values, name, d)  # the values as the likelihood needs them
        low = UNKNOWN if self.allows_unknown else 0
        if not torch.isfinite(labels).all() or ((labels != labels.round()) | (labels < low) | (labels >= c)).any():
            what = "-1 (unknown) or " if self.allows_unknown else ""
            raise ValueError(f"the last column of {name} must hold class labels, {what}0..{c - 1}")
        return x

    @property
    def input_dim(self) -> int:
        return self.config.input_dim + 1

    # --------------------------------------------------------------- pieces
    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.config.num_classes).to(self.prior_loc)

    def prior(self, num: int) -> dist.Distribution:
        return StandardNormal(self.prior_loc).expand([num, self.config.latent_dim]).to_event(1)

    def label_prior(self, num: int) -> dist.Distribution:
        """:math:`p(y)`, uniform over the classes."""
        return dist.OneHotCategorical(logits=torch.zeros(num, self.config.num_classes, device=self.prior_loc.device))

    def decode_with(self, z: torch.Tensor, y_onehot: torch.Tensor) -> dist.Distribution:
        r""":math:`p_\theta(x \mid z, y)` for one-hot labels (broadcast against ``z``)."""
        return self.likelihood.make(self.decoder(broadcast_cat(z, y_onehot)), self.config.min_scale)

    def decode(self, code: torch.Tensor) -> dist.Distribution:
        r""":math:`p_\theta(x \mid z, y)` of a code :math:`(z, \mathrm{onehot}(y))` (``latent_dim + num_classes``)."""
        return self.likelihood.make(self.decoder(code), self.config.min_scale)

    def sample_prior(self, num: int) -> torch.Tensor:
        """Codes :math:`(z, \\mathrm{onehot}(y))` with the classes in turn and :math:`z` from the prior."""
        y = torch.arange(num, device=self.prior_loc.device) % self.config.num_classes
        return torch.cat([self.prior(num).sample(), self.one_hot(y)], dim=-1)

    @torch.no_grad()
    def reconstruct(self, rows: torch.Tensor) -> torch.Tensor:
        x, y = self.split(rows)
        return self.decode_with(self.encode(rows).mean, self.one_hot(self.known_or_predicted(x, y))).mean

    def known_or_predicted(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The labels, unknown ones filled in (by the classifier where the model has one)."""
        if (y < 0).any():
            raise ValueError("labels are needed (no -1) for this model")
        return y

    #: ``decode`` takes a code and a label: no latent traversals
    decodes_codes_alone = False

    def image_grids(self, data: Any) -> Dict[str, Any]:
        """``class_samples``: a row of samples per class, the same :math:`z` down each column."""
        return {"class_samples": (self.class_samples(8), f"a row per class ({self.config.num_classes}), "
                                  "the same z down each column", 8)}

    @torch.no_grad()
    def class_samples(self, columns: int = 8) -> torch.Tensor:
        """Means of :math:`p(x \\mid z, y)`: ``num_classes`` rows by ``columns``, the same :math:`z` down a column."""
        c = self.config.num_classes
        z = self.prior(columns).sample().repeat(c, 1)
        y = torch.arange(c, device=z.device).repeat_interleave(columns)
        return self.decode_with(z, self.one_hot(y)).mean
