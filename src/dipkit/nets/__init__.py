"""Networks for Deep Image Prior: the CT-handbook U-Net, the original DIP skip net, and presets.

>>> from dipkit.nets import build_net, list_nets, count_parameters
>>> net = build_net("unet", in_channels=1, out_channels=1)            # CPU default
>>> net = build_net("unet-paper", 1, 1, skip_levels=(0, 1, 2))        # override a preset
>>> sorted(list_nets())
['convdecoder', 'deep-decoder', 'skip', 'skip-small', 'unet', 'unet-paper']

All networks take ``(B, C_in, H, W)`` with any ``H, W >= 1`` and return
``(B, C_out, H, W)``; the B samples are processed independently.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from dipkit.errors import DipkitError
from dipkit.registry import Registry

__all__ = [
    "NETS",
    "NetPreset",
    "SkipNet",
    "UNet",
    "build_net",
    "check_options",
    "COMMON_OPTIONS",
    "count_parameters",
    "list_nets",
]


def __getattr__(name):  # the network classes import torch: only when asked for
    if name in ("UNet", "SkipNet"):
        return getattr(importlib.import_module(f"dipkit.nets.{name.lower()}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class NetPreset:
    """A named network configuration: a class (``"module:Class"``, imported when a network is built)
    and its keyword arguments."""

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: Adam learning rate of the network methods with this network (their ``lr`` default). The small
    #: ``unet``'s 3e-3 was calibrated with vanilla DIP on 13 tuning problems (CT, fan CT, MRI and the
    #: four image tasks, 64², 3000 steps, the ``val`` pick): against 1e-3 it gained on 9 of them
    #: (up to +13 dB on an MRI phantom, where 1e-3 stalls), lost ≤ 0.7 dB on the others; 1e-2
    #: spiked (Adam) on CT. ``unet-paper``'s 1e-4 is the CT paper's, for its 6×128 network.
    lr: float = 1e-3

    @property
    def cls(self) -> type:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def valid_keys(self) -> list[str]:
        """Keyword arguments that ``build_net`` accepts as overrides for this preset."""
        params = inspect.signature(self.cls.__init__).parameters
        return [k for k in params if k not in ("self", "in_channels", "out_channels")]


NETS: Registry = Registry("network", hint="run 'dipkit nets'")
NETS.register(NetPreset(
    "dipkit.nets.unet:UNet",
    dict(channels=[16, 16, 32, 32, 64], skip_levels=(0, 1), skip_channels=4),
    "CPU default: handbook U-Net family, 5 scales x [16,16,32,32,64] channels, "
    "4-channel skips at the two lowest-resolution levels",
    lr=3e-3,
), name="unet")
NETS.register(NetPreset(
    "dipkit.nets.unet:UNet",
    dict(channels=128, skip_levels=(0, 1), skip_channels=4),
    "DIP-for-CT handbook / Educated DIP U-Net: 6 scales x 128 channels, 4-channel skips "
    "at the two lowest-resolution levels (~3.0M parameters)",
    lr=1e-4,
), name="unet-paper")
NETS.register(NetPreset(
    "dipkit.nets.skipnet:SkipNet",
    dict(num_channels_down=128, num_channels_skip=4),
    "Ulyanov et al. 2018 DIP skip net: 5 levels x 128 channels, 4-channel skips, "
    "reflection padding, LeakyReLU",
), name="skip")
NETS.register(NetPreset(
    "dipkit.nets.skipnet:SkipNet",
    dict(num_channels_down=[16, 32, 64, 128, 128], num_channels_skip=4),
    "cheaper DIP skip net for CPUs: 5 levels x [16,32,64,128,128] channels "
    "(the defaults of skip() in the DIP repository), 4-channel skips",
), name="skip-small")
NETS.register(NetPreset(
    "dipkit.nets.deep_decoder:DeepDecoder",
    dict(),
    "Heckel & Hand 2019 deep decoder: 6 layers x 64 channels of 1x1 convs, bilinear upsampling of a "
    "fixed random seed, ReLU, channel norm; 25k parameters, under-parametrised above ~160^2 pixels "
    "(params=N sizes it)",
    lr=1e-2,
), name="deep-decoder")
NETS.register(NetPreset(
    "dipkit.nets.deep_decoder:ConvDecoder",
    dict(),
    "Darestani & Heckel 2021 ConvDecoder: deep decoder with 3x3 convs and nearest upsampling, "
    "5 layers x 32 channels (46k parameters; params=N to size it)",
    lr=1e-2,
), name="convdecoder")


def list_nets() -> dict[str, str]:
    """``{preset name: one-line description}``."""
    return NETS.describe()


#: network options that every preset takes besides its class's keyword arguments
COMMON_OPTIONS = ("weights",)


def build_net(name: str, in_channels: int, out_channels: int, *, weights: str | None = None, **overrides: Any):
    """Build the preset ``name`` for ``in_channels -> out_channels``, with keyword overrides.

    ``weights``: a weights file (``dipkit pretrain``, :mod:`dipkit.nets.weights`) to start from
    instead of the random initialisation; it must fit the built network exactly.

    Raises :class:`~dipkit.errors.DipkitError` for an unknown name or keyword (the message
    lists the valid ones), for invalid argument values and for weights that do not fit.
    """
    preset = NETS[name]
    check_options(name, overrides)
    kwargs = {**preset.kwargs, **overrides}
    net = preset.cls(in_channels, out_channels, **kwargs)
    if weights:
        from .weights import load_weights

        load_weights(net, weights)
    return net


def check_options(name: str, options: dict) -> None:
    """Raise :class:`DipkitError` when ``options`` has keys the preset ``name`` does not take
    (besides :data:`COMMON_OPTIONS`)."""
    preset = NETS[name]
    valid = [*preset.valid_keys(), *COMMON_OPTIONS]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise DipkitError(
            f"unknown option(s) {', '.join(unknown)} for network {name!r}; "
            f"valid: {', '.join(valid)}"
        )


def count_parameters(net, trainable_only: bool = False) -> int:
    """Number of parameter entries of ``net`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
