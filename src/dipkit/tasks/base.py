"""The task registry and what the task modules share (:func:`register_task`, :func:`add_gaussian_noise`).

Kept apart from :mod:`dipkit.tasks` (which re-exports it and imports the task modules to register
them) so that the task modules import it downward, not from their own package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import DipkitError
from ..registry import Registry

__all__ = ["TASKS", "Task", "register_task", "get_task", "add_gaussian_noise", "SIMULATE_OPTIONS"]

#: Simulation options shared by all tasks: ``name -> (type, help)``. The CLI makes one flag per
#: entry (``noise_level`` → ``--noise-level``); a task lists the ones it accepts in ``Task.options``
#: and its ``simulate`` function's keyword defaults are the defaults. Giving a flag that the chosen
#: task does not accept is an error.
SIMULATE_OPTIONS: dict[str, tuple[str | Callable, str]] = {
    "views": ("positive_int", "number of projection angles (CT; default 60)"),
    "noise_level": ("nonneg_float", "relative Gaussian noise: σ = level × mean|A x| over the measured entries "
                                    "(default 0.02 for CT); not with --noise-std"),
    "noise_std": ("nonneg_float", "absolute Gaussian noise std σ in measurement units (image units for "
                                  "denoise/inpaint/deblur/superres/MRI; task defaults: denoise 25/255, deblur and "
                                  "MRI 0.01, inpaint and superres 0); not with --noise-level"),
    "acceleration": ("float", "MRI acceleration R > 1: round(W/R) k-space lines are sampled (default 4)"),
    "mask_type": ("str", "MRI line mask: random or equispaced, both with a fully sampled centre (default random)"),
    "center_fraction": ("float", "MRI fully sampled centre, fraction of the lines in [0, 1) "
                                 "(default 0.08 below 8x, 0.04 from 8x)"),
    "coils": ("positive_int", "multi-coil MRI: number of simulated birdcage coils (default 8)"),
    "missing": ("float", "inpaint: fraction in [0, 1) of pixels removed at random (seeded)"),
    "box_ratio": ("float", "inpaint: hole-to-image area ratio in (0, 1) of a central box (default 0.25)"),
    "kernel_std": ("float", "deblur: Gaussian kernel std in pixels (default 1.6)"),
    "kernel_size": ("positive_int", "deblur: odd kernel size (default 2*ceil(3*std)+1)"),
    "factor": ("positive_int", "superres: down-sampling factor ≥ 2 dividing the image size (default 4)"),
    "filter": ("str", "superres: anti-aliasing filter: bicubic (default), bilinear, gaussian, sinc or none"),
}


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    simulate: Callable
    #: simulation options this task accepts (besides image, seed, device)
    options: tuple[str, ...]
    channels: str = "auto"  # "gray" for tasks that need one channel


TASKS: Registry = Registry("task")


def register_task(name: str, description: str, options: tuple[str, ...], channels: str = "auto"):
    """Decorator: register ``simulate(image, **options)`` as task ``name``."""

    def deco(fn):
        TASKS.register(Task(name, description, fn, options, channels))
        return fn

    return deco


def get_task(name: str) -> Task:
    """The task registered as ``name``."""
    return TASKS[name]


def add_gaussian_noise(clean: torch.Tensor, *, seed: int, noise_level: float | None = None,
                       noise_std: float | None = None) -> tuple[torch.Tensor, float]:
    r"""``y = clean + σ ε`` with ``ε ~ N(0, I)`` from a generator seeded with ``seed``.

    ``σ = noise_level × mean|clean|`` (relative) or ``σ = noise_std`` (absolute); returns ``(y, σ)``.
    """
    if noise_level is not None and noise_std is not None:
        raise DipkitError("give either a relative noise level or an absolute noise std, not both")
    if noise_level is not None:
        if not np.isfinite(noise_level) or noise_level < 0:
            raise DipkitError(f"noise level must be ≥ 0, got {noise_level}")
        sigma = float(noise_level) * float(clean.abs().mean())
    else:
        sigma = float(noise_std or 0.0)
        if not np.isfinite(sigma) or sigma < 0:
            raise DipkitError(f"noise std must be ≥ 0, got {sigma}")
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    eps = torch.randn(clean.shape, generator=g, dtype=clean.dtype).to(clean.device)
    return clean + sigma * eps, sigma

