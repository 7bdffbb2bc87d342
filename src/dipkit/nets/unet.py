"""The DIP U-Net of the DIP-for-CT handbook (Barbano et al. 2022, "Educated DIP").

Also holds the small building blocks shared with :mod:`dipkit.nets.skipnet`
(padded convolution, activation factory, resizing upsampler).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint
import torch.nn.functional as F

from dipkit.errors import DipkitError

__all__ = ["UNet"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}
_UPSAMPLE_MODES = ("nearest", "nearest-exact", "bilinear")
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _make_act(activation: str | Callable[[], nn.Module]) -> nn.Module:
    """A fresh activation module from a name (see ``_ACTIVATIONS``) or a zero-argument factory."""
    if isinstance(activation, str):
        key = activation.lower().replace("-", "_")
        key = {"leakyrelu": "leaky_relu", "lrelu": "leaky_relu"}.get(key, key)
        if key not in _ACTIVATIONS:
            raise DipkitError(
                f"unknown activation {activation!r}; valid: {', '.join(sorted(_ACTIVATIONS))}"
            )
        return _ACTIVATIONS[key]()
    if callable(activation):
        mod = activation()
        if not isinstance(mod, nn.Module):
            raise DipkitError("activation factory must return an nn.Module")
        return mod
    raise DipkitError(f"activation must be a name or a factory, got {type(activation).__name__}")


def _check_choice(name: str, value: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise DipkitError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


class _GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that also accepts groups holding a single value (e.g. a 1x1 map).

    ``F.group_norm`` refuses those ("Expected more than 1 value per channel"); the
    underlying op just returns the shift (``bias``) for them, which is what we want
    at the coarsest scale of a small input.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with ``groups`` groups, reduced to a divisor of ``channels`` when needed."""
    return _GroupNorm(num_groups=math.gcd(channels, groups), num_channels=channels)


class _PadConv(nn.Module):
    """``Conv2d`` with "same"-style padding of any mode that also works on tiny inputs.

    Non-zero padding modes fall back to ``replicate`` along a dimension too small to
    reflect (``reflect`` needs ``size > pad``), so inputs down to 1x1 are accepted.
    With stride 2 the output size is ``ceil(size / 2)``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        padding_mode: str = "zeros",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise DipkitError(f"kernel size must be odd and >= 1, got {kernel_size}")
        self.pad = (kernel_size - 1) // 2
        self.padding_mode = padding_mode
        zero = padding_mode == "zeros"
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel_size, stride=stride, padding=self.pad if zero else 0, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        if p > 0 and self.padding_mode != "zeros":
            mode = self.padding_mode
            if mode == "reflect" and min(x.shape[-2:]) <= p:
                mode = "replicate"
            x = F.pad(x, (p, p, p, p), mode=mode)
        return self.conv(x)


def _resize(x: torch.Tensor, size: Sequence[int], mode: str, align_corners: bool) -> torch.Tensor:
    """Upsample ``x`` to exactly ``size`` (H, W)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=tuple(size), mode=mode, align_corners=align_corners)
    return F.interpolate(x, size=tuple(size), mode=mode)


def _check_input(x: torch.Tensor, in_channels: int, net: str) -> None:
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise DipkitError(
            f"{net} expects input of shape (B, {in_channels}, H, W), got {tuple(x.shape)}"
        )


def _stage(conv: nn.Module, out_ch: int, groups: int, use_norm: bool, activation) -> list[nn.Module]:
    """``conv -> [GroupNorm(groups)] -> act`` as a list of layers."""
    layers = [conv]
    if use_norm:
        layers.append(_group_norm(out_ch, groups))
    layers.append(_make_act(activation))
    return layers


class _InBlock(nn.Module):
    """conv3x3 -> GroupNorm(2) -> act, at full resolution."""

    def __init__(self, in_ch, out_ch, k, use_norm, activation, padding_mode):
        super().__init__()
        self.conv = nn.Sequential(*_stage(_PadConv(in_ch, out_ch, k, 1, padding_mode), out_ch, 2, use_norm,
                                          activation))

    def forward(self, x):
        return self.conv(x)


class _DownBlock(nn.Module):
    """conv3x3 stride 2 -> GN(4) -> act -> conv3x3 -> GN(4) -> act."""

    def __init__(self, in_ch, out_ch, k, use_norm, activation, padding_mode):
        super().__init__()
        first = _stage(_PadConv(in_ch, out_ch, k, 2, padding_mode), out_ch, 4, use_norm, activation)
        second = _stage(_PadConv(out_ch, out_ch, k, 1, padding_mode), out_ch, 4, use_norm, activation)
        self.conv = nn.Sequential(*first, *second)

    def forward(self, x):
        return self.conv(x)


