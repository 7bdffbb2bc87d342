"""Tasks: simulate a :class:`~dipkit.problem.Problem` from an image.

Each task is registered under the name used by ``dipkit simulate --task NAME`` and has a
``simulate(image, **options)`` function taking the image as a ``[C, H, W]`` float array.
"""

from __future__ import annotations

from .base import SIMULATE_OPTIONS, TASKS, Task, add_gaussian_noise, get_task, register_task

__all__ = ["TASKS", "Task", "register_task", "get_task", "add_gaussian_noise", "SIMULATE_OPTIONS"]

from . import ct, mri, restoration  # noqa: E402,F401  (registration)
