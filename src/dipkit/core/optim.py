"""The Adam every network fit in dipkit uses: PyTorch's fused implementation where it applies.

``torch.optim.Adam`` without options runs its per-tensor loop on the CPU (one small kernel per
operation and parameter tensor: ~80 tensors for the default U-Net). ``fused=True`` does the whole
update in one kernel per tensor; the update is the same (Kingma & Ba 2015, Algorithm 1, PyTorch's
bias correction) to float rounding, deterministic on the CPU. Measured on this 2-core CPU
(``benchmarks/adam_fused.py``, default U-Net, 50-step blocks interleaved): 1.17× per DIP step at
64², 1.19× at 128² (``benchmarks/results/adam-fused.md``). Earlier notes (``../shared/PERFORMANCE-NOTES.md``) found no gain with the CT paper's
3M-parameter U-Net at 128², where the optimiser is a small share of a step; nothing is lost there.

Fused needs floating-point parameters on a device PyTorch has the kernel for; anything else (or a
PyTorch without it) gets the default implementation.
"""

from __future__ import annotations

from typing import Iterable

import torch

__all__ = ["adam", "FUSED_DEVICES"]

#: device types with a fused Adam kernel in the PyTorch this project pins
FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")


def _params(groups) -> list[torch.Tensor]:
    out = []
    for g in groups:
        if isinstance(g, dict):
            out.extend(g["params"])
        else:
            out.append(g)
    return out


def adam(params: Iterable, **options) -> torch.optim.Adam:
    """``torch.optim.Adam(params, **options)``, fused when every parameter allows it.

    ``params``: tensors or parameter groups, as ``torch.optim.Adam`` takes them."""
    params = list(params)
    tensors = _params(params)
    if "fused" not in options and "foreach" not in options and tensors and all(
            t.is_floating_point() and t.device.type in FUSED_DEVICES for t in tensors):
        try:
            return torch.optim.Adam(params, fused=True, **options)
        except (RuntimeError, ValueError, TypeError):  # a build or dtype without the fused kernel
            pass
    return torch.optim.Adam(params, **options)