class _UpBlock(nn.Module):
    """Upsample to the encoder size, concat an optional 1x1 skip, then two conv3x3 blocks.

    ``skip_conv`` is ``None`` when this level has no skip connection (``skip_ch == 0``).
    """

    def __init__(self, in_ch, out_ch, enc_ch, skip_ch, k, use_norm, activation, padding_mode,
                 upsample):
        super().__init__()
        self.skip_ch = skip_ch
        self.upsample = upsample
        self.skip_conv: nn.Module | None = None
        if skip_ch > 0:
            self.skip_conv = nn.Sequential(*_stage(nn.Conv2d(enc_ch, skip_ch, kernel_size=1), skip_ch, 1, use_norm,
                                                   activation))
        first = _stage(_PadConv(in_ch + skip_ch, out_ch, k, 1, padding_mode), out_ch, 4, use_norm, activation)
        second = _stage(_PadConv(out_ch, out_ch, k, 1, padding_mode), out_ch, 4, use_norm, activation)
        self.conv = nn.Sequential(*first, *second)

    def forward(self, x, enc):
        # The handbook code uses align_corners=True for its non-nearest modes.
        x = _resize(x, enc.shape[-2:], self.upsample, align_corners=True)
        if self.skip_conv is not None:
            x = torch.cat([x, self.skip_conv(enc)], dim=1)
        return self.conv(x)


