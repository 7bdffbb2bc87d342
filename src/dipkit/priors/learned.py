r"""Learned CNN denoisers: ``learned`` (our shipped weights) and ``drunet`` (user-supplied weights).

``learned``
    A small noise-conditional DnCNN (:class:`SmallDnCNN`): the noise level enters as an extra
    constant input channel holding :math:`\sigma` (in image units, as in DRUNet), ``depth`` 3×3
    convolutions of ``features`` channels with ReLU, no batch norm, and residual learning:

    .. math:: D(x, \sigma) = x - R_\phi\big([x,\ \sigma\mathbf 1]\big).

    Grayscale: an image with ``C`` channels is denoised one channel at a time. The weights ship
    in ``dipkit/data/denoiser_dncnn.pt`` (``torch.save(state_dict)``, loaded with
    ``weights_only=True`` through :mod:`importlib.resources`); ``denoiser_dncnn.json`` beside
    them records the architecture, the exact training command (``dipkit train-denoiser``, see
    :mod:`dipkit.priors.train`), the steps, the seed and the wall time. It was trained on
    patches of images in ``[0, 1]`` with :math:`\sigma \in [0, 55]/255`; outside that range it
    extrapolates. The held-apart evaluation images ``camera``, ``shepp-logan`` and ``ct`` were
    never seen in training. ``make_denoiser("learned", weights=PATH)`` loads another file
    written by ``dipkit train-denoiser`` (its JSON, if next to it, gives the architecture).

``drunet``
    The DRUNet of Zhang et al. (2021), "Plug-and-Play Image Restoration with Deep Denoiser
    Prior", IEEE TPAMI, as implemented by :class:`deepinv.models.DRUNet`, with a weights file
    the user supplies: ``make_denoiser("drunet", weights=PATH)``. Nothing is ever downloaded;
    a missing file raises :class:`~dipkit.errors.DipkitError`. The architecture (``nc``,
    ``nb``, channels) is read from the state dict. Gray weights are applied per channel;
    colour weights to 3-channel images (a 1-channel image is replicated to RGB and averaged
    back).

Both are differentiable torch modules (parameters frozen), run on the input's device without
host synchronisation, and take ``sigma`` as a float, a 0-d tensor or a ``[B]`` tensor.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..errors import DipkitError
from .denoisers import Denoiser, register_denoiser

__all__ = ["SmallDnCNN", "LearnedDenoiser", "DRUNetDenoiser", "DEFAULT_WEIGHTS", "load_small_dncnn",
           "sigma_per_sample"]

#: file name of the shipped weights inside the ``dipkit.data`` package folder
DEFAULT_WEIGHTS = "denoiser_dncnn.pt"

#: architecture of the shipped network (also written to its JSON)
DEFAULT_ARCH = {"depth": 8, "features": 24}


class SmallDnCNN(nn.Module):
    r"""Noise-conditional DnCNN without batch norm: ``forward(x, sigma_map) = x - R([x, sigma_map])``.

    ``x`` is ``[N, 1, H, W]``, ``sigma_map`` ``[N, 1, H, W]`` (or broadcastable to it).
    ``depth`` convolution layers in all (the first and last included), ``features`` channels.
    """

    def __init__(self, depth: int = 8, features: int = 24):
        super().__init__()
        if depth < 2 or features < 1:
            raise DipkitError(f"SmallDnCNN needs depth ≥ 2 and features ≥ 1 (got {depth}, {features})")
        self.depth, self.features = int(depth), int(features)
        layers: list[nn.Module] = [nn.Conv2d(2, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(features, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    @property
    def arch(self) -> dict:
        return {"depth": self.depth, "features": self.features}

    def forward(self, x: torch.Tensor, sigma_map: torch.Tensor) -> torch.Tensor:
        s = sigma_map.to(x.dtype).expand(x.shape[0], 1, *x.shape[2:])
        return x - self.body(torch.cat((x, s), dim=1))


def sigma_per_sample(sigma, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` (float, 0-d or ``[B]`` tensor, or ``[B, 1, 1, 1]``) as a ``[B]`` tensor on x's device."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        return s.expand(x.shape[0])
    return s.reshape(-1).expand(x.shape[0]) if s.numel() == 1 else s.reshape(x.shape[0])


def _weights_resource(name: str = DEFAULT_WEIGHTS):
    return resources.files("dipkit").joinpath("data", name)


def load_small_dncnn(weights: str | os.PathLike | None = None) -> SmallDnCNN:
    """Build a :class:`SmallDnCNN` from a state-dict file (default: the shipped weights).

    The architecture comes from the JSON next to the file (``<stem>.json``, key ``arch``) when it
    exists, else from the state dict's shapes.
    """
    if weights is None:
        res = _weights_resource()
        if not res.is_file():
            raise DipkitError(f"the shipped denoiser weights dipkit/data/{DEFAULT_WEIGHTS} are missing; "
                              "reinstall dipkit or train them with 'dipkit train-denoiser'")
        with resources.as_file(res) as path:
            return load_small_dncnn(path)
    from ..io.guard import guarded, holds, read_torch

    path = Path(weights)
    if not path.is_file():
        raise DipkitError(f"denoiser weights file {str(path)!r} does not exist")
    state = read_torch(path, "denoiser weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DipkitError(f"{path} is not a denoiser weights file (expected a state dict of tensors, the file holds "
                          f"{holds(state)})")
    arch = None
    meta = path.with_suffix(".json")
    if meta.is_file():
        try:
            arch = json.loads(meta.read_text(encoding="utf-8")).get("arch")
        except (OSError, ValueError, AttributeError):
            arch = None
    with guarded(path, "denoiser weights"):  # a state dict of another network
        if not isinstance(arch, dict) or not arch:
            convs = sorted(k for k in state if k.endswith(".weight"))
            arch = {"depth": len(convs), "features": int(state["body.0.weight"].shape[0])}
        net = SmallDnCNN(**{k: int(v) for k, v in arch.items() if k in ("depth", "features")})
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise DipkitError(f"denoiser weights {str(path)!r} do not fit SmallDnCNN{arch}: "
                          f"{str(exc).splitlines()[0]}") from None
    return net


class _ModuleDenoiser(Denoiser):
    """A frozen torch module moved lazily to the input's device (a device comparison, no sync)."""

    differentiable = True
    net: nn.Module

    def _freeze(self) -> None:
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def to(self, device):
        self.net.to(device)
        return self

    def _ready(self, x: torch.Tensor) -> None:
        p = next(self.net.parameters())
        if p.device != x.device:
            self.net.to(x.device)


