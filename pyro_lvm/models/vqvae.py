r"""Vector-quantized VAE (van den Oord, Vinyals & Kavukcuoglu 2017), ``vqvae``.

An encoder maps :math:`x` to :math:`L` vectors :math:`z_e(x)_l \in \mathbb{R}^D`;
each is replaced by its nearest entry of a codebook :math:`e_1, \dots, e_K`:

.. math::

    k_l(x) = \arg\min_k \lVert z_e(x)_l - e_k \rVert, \qquad z_q(x)_l = e_{k_l(x)} .

Generative story: :math:`k_l \sim \mathrm{Uniform}\{1..K\}` independently,
:math:`x \mid k \sim p_\theta(x \mid e_{k_1}, \dots, e_{k_L})` (Gaussian with a
learned scale, or Bernoulli). The posterior is the point mass
:math:`q(k \mid x) = \delta_{k(x)}`, so :math:`\mathrm{KL}(q \,\|\, p) = L \log K`
and the ELBO is :math:`\log p_\theta(x \mid z_q(x)) - L \log K`.

Training minimises

.. math::

    -\log p_\theta(x \mid z_q(x))
    + \lVert \mathrm{sg}[z_e(x)] - z_q(x) \rVert^2
    + \beta \lVert z_e(x) - \mathrm{sg}[z_q(x)] \rVert^2 ,

with the straight-through gradient :math:`z_e + \mathrm{sg}[z_q - z_e]` from
the decoder to the encoder. With ``ema_decay > 0`` the codebook term is
dropped and the codebook follows exponential moving averages of the encoder
outputs assigned to each code (Appendix A.1 of the paper). The codebook is
initialised from the encoder outputs of the first training batch
(k-means++ seeding), which keeps codes from starting dead.

As a Pyro model/guide pair: the guide samples ``z`` from
``Delta(z_st, event_dim=2)`` and adds the codebook and commitment terms with
``pyro.factor`` (only in training mode); the model scores ``z`` under the
uniform distribution over codebook configurations, whose log probability is
the constant :math:`-L \log K`. Train it with the ``elbo`` objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_lvm.base import LatentVariableModel, batch_size_of
from pyro_lvm.clustering import kmeans, kmeans_plusplus
from pyro_lvm.nn import ACTIVATIONS, MLP, ConvDecoder, ConvEncoder, check_network, grid_sizes, parse_hidden
from pyro_lvm.registry import MODELS

LIKELIHOODS = ("gaussian", "bernoulli")


@dataclass
class VQVAEConfig:
    """Hyperparameters of :class:`VQVAE`.

    With ``network="conv"`` the encoder is the paper's layout (strided 4x4
    convolutions with ``channels``, ``residual_blocks`` residual blocks, a 1x1
    convolution to ``code_dim`` channels) and the codes form a spatial grid: one
    code per cell of the last feature map, so ``num_latents`` is the grid's size
    (e.g. 7 x 7 = 49 for 28 x 28 images and two strided layers); the decoder
    mirrors it with transposed convolutions. With ``"mlp"`` ``num_latents``
    (default 16) code vectors come from an MLP with layers ``hidden``.
    """

    input_dim: int = 784
    hidden: Tuple[int, ...] = (512, 256)
    activation: str = "relu"
    num_latents: Optional[int] = None
    code_dim: int = 16
    codebook_size: int = 64
    commitment: float = 0.25
    ema_decay: float = 0.0
    likelihood: str = "gaussian"
    min_scale: float = 1e-3
    network: str = "mlp"
    channels: Tuple[int, ...] = (32, 64)
    residual_blocks: int = 2
    image_shape: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        self.hidden = parse_hidden(self.hidden)
        self.channels = parse_hidden(self.channels)
        self.image_shape = check_network(self.network, self.input_dim, self.image_shape, self.channels)
        if self.residual_blocks < 0:
            raise ValueError(f"residual_blocks must be non-negative, got {self.residual_blocks}")
        if self.network == "conv":
            grid = grid_sizes(*self.image_shape[1:], len(self.channels))[-1]
            cells = grid[0] * grid[1]
            if self.num_latents not in (None, cells):
                raise ValueError(f"with network 'conv' the codes are a {grid[0]}x{grid[1]} grid, so num_latents "
                                 f"is {cells}; got {self.num_latents} (leave it out)")
            self.num_latents = cells
        elif self.num_latents is None:
            self.num_latents = 16
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        for name in ("input_dim", "num_latents", "code_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if self.commitment < 0:
            raise ValueError(f"commitment must be non-negative, got {self.commitment}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: learn the codebook by gradient), "
                             f"got {self.ema_decay}")


class UniformCodes(TorchDistribution):
    r"""Uniform distribution over the :math:`K^L` configurations of ``L`` codebook vectors.

    Event shape ``(L, D)``; :meth:`log_prob` is the constant :math:`-L \log K`
    (values are assumed to be codebook vectors, as the guide produces them).
    """

    arg_constraints: Dict[str, Any] = {}
    support = constraints.independent(constraints.real, 2)

    def __init__(self, codebook: torch.Tensor, num_latents: int, batch_shape=torch.Size(),
                 validate_args=None):
        self.codebook = codebook
        self.num_latents = num_latents
        event_shape = torch.Size((num_latents, codebook.shape[-1]))
        super().__init__(torch.Size(batch_shape), event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return UniformCodes(self.codebook, self.num_latents, batch_shape)

    def sample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.batch_shape + (self.num_latents,)
        idx = torch.randint(self.codebook.shape[0], shape, device=self.codebook.device)
        return self.codebook[idx]

    def log_prob(self, value):
        log_p = -self.num_latents * math.log(self.codebook.shape[0])
        return torch.full(value.shape[:-2], log_p, dtype=value.dtype, device=value.device)


@MODELS.register("vqvae")
class VQVAE(LatentVariableModel):
    r"""VQ-VAE with an MLP encoder and decoder; see :mod:`pyro_lvm.models.vqvae`.

    .. doctest::

        >>> import torch
        >>> from pyro_lvm.models import VQVAE
        >>> from pyro_lvm.objectives import ELBO
        >>> vq = VQVAE(input_dim=12, hidden=(16,), num_latents=3, code_dim=2, codebook_size=8)
        >>> x = torch.rand(5, 12)
        >>> ELBO().terms(vq.model, vq.guide, x).loss.isfinite().item()
        True
        >>> vq.codes(x).shape   # one code index per latent position
        torch.Size([5, 3])
    """

    Config = VQVAEConfig
    not_traceable = ("the codebook is initialised from the first training batch and the EMA update "
                     "runs in Python")

    not_recordable = None  # once the codebook is initialised: a fixed computation, EMA update included

    @property
    def not_recordable_yet(self) -> Optional[str]:
        if not self._codebook_initialized():
            return "the codebook is initialised from the first training batch"
        return None

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        size = c.num_latents * c.code_dim
        if c.network == "conv":  # a grid of codes: (batch, code_dim, h, w) <-> (batch, L, code_dim)
            self.encoder = ConvEncoder(c.image_shape, c.channels, c.code_dim, c.activation, spatial=True,
                                       residual_blocks=c.residual_blocks)
            self.decoder = ConvDecoder(c.code_dim, c.image_shape, c.channels, 1, c.activation, spatial=True,
                                       residual_blocks=c.residual_blocks)
            self.grid = self.encoder.grid
        else:
            self.encoder = MLP(c.input_dim, c.hidden, size, c.activation)
            self.decoder = MLP(size, tuple(reversed(c.hidden)), c.input_dim, c.activation)
            self.grid = None
        codebook = torch.randn(c.codebook_size, c.code_dim) / math.sqrt(c.code_dim)
        if c.ema_decay == 0:
            self.codebook = nn.Parameter(codebook)
        else:  # moving averages, no gradient: a buffer (same state_dict key)
            self.register_buffer("codebook", codebook)
        self.raw_scale = nn.Parameter(torch.zeros(())) if c.likelihood == "gaussian" else None
        self.register_buffer("ema_count", torch.ones(c.codebook_size))
        self.register_buffer("ema_sum", self.codebook.detach().clone())
        self.register_buffer("initialized", torch.tensor(False))
        # whether the codebook is initialised, known on the host once the buffer says so (not read
        # from the device each step); forgotten when a state is loaded
        self._initialized_on_host = False
        self.register_load_state_dict_post_hook(VQVAE._forget_initialized)

    @staticmethod
    def _forget_initialized(module: "VQVAE", incompatible_keys) -> None:
        module._initialized_on_host = False

    def _codebook_initialized(self) -> bool:
        """Whether the codebook was initialised from data: the buffer ``initialized``, read from
        the device until it says yes (at most once after construction or loading)."""
        if not self._initialized_on_host:
            self._initialized_on_host = bool(self.initialized)
        return self._initialized_on_host

    @property
    def data_support(self) -> str:
        return "binary" if self.config.likelihood == "bernoulli" else "real"

    # ------------------------------------------------------------ quantizing
    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`z_e(x)`, shape ``(batch, L, D)``."""
        c = self.config
        out = self.encoder(x)
        if self.grid is not None:  # (..., D, h, w) -> (..., h * w, D)
            return out.flatten(-2).transpose(-1, -2)
        return out.reshape(x.shape[:-1] + (c.num_latents, c.code_dim))

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook entry of each vector of ``z_e``."""
        e = self.codebook
        d2 = (z_e ** 2).sum(-1, keepdim=True) - 2 * z_e @ e.T + (e ** 2).sum(-1)
        return d2.argmin(-1)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code indices :math:`k(x)`, shape ``(batch, L)``."""
        with torch.no_grad():
            return self.nearest(self.encoder_output(x))

    @torch.no_grad()
    def _init_codebook(self, z_e: torch.Tensor) -> None:
        flat = z_e.reshape(-1, z_e.shape[-1])
        generator = torch.Generator(device=flat.device)
        generator.manual_seed(int(torch.randint(2**31 - 1, (1,))))
        if flat.shape[0] >= self.config.codebook_size:
            self.codebook.copy_(kmeans_plusplus(flat, self.config.codebook_size, generator))
        self.ema_sum.copy_(self.codebook)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)
        self._initialized_on_host = True

    @torch.no_grad()
    def _ema_update(self, z_e: torch.Tensor, idx: torch.Tensor) -> None:
        c = self.config
        flat, idx = z_e.reshape(-1, c.code_dim), idx.reshape(-1)
        # (bincount would read the largest index on the host: a synchronisation on a GPU)
        counts = torch.zeros_like(self.ema_count).index_add_(0, idx, torch.ones_like(idx, dtype=flat.dtype))
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)
        self.ema_count.mul_(c.ema_decay).add_(counts, alpha=1 - c.ema_decay)
        self.ema_sum.mul_(c.ema_decay).add_(sums, alpha=1 - c.ema_decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (n + c.codebook_size * 1e-5) * n  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(-1))

    # ------------------------------------------------------------- densities
    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """The point-mass posterior at :math:`z_q(x)` (event shape ``(L, D)``)."""
        return dist.Delta(self.codebook[self.nearest(self.encoder_output(x))], event_dim=2)

    def prior(self, num: int) -> dist.Distribution:
        return UniformCodes(self.codebook, self.config.num_latents).expand([num])

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        if self.grid is not None:  # (..., h * w, D) -> (..., D, h, w)
            out = self.decoder(z.transpose(-1, -2).reshape(z.shape[:-2] + (z.shape[-1],) + self.grid))
        else:
            out = self.decoder(z.reshape(z.shape[:-2] + (self.config.num_latents * self.config.code_dim,)))
        if self.config.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(1)
        scale = F.softplus(self.raw_scale) + self.config.min_scale
        return dist.Normal(torch.sigmoid(out), scale.expand(out.shape)).to_event(1)

    def model(self, x=None, *, data_size=None, num_samples=None):
        batch = batch_size_of(x, num_samples)
        with self.data_plate(batch, data_size, self.codebook.device):
            z = pyro.sample("z", self.prior(batch))
            return pyro.sample("x", self.decode(z), obs=x)

    def guide(self, x, *, data_size=None, num_samples=None):
        z_e = self.encoder_output(x)
        if self.training and not self._codebook_initialized():
            self._init_codebook(z_e)
        idx = self.nearest(z_e)
        z_q = self.codebook[idx]
        with self.data_plate(x.shape[0], data_size, x.device):
            if self.training:
                c = self.config
                vq = c.commitment * ((z_e - z_q.detach()) ** 2).sum((-1, -2))
                if c.ema_decay > 0:
                    if torch.is_grad_enabled():
                        self._ema_update(z_e.detach(), idx)  # (a recorded step has no no_grad)
                else:
                    vq = vq + ((z_e.detach() - z_q) ** 2).sum((-1, -2))
                # a factor in the guide adds to log q, i.e. to the loss -ELBO
                pyro.factor("vq_loss", vq, has_rsample=True)
            return pyro.sample("z", dist.Delta(z_e + (z_q - z_e).detach(), event_dim=2))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).mean).mean

    # ------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def code_statistics(self, x: torch.Tensor, batch_size: int = 1000) -> Dict[str, float]:
        """``codebook_usage`` (fraction of codes used on ``x``) and ``code_perplexity``
        (:math:`\\exp` of the entropy of the empirical code frequencies)."""
        counts = torch.zeros(self.config.codebook_size, device=x.device)
        for i in range(0, x.shape[0], batch_size):
            counts += torch.bincount(self.codes(x[i:i + batch_size]).reshape(-1),
                                     minlength=self.config.codebook_size).to(counts.dtype)
        p = counts / counts.sum()
        entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
        return {"codebook_usage": (counts > 0).float().mean().item(), "code_perplexity": math.exp(entropy)}

    @torch.no_grad()
    def encoder_mutual_information(self, x: torch.Tensor, batch_size: int = 1000) -> float:
        r""":math:`I_q(x; k) = H(k)` for the deterministic encoder: the plug-in entropy of the
        code configurations on ``x`` (at most :math:`\log N`)."""
        codes = torch.cat([self.codes(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        _, counts = torch.unique(codes, dim=0, return_counts=True)
        p = counts.to(torch.float64) / codes.shape[0]
        return -(p * p.log()).sum().item()

    @torch.no_grad()
    def recon_mse(self, x: torch.Tensor, batch_size: int = 1000) -> float:
        """Mean squared error per pixel of :meth:`reconstruct`."""
        total = sum(((self.reconstruct(x[i:i + batch_size]) - x[i:i + batch_size]) ** 2).sum().item()
                    for i in range(0, x.shape[0], batch_size))
        return total / x.numel()

    def extra_metrics(self, train: torch.Tensor, test: torch.Tensor, metrics: Dict[str, Any],
                      labels=None) -> Dict[str, Any]:
        """Code usage, reconstruction MSE and the shallow k-means baseline with the same K."""
        was = self.training
        self.eval()
        try:
            out = {"test_recon_mse": self.recon_mse(test), **self.code_statistics(test)}
        finally:
            self.train(was)
        shallow = kmeans(train, self.config.codebook_size, max_iter=100,
                         generator=torch.Generator(device=train.device).manual_seed(0))
        out["shallow_recon_mse"] = ((shallow.reconstruct(test) - test) ** 2).mean().item()
        return out
