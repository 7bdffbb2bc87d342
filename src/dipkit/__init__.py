"""dipkit: Deep Image Prior reconstructions from a single measurement.

Main entry points::

    problem = dipkit.simulate("ct", image, views=30, noise_level=0.02)   # or Problem.load(path)
    result = dipkit.reconstruct(problem, RunConfig(method="dip"), out_dir="run")
    result = dipkit.solve(y, physics, method="dip", iterations=2000)      # any deepinv operator
    model = dipkit.DIPReconstructor("dip", iterations=2000)               # a deepinv Reconstructor
    dipkit.pretrain("w.pt", task="ct", task_options={"views": 30})        # warm start: net.weights=w.pt

The names below are imported on first use, so ``import dipkit`` (and ``dipkit --help``) does not
import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY = {
    "RunConfig": "dipkit.run.config",
    "DipkitError": "dipkit.errors",
    "load_image_source": "dipkit.io",
    "load_sample": "dipkit.io",
    "read_image": "dipkit.io",
    "psnr": "dipkit.metrics",
    "ssim": "dipkit.metrics",
    "Problem": "dipkit.problem",
    "reconstruct": "dipkit.run",
    "RunResult": "dipkit.run.rundir",
    "solve": "dipkit.api",
    "DIPReconstructor": "dipkit.api",
    "pretrain": "dipkit.run.warmstart",
}

__all__ = ["Problem", "RunConfig", "DipkitError", "simulate", "reconstruct", "solve", "DIPReconstructor", "pretrain",
           "RunResult", "load_image_source", "load_sample", "read_image", "psnr", "ssim", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dipkit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


def simulate(task: str, image, **options):
    """Simulate a :class:`Problem` for ``task`` (see ``dipkit.tasks.TASKS``) from a ``[C, H, W]`` image."""
    from .tasks import get_task

    return get_task(task).simulate(image, **options)