@register_denoiser
class LearnedDenoiser(_ModuleDenoiser):
    r"""Our small noise-conditional DnCNN, ``D(x, σ) = x − R([x, σ·1])``, per channel (shipped weights)."""

    name = "learned"
    description = "small noise-conditional DnCNN trained by dipkit (shipped weights; σ in image units)"
    #: the smallest σ at which it is a useful denoiser: it is not the identity as σ → 0 (RMS change
    #: of a clean 64² image at σ = 0: 0.004–0.007), and on images with noise of std σ it reduces
    #: the error only from σ ≈ 0.01 on (64² shepp-logan, ct, camera, mr: RMS error 0.0101 in →
    #: 0.0107 / 0.0082 / 0.0096 / 0.0096 out). Methods that call it at a smaller σ may treat it
    #: as the identity there (e.g. :class:`dipkit.methods.thesis_admm.ThesisADMM`).
    sigma_floor = 0.01

    def __init__(self, weights: str | None = None):
        self.net = load_small_dncnn(weights)
        self._freeze()

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        self._ready(x)
        b, c, h, w = x.shape
        s = sigma_per_sample(sigma, x).float()
        xs = x.float().reshape(b * c, 1, h, w)
        smap = s.repeat_interleave(c).view(b * c, 1, 1, 1)
        return self.net(xs, smap).reshape(b, c, h, w).to(x.dtype)


def _drunet_arch(state: dict) -> dict:
    """DRUNet's constructor arguments from its state dict (``in/out_channels``, ``nc``, ``nb``).

    ``m_downK`` holds ``nb`` ResBlocks then the down-sampling convolution (index ``nb``);
    ``m_body`` holds ``nb`` ResBlocks (unwrapped when ``nb == 1``: keys ``m_body.res.*``).
    """
    head = state["m_head.weight"]
    tail = state["m_tail.weight"]

    def indices(prefix):
        return {int(k.split(".")[1]) for k in state
                if k.startswith(prefix + ".") and k.split(".")[1].isdigit()}

    nb = max(indices("m_down1"))
    nc = [int(head.shape[0])] + [int(state[f"m_down{i}.{nb}.weight"].shape[0]) for i in (1, 2, 3)]
    return {"in_channels": int(head.shape[1]) - 1, "out_channels": int(tail.shape[0]),
            "nc": tuple(nc), "nb": nb}


@register_denoiser
class DRUNetDenoiser(_ModuleDenoiser):
    r"""deepinv's DRUNet with a user-supplied weights file (``weights=PATH``; never downloads)."""

    name = "drunet"
    description = "DRUNet (Zhang et al. 2021) from a user-supplied weights file (weights=PATH)"

    def __init__(self, weights: str | None = None):
        if not weights:
            raise DipkitError("denoiser 'drunet' needs weights=PATH (a deepinv DRUNet state dict, e.g. "
                              "drunet_deepinv_gray_finetune_26k.pth); dipkit never downloads weights")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DipkitError(f"DRUNet weights file {str(path)!r} does not exist")
        from ..io.guard import guarded, read_torch

        state = read_torch(path, "DRUNet weights")
        with guarded(path, "DRUNet weights"):  # not a DRUNet state dict
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            arch = _drunet_arch(state)
        from deepinv.models import DRUNet

        net = DRUNet(pretrained=None, **arch)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise DipkitError(f"DRUNet weights {str(path)!r} do not fit DRUNet{arch}: "
                              f"{str(exc).splitlines()[0]}") from None
        self.net, self.channels = net, arch["in_channels"]
        self._freeze()

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        self._ready(x)
        b, c, h, w = x.shape
        s = sigma_per_sample(sigma, x).float()
        xf = x.float()
        if self.channels == 1:
            out = self.net(xf.reshape(b * c, 1, h, w), s.repeat_interleave(c)).reshape(b, c, h, w)
        elif self.channels == c:
            out = self.net(xf, s)
        elif c == 1:
            out = self.net(xf.expand(b, self.channels, h, w), s).mean(dim=1, keepdim=True)
        else:
            raise DipkitError(f"DRUNet weights for {self.channels} channels cannot denoise {c}-channel images")
        return out.to(x.dtype)