class UNet(nn.Module):
    """U-Net of the DIP-for-CT handbook (§6.2), after Barbano et al. 2022 ("Educated DIP").

    Architecture (``scales`` = S -- default ``len(channels)`` for a list, else 6 --
    channels ``c[0..S-1]`` (an int means the same at every scale), all convs 3x3 unless noted,
    every activation LeakyReLU(0.2) by default, GroupNorm when ``use_norm``)::

        in:    conv(in -> c0) - GN(2) - act                               (full res)
        down s = 1..S-1:  conv stride 2 (c[s-1] -> c[s]) - GN(4) - act
                          - conv (c[s] -> c[s]) - GN(4) - act             (H / 2**s, rounded up)
        up, from the lowest resolution upwards (level l = 0..S-2, l = 0 is the lowest):
                          nearest-upsample to the size of encoder feature e = S-2-l
                          [+ concat skip: conv1x1(c[e] -> k_l) - GN(1) - act,  if k_l > 0]
                          - conv (c[e+1] + k_l -> c[e]) - GN(4) - act - conv - GN(4) - act
        out:   linear conv1x1 (c0 -> out) [- sigmoid]

    Downsampling is by stride-2 convolutions, so a 501-pixel side goes
    501 -> 251 -> 126 -> 63 -> 32 -> 16; the decoder upsamples to the *exact* size of
    the matching encoder feature, so any H x W >= 1 (odd sizes included) gives an output
    of the input size. The paper (6 scales x 128 channels, skips of 4 channels at the two
    lowest-resolution levels, GroupNorm, nearest upsampling) has 2,968,729 parameters
    for one input and one output channel.

    Skip connections are chosen with either argument:

    * ``skip_levels`` -- decoder levels that get a skip, counted from the lowest
      resolution (0 = the first decoder block, fed by the second-coarsest encoder
      feature; ``scales - 2`` = the last, full-resolution block). Default ``(0, 1)``,
      the paper's "two lowest-resolution levels"; ``()`` disables all skips. Each
      chosen skip carries ``skip_channels`` (an int, default 4) channels.
    * ``skip_channels`` as a sequence of ``scales - 1`` ints, one per decoder level in
      the same lowest-resolution-first order, 0 = no skip (then leave ``skip_levels``
      unset). E.g. for the paper: ``skip_channels=[4, 4, 0, 0, 0]``. (The handbook's
      own config lists the same thing per scale from the highest resolution with an
      unused first entry: ``[0, 0, 0, 0, 4, 4]``.)

    Unlike the handbook code, a level without a skip has no dummy (zeroed) skip
    channel, so the count is slightly smaller than that code's 2,972,578. GroupNorm
    group counts (2 / 4 / 1 as in the handbook) drop to a divisor of the channel count
    when needed.

    Input ``(B, in_channels, H, W)``, output ``(B, out_channels, H, W)``; GroupNorm
    normalises each sample on its own, so the B samples are processed independently.

    ``checkpointing=True`` (``--set net.checkpointing=true``) recomputes each block's activations
    during the backward pass instead of keeping them (``torch.utils.checkpoint``): the same
    gradients, less peak memory for large images, one extra forward pass of time.

    Reference: Barbano, Leuschner, Schmidt, Denker, Hauptmann, Maass, Jin, "An
    Educated Warm Start for Deep Image Prior-Based Micro CT Reconstruction", IEEE TCI
    2022 (the "educated DIP" code); and the deep-image-prior-handbook code
    (github.com/alexdenker/deep-image-prior-handbook, ``dip/model/unet.py``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scales: int | None = None,
        channels: int | Sequence[int] = 128,
        skip_levels: Sequence[int] | None = None,
        skip_channels: int | Sequence[int] = 4,
        activation: str | Callable[[], nn.Module] = "leaky_relu",
        use_norm: bool = True,
        upsample: str = "nearest",
        sigmoid_out: bool = False,
        padding_mode: str = "zeros",
        kernel_size: int = 3,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        #: recompute each block's activations in the backward pass instead of storing them
        self.checkpointing = bool(checkpointing)
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise DipkitError("in_channels and out_channels must be >= 1")
        if scales is None:
            scales = 6 if isinstance(channels, int) else len(channels)
        if int(scales) < 1:
            raise DipkitError(f"scales must be >= 1, got {scales}")
        scales = int(scales)
        if isinstance(channels, int):
            chans = [channels] * scales
        else:
            chans = [int(c) for c in channels]
            if len(chans) != scales:
                raise DipkitError(
                    f"channels has {len(chans)} entries but scales={scales}; give one per scale"
                )
        if any(c < 1 for c in chans):
            raise DipkitError(f"channels must be >= 1, got {chans}")
        n_up = scales - 1
        if isinstance(skip_channels, int):
            levels = (0, 1) if skip_levels is None else tuple(int(lv) for lv in skip_levels)
            bad = [lv for lv in levels if not 0 <= lv < n_up]
            if bad and not (skip_levels is None and n_up < 2):
                raise DipkitError(
                    f"skip_levels {bad} out of range: with scales={scales} valid levels are "
                    f"0..{n_up - 1} (0 = lowest resolution)"
                )
            levels = tuple(lv for lv in levels if 0 <= lv < n_up)
            if skip_channels < 0:
                raise DipkitError(f"skip_channels must be >= 0, got {skip_channels}")
            skips = [skip_channels if lv in levels else 0 for lv in range(n_up)]
        else:
            if skip_levels is not None:
                raise DipkitError(
                    "give either skip_levels (with an int skip_channels) or a per-level "
                    "skip_channels list, not both"
                )
            skips = [int(s) for s in skip_channels]
            if len(skips) != n_up or any(s < 0 for s in skips):
                raise DipkitError(
                    f"skip_channels list needs {n_up} entries >= 0 (one per decoder level, "
                    f"lowest resolution first), got {skips}"
                )
        _check_choice("upsample", upsample, _UPSAMPLE_MODES)
        _check_choice("padding_mode", padding_mode, _PADDING_MODES)
        _make_act(activation)  # validate early

        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.scales = scales
        self.channels = tuple(chans)
        #: skip channels per decoder level, lowest resolution first (0 = no skip)
        self.skip_channels = tuple(skips)
        #: decoder levels with a skip connection, counted from the lowest resolution
        self.skip_levels = tuple(lv for lv, s in enumerate(skips) if s > 0)
        self.sigmoid_out = bool(sigmoid_out)

        common = dict(k=kernel_size, use_norm=use_norm, activation=activation,
                      padding_mode=padding_mode)
        self.inc = _InBlock(in_channels, chans[0], **common)
        self.down = nn.ModuleList(
            _DownBlock(chans[s - 1], chans[s], **common) for s in range(1, scales)
        )
        self.up = nn.ModuleList()
        for lv in range(n_up):
            e = scales - 2 - lv  # encoder feature this level is upsampled to / skips from
            self.up.append(
                _UpBlock(chans[e + 1], chans[e], chans[e], skips[lv], upsample=upsample, **common)
            )
        self.outc = nn.Conv2d(chans[0], out_channels, kernel_size=1)

    def _call(self, block: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *inputs, use_reentrant=False)
        return block(*inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels, "UNet")
        xs = [self._call(self.inc, x)]
        for block in self.down:
            xs.append(self._call(block, xs[-1]))
        h = xs[-1]
        for lv, block in enumerate(self.up):
            h = self._call(block, h, xs[-2 - lv])
        out = self.outc(h)
        return torch.sigmoid(out) if self.sigmoid_out else out
