"""The network's tensor layout: channels-last, opt-in (``--set memory_format=channels_last``).

At batch 1 PyTorch's CPU convolutions are faster on channels-last (NHWC) tensors than on
contiguous (NCHW) ones: 0.63–0.99× per 3×3 convolution and 0.86–0.89× of a whole training step of
the default ``unet`` at 64²–128² on a 2-core AVX2 CPU (``benchmarks/small_maps.py``,
``benchmarks/results/small-maps.md``); forcing oneDNN on contiguous tensors or batching was not.
:func:`use_channels_last` converts a network's 4-D parameters and buffers in place and adds two
hooks: the input is converted to channels-last on the way in and the output made contiguous on the
way out, so everything outside the network (operators, losses, methods that reshape with
``view``) sees the usual layout, and the state dict (names, shapes, values) is unchanged —
checkpoints and weights files load either way. The values computed are those of the contiguous
network up to float rounding (other summation order), not bit for bit.

Why it is not the default: whole default ``dip`` runs (300 steps, CT, 64² and 128²) measured
0.89–1.18× of the contiguous runs' time across two sessions of ``benchmarks/small_maps.py --runs``
— within this machine's run-to-run spread — so the per-step gain did not show as a run-level gain.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["use_channels_last", "is_channels_last"]


def _to_channels_last(module, args):
    x = args[0]
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def _to_contiguous(module, args, out):
    return out.contiguous() if isinstance(out, torch.Tensor) else out


def use_channels_last(net: nn.Module) -> nn.Module:
    """Run ``net`` channels-last (module docs); returns ``net`` (changed in place). Idempotent."""
    if getattr(net, "_dipkit_channels_last", False):
        return net
    net.to(memory_format=torch.channels_last)
    net.register_forward_pre_hook(_to_channels_last)
    net.register_forward_hook(_to_contiguous)
    net._dipkit_channels_last = True
    return net


def is_channels_last(net: nn.Module) -> bool:
    """Whether :func:`use_channels_last` was applied to ``net``."""
    return bool(getattr(net, "_dipkit_channels_last", False))
