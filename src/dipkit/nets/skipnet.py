"""The encoder-decoder "skip" network of the original Deep Image Prior (Ulyanov et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from dipkit.errors import DipkitError
from dipkit.nets.unet import (
    _UPSAMPLE_MODES,
    _check_choice,
    _check_input,
    _GroupNorm,
    _make_act,
    _PadConv,
    _resize,
)

__all__ = ["SkipNet"]

_NORMS = ("instance", "batch", "none")
_PADS = {"reflection": "reflect", "reflect": "reflect", "zero": "zeros", "zeros": "zeros",
         "replicate": "replicate", "circular": "circular"}


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        # per-sample, per-channel statistics over (H, W) with a learnable affine:
        # the same as BatchNorm2d in training mode for a batch of one.
        return _GroupNorm(num_groups=channels, num_channels=channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _per_level(name: str, value: int | Sequence[int], depth: int) -> list[int]:
    vals = [int(value)] * depth if isinstance(value, int) else [int(v) for v in value]
    if len(vals) != depth:
        raise DipkitError(f"{name} has {len(vals)} entries but depth={depth}")
    return vals


class SkipNet(nn.Module):
    """The encoder-decoder "skip" network of Deep Image Prior (Ulyanov, Vedaldi, Lempitsky 2018).

    Levels ``i = 0..depth-1`` (0 = full resolution), with ``d_i, u_i, s_i`` the entries
    of ``num_channels_down/up/skip`` and ``n_i`` the input depth of level ``i``
    (``in_channels`` at level 0, ``d_{i-1}`` below)::

        skip_i   (if s_i > 0): conv kxk_skip (n_i -> s_i) - norm - act
        down_i:  conv 3x3 stride 2 (n_i -> d_i) - norm - act - conv 3x3 (d_i -> d_i) - norm - act
                 -> level i+1 (if any), whose output has u_{i+1} channels
                 -> upsample to the exact size of level i's input
        up_i:    concat[skip_i, deeper] - norm(s_i + k) - conv 3x3 (s_i + k -> u_i) - norm - act
                 [- conv 1x1 (u_i -> u_i) - norm - act   if need1x1_up]
        out:     conv 1x1 (u_0 -> out_channels) [- sigmoid]

    with ``k = u_{i+1}`` (``d_i`` at the deepest level). Padding is reflection by
    default (falling back to replicate on sides too small to reflect), activations are
    LeakyReLU(0.2) and downsampling is by stride-2 convolution. The paper's
    configuration (``num_channels_down = num_channels_up = [128]*5``,
    ``num_channels_skip = [4]*5``) is the default. The original upsamples by 2 and
    centre-crops; here the deeper features are resized straight to the skip size, which
    is the same for even sizes and lets any H x W >= 1 through.

    ``norm``: ``"instance"`` (default) normalises each sample's channels over (H, W)
    with a learnable scale and shift -- exactly the original ``BatchNorm2d`` for one
    sample in training mode (the way DIP runs), but keeping the B samples of a batch
    independent and with no running statistics (train and eval modes agree).
    ``"batch"`` uses ``nn.BatchNorm2d`` itself (couples samples of a batch in training
    mode); ``"none"`` drops normalisation.

    ``depth`` may be given instead of lists: ``SkipNet(c, c, depth=4,
    num_channels_down=64)``; the ``num_channels_*`` arguments accept an int (same at
    every level) or a list of ``depth`` ints (``num_channels_up`` defaults to
    ``num_channels_down``; a skip of 0 removes that level's skip branch).

    Reference: D. Ulyanov, A. Vedaldi, V. Lempitsky, "Deep Image Prior", CVPR 2018 /
    IJCV 2020; ``models/skip.py`` in github.com/DmitryUlyanov/deep-image-prior.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_channels_down: int | Sequence[int] = 128,
        num_channels_up: int | Sequence[int] | None = None,
        num_channels_skip: int | Sequence[int] = 4,
        depth: int | None = None,
        filter_size_down: int = 3,
        filter_size_up: int = 3,
        filter_skip_size: int = 1,
        need1x1_up: bool = True,
        norm: str = "instance",
        activation: str | Callable[[], nn.Module] = "leaky_relu",
        pad: str = "reflection",
        upsample: str = "nearest",
        sigmoid_out: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise DipkitError("in_channels and out_channels must be >= 1")
        if num_channels_up is None:
            num_channels_up = num_channels_down
        lengths = {len(v) for v in (num_channels_down, num_channels_up, num_channels_skip)
                   if not isinstance(v, int)}
        if len(lengths) > 1:
            raise DipkitError(
                "num_channels_down, num_channels_up and num_channels_skip must have equal lengths"
            )
        if depth is None:
            depth = lengths.pop() if lengths else 5
        elif lengths and lengths != {int(depth)}:
            raise DipkitError(f"depth={depth} does not match the channel lists' length {lengths}")
        depth = int(depth)
        if depth < 1:
            raise DipkitError(f"depth must be >= 1, got {depth}")
        down = _per_level("num_channels_down", num_channels_down, depth)
        up = _per_level("num_channels_up", num_channels_up, depth)
        skip = _per_level("num_channels_skip", num_channels_skip, depth)
        if any(c < 1 for c in down + up) or any(s < 0 for s in skip):
            raise DipkitError("channel counts must be >= 1 (skip channels >= 0)")
        _check_choice("norm", norm, _NORMS)
        _check_choice("upsample", upsample, _UPSAMPLE_MODES)
        _check_choice("pad", pad, tuple(_PADS))
        _make_act(activation)
        padding_mode = _PADS[pad]

        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.depth = depth
        self.num_channels_down = tuple(down)
        self.num_channels_up = tuple(up)
        self.num_channels_skip = tuple(skip)
        self.upsample = upsample
        self.sigmoid_out = bool(sigmoid_out)

        def conv(i, o, k, stride=1):
            return _PadConv(i, o, k, stride, padding_mode, bias=bias)

        self.skip = nn.ModuleList()
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        n = int(in_channels)
        # Built level by level in the order of the original code (skip, deeper, up).
        for i in range(depth):
            k = up[i + 1] if i < depth - 1 else down[i]
            if skip[i] > 0:
                self.skip.append(nn.Sequential(
                    conv(n, skip[i], filter_skip_size), _norm(norm, skip[i]), _make_act(activation)
                ))
            else:
                self.skip.append(nn.Identity())  # placeholder, unused
            self.down.append(nn.Sequential(
                conv(n, down[i], filter_size_down, stride=2), _norm(norm, down[i]),
                _make_act(activation),
                conv(down[i], down[i], filter_size_down), _norm(norm, down[i]),
                _make_act(activation),
            ))
            layers = [
                _norm(norm, skip[i] + k),
                conv(skip[i] + k, up[i], filter_size_up), _norm(norm, up[i]), _make_act(activation),
            ]
            if need1x1_up:
                layers += [conv(up[i], up[i], 1), _norm(norm, up[i]), _make_act(activation)]
            self.up.append(nn.Sequential(*layers))
            n = down[i]
        self.out = nn.Conv2d(up[0], out_channels, kernel_size=1, bias=bias)

    def _level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        deeper = self.down[i](x)
        if i < self.depth - 1:
            deeper = self._level(i + 1, deeper)
        deeper = _resize(deeper, x.shape[-2:], self.upsample, align_corners=False)
        if self.num_channels_skip[i] > 0:
            deeper = torch.cat([self.skip[i](x), deeper], dim=1)
        return self.up[i](deeper)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels, "SkipNet")
        out = self.out(self._level(0, x))
        return torch.sigmoid(out) if self.sigmoid_out else out
