"""dipkit: Deep Image Prior reconstructions from a single measurement.

Main entry points::

    problem = dipkit.simulate("ct", image, views=30, noise_level=0.02)   # or Problem.load(path)
    result = dipkit.reconstruct(problem, RunConfig(method="dip"), out_dir="run")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import RunConfig
from .errors import DipkitError
from .io import load_image_source, load_sample, read_image
from .metrics import psnr, ssim
from .problem import Problem
from .runner import reconstruct

__all__ = ["Problem", "RunConfig", "DipkitError", "simulate", "reconstruct", "load_image_source",
           "load_sample", "read_image", "psnr", "ssim", "__version__"]


def simulate(task: str, image, **options) -> Problem:
    """Simulate a :class:`Problem` for ``task`` (see ``dipkit.tasks.TASKS``) from a ``[C, H, W]`` image."""
    from .tasks import get_task

    return get_task(task).simulate(image, **options)
