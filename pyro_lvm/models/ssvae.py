r"""The semi-supervised VAE M2 (Kingma, Rezende, Mohamed & Welling 2014).

Generative story, for each data point:

.. math::

    y_n \sim \mathrm{Cat}(\pi), \quad \pi = \tfrac1C, \qquad
    z_n \sim \mathcal{N}(0, I), \qquad
    x_n \mid y_n, z_n \sim p_\theta(x_n \mid y_n, z_n).

The guide is :math:`q_\phi(y \mid x)\, q_\phi(z \mid x, y)`: a classifier and an
encoder that reads the label. A labelled point observes :math:`y`; for an
unlabelled point the guide's ``y`` site is marked for parallel enumeration, so
``TraceEnum_ELBO`` (objective ``enum``) sums it out exactly,

.. math::

    \mathcal{U}(x) = \sum_y q_\phi(y \mid x) \big[\mathcal{L}(x, y) - \log q_\phi(y \mid x)\big],
    \qquad \mathcal{L}(x, y) = \mathbb{E}_{q_\phi(z \mid x, y)}\Big[\log \frac{p_\theta(x \mid y, z)\,
    p(y)\, p(z)}{q_\phi(z \mid x, y)}\Big],

and every other objective is refused for it (the label is never sampled in
training). Labelled points add the classification term
:math:`\alpha \log q_\phi(y \mid x)`, a factor ``classification`` of the
model that reads the guide's classifier, so the objective is

.. math::

    \sum_{\text{labelled}} \big[\mathcal{L}(x, y) + \alpha \log q_\phi(y \mid x)\big]
    + \sum_{\text{unlabelled}} \mathcal{U}(x).

Rows end with the label, ``-1`` where unknown (:mod:`pyro_lvm.data.labels`).
The two parts of a minibatch sit in two plates, ``labelled`` and ``data``; with
``data_size`` each is scaled by its own count in the data set over its count in
the minibatch (:attr:`SSVAE.labelled_count` labelled points, set by
:meth:`SSVAE.initialize`), as the command line's minibatches put a share of
labelled rows in every step. The test log-likelihood is that of :math:`x`
alone (test labels hidden), by importance sampling with :math:`y` drawn from
the classifier; ``test_accuracy`` scores the classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch.nn import functional as F

from pyro_lvm.base import batch_size_of
from pyro_lvm.models.labelled import LabelledModel, broadcast_cat
from pyro_lvm.models.likelihoods import LIKELIHOODS, check_decoder_options, initial_output_bias
from pyro_lvm.nn import MLP, parse_hidden
from pyro_lvm.registry import MODELS
from pyro_lvm.validation import positive_int


@dataclass
class SSVAEConfig:
    """Hyperparameters of :class:`SSVAE`.

    :param int input_dim: size of one data point (without the label); taken from the data set.
    :param int num_classes: number of classes :math:`C`.
    :param int latent_dim: size of :math:`z`.
    :param hidden: hidden layers of the classifier, the encoder and (mirrored) the decoder.
    :param str activation: activation between layers.
    :param str likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"discretized_logistic"``.
    :param alpha: weight :math:`\\alpha` of the classification term per labelled point; ``None``
        takes Kingma et al.'s :math:`0.1 N`, with :math:`N` the number of training points (counted by
        :meth:`SSVAE.initialize`; 1 before it runs).
    :param labels: training labels the command line keeps (balanced per class); ``None`` keeps all.
    :param int label_seed: seed of the choice of the kept labels.
    :param float label_share: the fraction of every training minibatch taken by labelled rows,
        which cycle (see :func:`~pyro_lvm.data.labels.stratified_order`). An epoch is one pass over
        the unlabelled rows, so a larger share means more steps per epoch, each cheaper (labelled
        rows need no enumeration), a little more compute, and every label seen more often: on MNIST
        in 10 epochs, 0.1, 0.5 and 0.75 gave test accuracies of 0.778, 0.811 and 0.853 with 100
        labels, 0.931, 0.945 and 0.952 with 3000.
    :param float min_scale: floor added to every scale.
    """

    input_dim: int = 784
    num_classes: int = 10
    latent_dim: int = 50
    hidden: Tuple[int, ...] = (500,)
    activation: str = "softplus"
    likelihood: str = "bernoulli"
    alpha: Optional[float] = None
    labels: Optional[int] = 100
    label_seed: int = 0
    label_share: float = 0.75
    min_scale: float = 1e-3

    def __post_init__(self):
        self.hidden = parse_hidden(self.hidden)
        check_decoder_options(self, positive=("input_dim", "latent_dim"))
        if int(self.num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.labels is not None:
            self.labels = positive_int("labels", self.labels)
        if not 0 < self.label_share < 1:
            raise ValueError(f"label_share must lie strictly between 0 and 1, got {self.label_share}")
        if self.alpha is not None and not self.alpha >= 0:
            raise ValueError(f"alpha must be non-negative, got {self.alpha}")


@MODELS.register("ssvae")
class SSVAE(LabelledModel):
    r"""Kingma et al.'s M2: a VAE with a partly observed class label.

    .. doctest::

        >>> import torch
        >>> from pyro.infer import TraceEnum_ELBO
        >>> from pyro_lvm.models import SSVAE
        >>> m = SSVAE(input_dim=6, num_classes=3, latent_dim=2, hidden=(8,))
        >>> x = torch.bernoulli(torch.full((4, 6), 0.5))
        >>> rows = m.with_labels(x, torch.tensor([2, -1, 0, -1]))   # two labelled, two not
        >>> loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(m.model, m.guide, rows)
        >>> m.classify(x).shape
        torch.Size([4])
    """

    Config = SSVAEConfig
    latent_sites = ("y", "z")
    hide_test_labels = True
    allows_unknown = True
    not_traceable = "the split into labelled and unlabelled rows depends on the data"

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.likelihood = LIKELIHOODS[c.likelihood]
        self.classifier = MLP(c.input_dim, c.hidden, c.num_classes, c.activation)
        self.encoder = MLP(c.input_dim + c.num_classes, c.hidden, 2 * c.latent_dim, c.activation)
        self.decoder = MLP(c.latent_dim + c.num_classes, tuple(reversed(c.hidden)),
                           self.likelihood.params * c.input_dim, c.activation)
        # the prior N(0, I) (StandardNormal) takes shape and device from prior_loc; both stay in checkpoints
        self.register_buffer("prior_loc", torch.zeros(c.latent_dim))
        self.register_buffer("prior_scale", torch.ones(c.latent_dim))
        self.register_buffer("labelled_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("train_count", torch.zeros((), dtype=torch.long))

    @property
    def data_support(self) -> str:
        return self.likelihood.support

    @property
    def default_objective(self) -> str:
        return "enum"

    def initialize(self, train: torch.Tensor) -> None:
        """Count the training rows (:attr:`train_count`, for the default :math:`\\alpha`) and the labelled
        ones (:attr:`labelled_count`, for the minibatch scales); start the decoder at the data's
        mean (:func:`~pyro_lvm.models.likelihoods.initial_output_bias`)."""
        self.labelled_count.fill_(int((train[:, -1] >= 0).sum()))
        self.train_count.fill_(train.shape[0])
        initial_output_bias(self.decoder, self.likelihood, self.observed_values(train))

    @property
    def alpha(self) -> float:
        """The weight of the classification term: the config's, or :math:`0.1 N`."""
        if self.config.alpha is not None:
            return float(self.config.alpha)
        return 0.1 * max(int(self.train_count), 10)

    # ------------------------------------------------------------- networks
    def classify_logits(self, x: torch.Tensor) -> torch.Tensor:
        r"""Logits of :math:`q_\phi(y \mid x)`."""
        return self.classifier(x)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class of each row of values ``x`` (without a label column)."""
        return self.classify_logits(x).argmax(-1)

    def encode_with(self, x: torch.Tensor, y_onehot: torch.Tensor) -> dist.Distribution:
        r""":math:`q_\phi(z \mid x, y)` for one-hot labels (broadcast against ``x``)."""
        loc, raw = self.encoder(broadcast_cat(x, y_onehot)).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.config.min_scale).to_event(1)

    def known_or_predicted(self, x, y):
        return torch.where(y >= 0, y, self.classify(x))

    def encode(self, rows: torch.Tensor) -> dist.Distribution:
        r""":math:`q_\phi(z \mid x, y)` at each row's label, or at the classifier's guess where unknown."""
        x, y = self.split(rows)
        return self.encode_with(x, self.one_hot(self.known_or_predicted(x, y)))

    # ----------------------------------------------------------- model/guide
    def _scales(self, lab: torch.Tensor, data_size: Optional[int]) -> Tuple[Any, Any]:
        """Minibatch scales of the labelled and unlabelled parts: each part's count in the data set
        over its count in the minibatch (``None`` without ``data_size``)."""
        if data_size is None or data_size == lab.numel():
            return None, None
        n_l, b_l = int(self.labelled_count), int(lab.sum())
        if n_l == 0 or n_l > data_size:  # not initialized on the data: the whole minibatch's N/B
            return data_size / lab.numel(), data_size / lab.numel()
        b_u = lab.numel() - b_l
        return n_l / max(b_l, 1), (data_size - n_l) / max(b_u, 1)

    def model(self, x=None, *, data_size=None, num_samples=None):
        if x is None:  # generation: every label and latent from the prior
            batch = batch_size_of(x, num_samples)
            with pyro.plate("data", batch, dim=-1):
                y = pyro.sample("y", self.label_prior(batch))
                z = pyro.sample("z", self.prior(batch))
                return pyro.sample("x", self.decode_with(z, y))
        values, labels = self.split(x)
        lab = labels >= 0
        scale_l, scale_u = self._scales(lab, data_size)
        if lab.any():
            xl, yl = values[lab], labels[lab]
            with pyro.plate("labelled", xl.shape[0], dim=-1), poutine.scale(scale=scale_l or 1.0):
                y = pyro.sample("y_labelled", self.label_prior(xl.shape[0]), obs=self.one_hot(yl))
                z = pyro.sample("z_labelled", self.prior(xl.shape[0]))
                pyro.sample("x_labelled", self.decode_with(z, y), obs=xl)
                pyro.factor("classification",  # the classification term, per labelled point
                            self.alpha * dist.Categorical(logits=self.classify_logits(xl)).log_prob(yl))
        if not lab.all():
            xu = values[~lab]
            with pyro.plate("data", xu.shape[0], dim=-1), poutine.scale(scale=scale_u or 1.0):
                y = pyro.sample("y", self.label_prior(xu.shape[0]))
                z = pyro.sample("z", self.prior(xu.shape[0]))
                pyro.sample("x", self.decode_with(z, y), obs=xu)

    def guide(self, x, *, data_size=None, num_samples=None):
        values, labels = self.split(x)
        lab = labels >= 0
        scale_l, scale_u = self._scales(lab, data_size)
        if lab.any():
            xl = values[lab]
            with pyro.plate("labelled", xl.shape[0], dim=-1), poutine.scale(scale=scale_l or 1.0):
                pyro.sample("z_labelled", self.encode_with(xl, self.one_hot(labels[lab])))
        if not lab.all():
            xu = values[~lab]
            with pyro.plate("data", xu.shape[0], dim=-1), poutine.scale(scale=scale_u or 1.0):
                y = pyro.sample("y", dist.OneHotCategorical(logits=self.classify_logits(xu)),
                                infer={"enumerate": "parallel"})
                pyro.sample("z", self.encode_with(xu, y))

    def predictive_guide(self, x, **kwargs):
        r"""The guide over the generating path's ``y`` and ``z``, one plate over all rows in their
        order: a labelled row's ``y`` is its label (a point mass), an unlabelled row's is drawn from
        :math:`q_\phi(y \mid x)`; then :math:`z \sim q_\phi(z \mid x, y)`. A posterior predictive
        replicates each row from it."""
        values, labels = self.split(x)
        logits = self.classify_logits(values)
        known = torch.full_like(logits, -math.inf).scatter(-1, labels.clamp(min=0).unsqueeze(-1), 0.0)
        logits = torch.where((labels >= 0).unsqueeze(-1), known, logits)
        with pyro.plate("data", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.OneHotCategorical(logits=logits))
            pyro.sample("z", self.encode_with(values, y))

    # ------------------------------------------------------------- metrics
    def extra_metrics(self, train, test, metrics, labels=None) -> Dict[str, Any]:
        """``test_accuracy``: the fraction of test points the classifier :math:`q_\\phi(y \\mid x)` labels right."""
        if not labels or "test" not in labels:
            return {}
        x = self.observed_values(test)
        truth = labels["test"].to(x.device)
        predicted = torch.cat([self.classify(x[i:i + 1000]) for i in range(0, x.shape[0], 1000)])
        return {"test_accuracy": (predicted == truth).float().mean().item()}
