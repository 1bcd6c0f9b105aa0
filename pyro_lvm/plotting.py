"""Figures: arrays in, PNG files out. No pyplot state is touched."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from pyro_lvm.files import save_figure


def _as_images(images: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """Rows to ``(n, H, W)`` (one channel) or ``(n, H, W, C)`` (channels last, for ``imshow``)."""
    shape = tuple(image_shape)
    images = np.asarray(images, dtype=float).reshape((-1,) + shape)
    if len(shape) == 3:  # (C, H, W), rows channel-first
        images = images[:, 0] if shape[0] == 1 else np.moveaxis(images, 1, -1)
    return images


def _grid(images: np.ndarray, ncol: int) -> np.ndarray:
    n, h, w = images.shape[:3]
    nrow = math.ceil(n / ncol)
    canvas = np.ones((nrow * (h + 1) + 1, ncol * (w + 1) + 1) + images.shape[3:])
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = img
    return canvas


def image_grid(images: np.ndarray, image_shape: Sequence[int], path, title: str = "",
               ncol: int = 8) -> Path:
    """Save rows of ``images`` (values in [0, 1]) as one grid image; ``image_shape`` is
    ``(H, W)`` or ``(C, H, W)`` (rows channel-first, 1 or 3 channels)."""
    canvas = _grid(np.clip(_as_images(images, image_shape), 0, 1), ncol)
    fig = Figure(figsize=(ncol * 0.8, canvas.shape[0] / canvas.shape[1] * ncol * 0.8 + 0.4))
    ax = fig.add_subplot()
    ax.imshow(canvas, cmap="gray" if canvas.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def reconstructions(inputs: np.ndarray, recon: np.ndarray, image_shape: Sequence[int], path,
                    title: str = "inputs (odd rows) and reconstructions (even rows)",
                    ncol: int = 8) -> Path:
    """Inputs and their reconstructions, in alternating rows."""
    dim = int(np.prod(image_shape))
    inputs = np.asarray(inputs).reshape(-1, dim)
    recon = np.asarray(recon).reshape(-1, dim)
    ncol = max(1, min(ncol, len(inputs), len(recon)))  # a small test set fills one row
    n = (min(len(inputs), len(recon)) // ncol) * ncol
    rows = []
    for r in range(0, n, ncol):
        rows += [inputs[r:r + ncol], recon[r:r + ncol]]
    return image_grid(np.concatenate(rows), image_shape, path, title, ncol)


def latent_scatter(codes: np.ndarray, labels: Optional[np.ndarray], path, class_names: Optional[Sequence[str]] = None,
                   title: str = "test encodings") -> Path:
    """Latent codes in 2-D coloured by label: the codes themselves when they have two
    dimensions, else their first two principal components (the share of variance
    each explains is in the axis label)."""
    from matplotlib import colormaps

    codes = np.asarray(codes, dtype=float).reshape(len(codes), -1)
    if codes.shape[1] == 1:
        codes = np.concatenate([codes, np.zeros_like(codes)], axis=1)
    if codes.shape[1] == 2:
        xy, names = codes, ["z1", "z2"]
    else:
        centred = codes - codes.mean(0)
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        share = sv ** 2 / max((sv ** 2).sum(), 1e-12)
        xy = centred @ vt[:2].T
        names = [f"PC{i + 1} ({100 * share[i]:.0f}% of variance)" for i in range(2)]
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.5, linewidths=0)
    else:
        labels = np.asarray(labels)
        cmap = colormaps["tab10"] if labels.max() < 10 else colormaps["tab20"]
        for k in np.unique(labels):
            keep = labels == k
            name = class_names[int(k)] if class_names is not None and int(k) < len(class_names) else str(int(k))
            ax.scatter(xy[keep, 0], xy[keep, 1], s=4, alpha=0.6, linewidths=0, color=cmap(int(k) % cmap.N),
                       label=name)
        ax.legend(markerscale=3, fontsize=8, loc="best", framealpha=0.8)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def latent_traversal(images: np.ndarray, image_shape: Sequence[int], values: Sequence[float],
                     dims: Sequence[int], path, title: str = "") -> Path:
    """A row per latent dimension in ``dims``, a column per value in ``values`` (the
    other dimensions fixed): ``images`` holds the rows one after the other."""
    pics = _as_images(images, image_shape)
    ncol = len(values)
    canvas = _grid(np.clip(pics, 0, 1), ncol)
    fig = Figure(figsize=(ncol * 0.7 + 1.0, canvas.shape[0] / canvas.shape[1] * ncol * 0.7 + 0.6))
    ax = fig.add_subplot()
    ax.imshow(canvas, cmap="gray" if canvas.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    h, w = pics.shape[1:3]
    ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(len(dims))], [f"z{d + 1}" for d in dims])
    ax.set_xticks([1 + c * (w + 1) + w / 2 for c in range(ncol)], [f"{v:+.1f}" for v in values], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel("value of the varied dimension, in prior standard deviations from the prior mean", fontsize=8)
    ax.set_title(title or "latent traversals: one dimension varied, the others at the code of one test image",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def training_curve(history: List[Dict[str, Any]], path, ylabel: str = "loss per data point",
                   step_log: Optional[Sequence[Sequence[float]]] = None) -> Path:
    """Training loss per step (when ``step_log`` is given) and per epoch, validation loss per epoch.

    The x axis is in epochs; ``step_log`` rows are ``(step, loss)``.
    """
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    steps_per_epoch = history[0]["step"] / history[0]["epoch"] if history else 1.0
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    if step_log:
        steps, losses = zip(*step_log)
        ax.plot(np.asarray(steps) / steps_per_epoch, losses, "-", lw=0.8, alpha=0.5, color="C0",
                label="train (10-step mean)")
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", color="C0", label="train (epoch mean)")
    valid = [(r["epoch"], r["valid_loss"]) for r in history if r.get("valid_loss") is not None]
    if valid:
        ax.plot(*zip(*valid), "s-", color="C1", label="validation")
    if history:
        finals = [r["train_loss"] for r in history] + [v for _, v in valid]
        low, high = min(finals), max(finals)
        pad = max(high - low, 1e-3)
        ax.set_ylim(low - 0.3 * pad, high + 0.6 * pad)  # keep the first steps from flattening the rest
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def mixture_scatter(x: np.ndarray, labels: np.ndarray, locs: np.ndarray, covariances: np.ndarray,
                    path, columns: Tuple[int, int] = (0, 1), names: Optional[Sequence[str]] = None,
                    title: str = "") -> Path:
    """Points coloured by assignment, with each component's 1- and 2-sigma ellipses."""
    from matplotlib import colormaps
    from matplotlib.patches import Ellipse

    i, j = columns
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    cmap = colormaps["tab10"]
    ax.scatter(x[:, i], x[:, j], c=[cmap(int(l) % 10) for l in labels], s=8, alpha=0.6, linewidths=0)
    for k in range(locs.shape[0]):
        cov = covariances[k][np.ix_([i, j], [i, j])]
        vals, vecs = np.linalg.eigh(cov)
        angle = math.degrees(math.atan2(vecs[1, -1], vecs[0, -1]))
        for n_std in (1, 2):
            w, h = 2 * n_std * np.sqrt(np.maximum(vals[::-1], 0))
            ax.add_patch(Ellipse((locs[k, i], locs[k, j]), w, h, angle=angle, fill=False,
                                 color=cmap(k % 10), lw=2 if n_std == 1 else 1))
        ax.plot(locs[k, i], locs[k, j], "kx")
    names = list(names) if names is not None and len(names) > max(i, j) else None
    ax.set_xlabel(names[i] if names else f"x{i}")
    ax.set_ylabel(names[j] if names else f"x{j}")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def selection_curve(ks: Sequence[int], bic: Sequence[float], heldout: Sequence[float], path) -> Path:
    """BIC and held-out log-likelihood per point against the number of components."""
    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(ks, bic, "o-")
    ax1.set_xlabel("components K")
    ax1.set_ylabel("BIC (lower is better)")
    best = ks[int(np.argmin(bic))]
    ax1.axvline(best, color="gray", ls="--", label=f"best K = {best}")
    ax1.legend()
    ax2.plot(ks, heldout, "s-", color="C1")
    ax2.set_xlabel("components K")
    ax2.set_ylabel("held-out log-likelihood per point")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def covariance_spectrum(data: np.ndarray, models: Dict[str, np.ndarray], path, latent_dim: Optional[int] = None,
                        top: int = 100) -> Path:
    """The ``top`` largest eigenvalues of the data's covariance (dots) and of each model's
    covariance (lines, one per entry of ``models``), on a log scale; a dashed line marks
    ``latent_dim``, after which a probabilistic PCA holds one variance."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    shown = min(top, len(data))
    index = np.arange(1, shown + 1)
    ax.semilogy(index, np.sort(data)[::-1][:shown], "o", ms=3, color="k", label="data")
    for i, (name, values) in enumerate(models.items()):
        ax.semilogy(index, np.sort(values)[::-1][:shown], "-", drawstyle="steps-mid", color=f"C{i}", label=name)
    if latent_dim is not None:
        ax.axvline(latent_dim + 0.5, color="gray", ls="--", lw=0.8, label=f"d = {latent_dim}")
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel("variance")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def predictive_check(check: Dict[str, Any], path, image_shape: Optional[Tuple[int, int]] = None,
                     title: str = "posterior predictive check") -> Path:
    """The statistics of the data against those of its replicates (one panel each).

    ``check`` is :func:`pyro_lvm.evaluation.predictive.posterior_predictive_check`'s
    result. A per-point statistic is shown as two histograms (the data, the
    replicates pooled); a per-feature one as the data's value against the
    replicates' mean with their 5-95% range, and, for pixel marginals with
    ``image_shape``, as the two mean images side by side.
    """
    stats = check["statistics"]
    images = [name for name, s in stats.items()
              if image_shape is not None and s["per"] == "feature" and len(s["observed"]) == math.prod(image_shape)]
    ncol = len(stats) + len(images)
    fig = Figure(figsize=(4.6 * ncol, 4.2))
    col = 0
    for name, s in stats.items():
        col += 1
        ax = fig.add_subplot(1, ncol, col)
        observed, replicated = np.asarray(s["observed"], float), np.asarray(s["replicated"], float)
        p = ", ".join(f"p({k}) = {v['p_value']:.2f}" for k, v in s["summaries"].items())
        if s["per"] == "point":
            low, high = min(observed.min(), replicated.min()), max(observed.max(), replicated.max())
            bins = np.linspace(low, high + 1e-9, 40) if high > low else 10
            ax.hist(replicated.ravel(), bins=bins, density=True, alpha=0.5, color="C1",
                    label=f"replicates ({replicated.shape[0]} draws)")
            ax.hist(observed, bins=bins, density=True, histtype="step", lw=2, color="C0", label="data")
            ax.set_xlabel(name.replace("_", " "))
            ax.set_ylabel("density")
        else:
            mean = replicated.mean(0)
            lo, hi = np.percentile(replicated, [5, 95], axis=0)
            keep = (observed > 0) | (mean > 0)
            log = name == "unigram"
            order = np.argsort(-observed[keep])
            o, m, lo, hi = observed[keep][order], mean[keep][order], lo[keep][order], hi[keep][order]
            ax.vlines(o, np.maximum(lo, 1e-12) if log else lo, hi, color="C1", alpha=0.25, lw=1)
            ax.plot(o, m, ".", ms=3, color="C1", label="replicates: mean, 5-95%")
            both = np.concatenate([o, m])
            ref = [max(both[both > 0].min(), 1e-9), both.max()] if log else [both.min(), both.max()]
            ax.plot(ref, ref, "k--", lw=1, label="y = x")
            if log:
                ax.set_xscale("log")
                ax.set_yscale("log")
            ax.set_xlabel(f"{name.replace('_', ' ')} of the data")
            ax.set_ylabel("of the replicates")
        ax.set_title(f"{name.replace('_', ' ')}\n{p}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if name in images:
            col += 1
            ax = fig.add_subplot(1, ncol, col)
            left, right = _as_images(observed, image_shape)[0], _as_images(replicated.mean(0), image_shape)[0]
            pair = np.concatenate([left, np.ones((left.shape[0], 1) + left.shape[2:]), right], axis=1)
            ax.imshow(np.clip(pair, 0, 1) if pair.ndim == 3 else pair, cmap="gray" if pair.ndim == 2 else None,
                      vmin=0, vmax=max(1.0, pair.max()), interpolation="nearest")
            ax.set_title("pixel marginals: data (left), replicates (right)", fontsize=10)
            ax.set_axis_off()
    fig.suptitle(f"{title}: {check['num_points']} points, {check['num_samples']} draws each")
    fig.tight_layout()
    return save_figure(fig, path)
