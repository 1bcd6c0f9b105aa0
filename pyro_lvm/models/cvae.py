r"""The conditional VAE: a VAE given a class label (Sohn, Lee & Yan 2015; Kingma et al.'s M2 with :math:`y` always seen).

Generative story, for each data point with its given condition :math:`c_n`
(a class, one-hot):

.. math::

    z_n \sim \mathcal{N}(0, I), \qquad x_n \mid z_n, c_n \sim p_\theta(x_n \mid z_n, c_n),

with the guide :math:`q_\phi(z \mid x, c)`. The condition is not modelled
(no :math:`p(c)`), so the test NLL is :math:`-\log p(x \mid c)`, by importance
sampling as for the VAE. Since :math:`z` is independent of :math:`c` under the
prior, a fixed :math:`z` decoded with each class in turn gives the same "style"
in every class (the figure ``class_samples.png``).

Rows end with the class label (:mod:`pyro_lvm.data.labels`); every label must
be known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from pyro_lvm.base import batch_size_of
from pyro_lvm.models.labelled import LabelledModel, broadcast_cat
from pyro_lvm.models.likelihoods import LIKELIHOODS, check_decoder_options, initial_output_bias
from pyro_lvm.nn import MLP, parse_hidden
from pyro_lvm.registry import MODELS


@dataclass
class CVAEConfig:
    """Hyperparameters of :class:`CVAE`.

    :param int input_dim: size of one data point (without the label); taken from the data set.
    :param int num_classes: number of classes of the condition.
    :param int latent_dim: size of :math:`z`.
    :param hidden: hidden layers of the encoder and (mirrored) the decoder.
    :param str activation: activation between layers.
    :param str likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"discretized_logistic"``.
    :param float min_scale: floor added to every scale.
    """

    input_dim: int = 784
    num_classes: int = 10
    latent_dim: int = 20
    hidden: Tuple[int, ...] = (400,)
    activation: str = "relu"
    likelihood: str = "bernoulli"
    min_scale: float = 1e-3

    def __post_init__(self):
        self.hidden = parse_hidden(self.hidden)
        check_decoder_options(self, positive=("input_dim", "latent_dim"))
        if int(self.num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")


@MODELS.register("cvae")
class CVAE(LabelledModel):
    r"""A VAE whose encoder and decoder read a given class label.

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import CVAE
        >>> m = CVAE(input_dim=6, num_classes=3, latent_dim=2, hidden=(8,))
        >>> rows = m.with_labels(torch.bernoulli(torch.full((4, 6), 0.5)), torch.tensor([0, 2, 1, 1]))
        >>> m.reconstruct(rows).shape
        torch.Size([4, 6])
        >>> m.class_samples(columns=5).shape     # 3 classes x 5 draws of z
        torch.Size([15, 6])
    """

    Config = CVAEConfig

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.likelihood = LIKELIHOODS[c.likelihood]
        self.encoder = MLP(c.input_dim + c.num_classes, c.hidden, 2 * c.latent_dim, c.activation)
        self.decoder = MLP(c.latent_dim + c.num_classes, tuple(reversed(c.hidden)),
                           self.likelihood.params * c.input_dim, c.activation)
        # the prior N(0, I) (StandardNormal) takes shape and device from prior_loc; both stay in checkpoints
        self.register_buffer("prior_loc", torch.zeros(c.latent_dim))
        self.register_buffer("prior_scale", torch.ones(c.latent_dim))

    @property
    def data_support(self) -> str:
        return self.likelihood.support

    def initialize(self, train: torch.Tensor) -> None:
        """Start the decoder at the data's mean (:func:`~pyro_lvm.models.likelihoods.initial_output_bias`)."""
        initial_output_bias(self.decoder, self.likelihood, self.observed_values(train))

    def encode(self, rows: torch.Tensor) -> dist.Distribution:
        r""":math:`q_\phi(z \mid x, c)`."""
        x, y = self.split(rows)
        loc, raw = self.encoder(broadcast_cat(x, self.one_hot(y))).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.config.min_scale).to_event(1)

    def model(self, x=None, *, data_size=None, num_samples=None):
        batch = batch_size_of(x, num_samples)
        if x is None:  # generation: the classes in turn
            c = self.one_hot(torch.arange(batch, device=self.prior_loc.device) % self.config.num_classes)
            values = None
        else:
            values, labels = self.split(x)
            c = self.one_hot(labels)
        with self.data_plate(batch, data_size, self.prior_loc.device):
            z = pyro.sample("z", self.prior(batch))
            return pyro.sample("x", self.decode_with(z, c), obs=values)

    def guide(self, x, *, data_size=None, num_samples=None):
        with self.data_plate(x.shape[0], data_size, x.device):
            return pyro.sample("z", self.encode(x))
