"""Generation from trained image models: a PNG grid of samples written into the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pyro
import torch

from pyro_lvm.plotting import image_grid
from pyro_lvm.runs import load_run, load_run_data
from pyro_lvm.validation import positive_int

SAMPLE_GRID = "sample_grid.png"


def image_shape_of(run_dir, config: Dict[str, Any]):
    """The image shape of a run's data: from its config, else (runs written before it was
    recorded) from its data set; ``None`` for data that are not images."""
    shape = config.get("image_shape") or config["model_config"].get("image_shape")
    if shape is None and "image_shape" not in config and "dataset" in config:
        shape = load_run_data(run_dir, model=False)[2].image_shape
    return None if shape is None else tuple(shape)


def sample_images_run(run_dir, num: int = 64, seed: int = 0, device: str = "cpu", draws: bool = False,
                      ncol: int = 8) -> Dict[str, Any]:
    """``num`` images from the model of an image run, ``z`` from the prior, written as a grid
    to ``RUN/sample_grid.png``: the means of :math:`p(x \\mid z)`, or with ``draws`` a draw of
    every pixel."""
    num, ncol = positive_int("--num", num), positive_int("--columns", ncol)
    run_dir = Path(run_dir)
    model, config = load_run(run_dir, device)
    shape = image_shape_of(run_dir, config)
    if shape is None:
        raise ValueError(f"{run_dir} holds a {config['model']} run on data that are not images; "
                         "nothing to draw as a grid")
    model.eval()
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        images = model.generate(num, mean=not draws).cpu().numpy()
    what = "pixels drawn from p(x|z)" if draws else "means of p(x|z)"
    path = image_grid(images, shape, run_dir / SAMPLE_GRID, f"{num} samples: {what}, z from the prior (seed {seed})",
                      ncol=min(ncol, num))
    return {"model": config["model"], "num": num, "seed": seed, "pixels": "drawn" if draws else "means",
            "grid": str(path)}
