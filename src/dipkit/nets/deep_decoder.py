r"""The deep decoder (Heckel & Hand 2019) and the ConvDecoder (Darestani & Heckel 2021): under-parametrised
image generators for DIP (CT paper §3.2).

The network
-----------
A deep decoder with :math:`d` layers of :math:`k` channels maps a small fixed *seed*
:math:`x^{(0)} \in \mathbb R^{k \times h_0 \times w_0}` to the image (CT paper eq. 8)::

    x^{(i+1)} = cn( ReLU( C_i  U_i x^{(i)} ) ),     i = 0 … d−1
    f_θ = C_out x^{(d)}                               [then a sigmoid if ``sigmoid_out``]

* :math:`U_i` — fixed (not learned) upsampling, bilinear by default, from size :math:`s_i` to
  :math:`s_{i+1}`; the last layer has no upsampling (:math:`U_{d-1} = I`). The sizes halve from the
  image size, :math:`s_{d-1} = (H, W)`, :math:`s_{i} = \max(\lceil s_{i+1}/2 \rceil, 4)`, so the seed is
  :math:`s_0 = \max(\lceil (H, W) / 2^{d-1} \rceil, 4)` per side (a layer whose size does not change
  skips its upsampling) and **any** ``H × W ≥ 1`` (odd sizes included; sides below 4 keep their size)
  gives an output of exactly that size. The floor of 4 matters for small images: a 1×1 seed makes
  every map spatially constant (the output is a constant image) and channel normalisation of maps of
  (near) zero variance blows the Jacobian up (σ_1(J) ≈ 3·10⁸ for the 6-layer preset at 32² with a 1×1
  seed, 6·10² with the floor). With ``seed_size=s`` the sizes instead grow geometrically from an
  ``s × s`` seed to ``H × W`` (the ConvDecoder's ``in_size``).
* :math:`C_i` — ``kernel_size × kernel_size`` convolutions :math:`k \to k` without bias: 1×1
  (point-wise, only mixing channels: the **deep decoder**) or 3×3 (the **ConvDecoder**). A 1×1
  convolution commutes with the upsampling, so for the deep decoder this equals Heckel & Hand's
  ``conv → upsample → ReLU → BN`` order; the ConvDecoder upsamples first, as Darestani & Heckel do.
* ``cn`` — channel normalisation: each channel of each sample normalised to zero mean and unit
  variance over its pixels, then an affine map (2k parameters). For one sample this is exactly the
  ``BatchNorm2d`` (training mode) of the reference code; here it is per sample
  (``GroupNorm(k, k)``), so the samples of a batch stay independent.
* :math:`C_{out}` — a 1×1 convolution :math:`k \to` ``out_channels`` without bias; the output is
  linear (``sigmoid_out=True`` adds the reference code's sigmoid, which suits images in [0, 1] only).

**Parameter count** (``count_parameters``), with :math:`d` = ``layers``, :math:`k` = ``channels``,
:math:`s` = ``kernel_size`` and :math:`c` = ``out_channels``:

.. math:: P(k) = d\,(s^2 k^2 + 2k) + k\,c .

E.g. Heckel & Hand's 6 × 64 RGB deep decoder: :math:`6(4096 + 128) + 192 = 25{,}536`; the ``deep-decoder``
preset (6 × 64, gray) has 25,408 and the ``convdecoder`` preset (5 × 32, 3×3, gray) 46,432. With
``params=N`` the network takes the largest :math:`k` with :math:`P(k) \le N` (so it is sized by a
parameter budget; the two are exclusive with ``channels``).

**Under-parametrisation** needs :math:`P` well below the number of pixels: the image is then an
element of a low-dimensional (non-linear) family and the network cannot fit noise (Heckel & Hand,
Prop. 1 for one layer: the residual of fitting noise η keeps :math:`\ge (1 - 20k^2\log n_0/n)\|η\|^2`).
At 64² (4,096 pixels) the 25k-parameter preset is *over*-parametrised; use ``params=…`` below the
pixel count for the paper's regime.

The network input
-----------------
dipkit's runner gives every network an input ``z`` of the image's size (``dipkit.inputs``); the deep
decoder needs a ``k``-channel seed of size :math:`s_0`. ``seed`` says where it comes from:

* ``"random"`` (default, the paper's) — the network's **own** fixed random seed, uniform on
  [0, 0.1) as in the reference code, drawn from a generator whose seed is taken from torch's global
  RNG when the network is built (so the run's ``--seed`` fixes it; it is stored in the ``state_dict``)
  and regenerated identically for each output size. ``z`` only gives the batch size and the output
  size: its values, ``input.kind`` and input perturbation have no effect.
* ``"input"`` — the seed is derived from ``z``: ``z`` is area-resized to :math:`r s_0`, with
  :math:`r = \lceil\sqrt{k / C_z}\rceil`, and folded into channels (``pixel_unshuffle(r)``, giving
  :math:`C_z r^2 \ge k` channels of which the first :math:`k` are kept), then divided by its
  standard deviation per sample. For noise ``z`` the seed is again i.i.d. noise; for an FBP input it
  is a low-resolution copy of the FBP (to study informative inputs, e.g. with ``dipkit analyze``).

Both work with every task, gray or RGB, and odd sizes: ``dipkit reconstruct P.npz --set
net.name=deep-decoder``. The learning rate of both presets is Adam 0.01 (Heckel & Hand's).

Measured
--------
``dipkit reconstruct`` with ``dip``, 3000 steps, seed 0, each preset's learning rate (``unet`` 1e-3,
the decoders 1e-2), default inputs (CT: FBP; denoising: noise; the decoders: their own seed), one CPU
thread; 64² images. PSNR in dB, peak = best of the history every 10 steps (an oracle); "noise fit" =
:math:`1 - \min_k \text{loss}_k / (\tfrac12 n\sigma^2)`, the share of the noise energy the network
fitted (100 %: all of it)::

                                       CT shepp-logan, 30 views, 2 %    denoising camera, σ = 25/255
    net                     params     peak (step)     final            peak (step)     final   noise fit
    unet                    153,993    29.43 (3000)    29.43            25.46 (220)     20.39   100 %
    deep-decoder (6 × 64)    25,408    34.70 (2920)    32.26            26.72 (880)     24.46    44 %
    deep-decoder params=2000  1,955    33.40 (3000)    33.40            25.71 (580)     24.99    19 %
    convdecoder (5 × 32)     46,432    31.06 (2970)    30.53            25.83 (480)     20.21   100 %
    convdecoder params=2000   1,686    25.40 (2950)    25.00            25.09 (780)     23.17    36 %

On denoising the U-Net fits the noise completely (data loss 0.01 against a noise energy of 19.7) and
loses 5 dB from its peak; the deep decoder cannot (its loss stays at 11, the under-parametrised one at
16) and loses 2.3 and 0.7 dB — the paper's observation. The 3×3 ConvDecoder at 46k parameters (11 per
pixel) overfits like the U-Net. Unlike the paper's "lower peak", the 1×1 deep decoder *peaks higher* than
the small U-Net on these 64² images (a piecewise-constant phantom and a smooth camera crop; the U-Net's
CT peak is not reached within 3000 steps at lr 1e-3). On CT the decoders' losses show Adam spikes at lr
0.01 (the final PSNR is the spikes', not overfitting: the loss never reached the noise level of 16.8);
without the seed floor of 4 (a 2×2 seed at 64²) the 6-layer deep decoder spiked much more (peak 34.2,
final 24.3; 26.5/20.6 with params=2000).

References: R. Heckel, P. Hand, "Deep Decoder: Concise Image Representations from Untrained
Non-convolutional Networks", ICLR 2019; M. Z. Darestani, R. Heckel, "Accelerated MRI with Un-trained
Neural Networks", IEEE TCI 2021 (ConvDecoder); CT paper (Arridge, Barbano, Denker & Kereta) §3.2.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from dipkit.errors import DipkitError

from .unet import _check_choice, _check_input, _GroupNorm

__all__ = ["ConvDecoder", "DeepDecoder", "deep_decoder_parameters", "channels_for_parameters"]

_UPSAMPLE = ("bilinear", "nearest", "bicubic")
_SEEDS = ("random", "input")


def deep_decoder_parameters(channels: int, layers: int, kernel_size: int, out_channels: int) -> int:
    r"""The parameter count :math:`P(k) = d(s^2k^2 + 2k) + kc` of a :class:`DeepDecoder`."""
    k, d, s, c = int(channels), int(layers), int(kernel_size), int(out_channels)
    return d * (s * s * k * k + 2 * k) + k * c


def channels_for_parameters(params: int, layers: int, kernel_size: int, out_channels: int) -> int:
    """The largest channel count ``k`` with ``P(k) <= params`` (see :func:`deep_decoder_parameters`)."""
    d, s, c = int(layers), int(kernel_size), int(out_channels)
    a, b = d * s * s, 2 * d + c
    k = max(1, int((-b + math.sqrt(b * b + 4 * a * int(params))) / (2 * a)))
    while k > 1 and deep_decoder_parameters(k, d, s, c) > params:
        k -= 1
    while deep_decoder_parameters(k + 1, d, s, c) <= params:
        k += 1
    if deep_decoder_parameters(k, d, s, c) > params:
        raise DipkitError(f"params={params} is below the smallest network of this shape "
                          f"({deep_decoder_parameters(1, d, s, c)} parameters with 1 channel)")
    return k


def _integer(name: str, value) -> int:
    """``value`` as an int >= 1, else a one-line :class:`DipkitError`."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DipkitError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


#: the smallest seed side of the halving chain (or the image side, when smaller)
MIN_SEED = 4


def _halving_sizes(size: int, layers: int) -> list[int]:
    sizes, floor = [int(size)], min(MIN_SEED, int(size))
    for _ in range(layers - 1):
        sizes.append(max(floor, math.ceil(sizes[-1] / 2)))
    return sizes[::-1]


def _geometric_sizes(seed: int, size: int, layers: int) -> list[int]:
    if layers == 1:
        return [int(size)]
    seed = min(int(seed), int(size))
    ratio = (size / seed) ** (1.0 / (layers - 1))
    return [min(size, max(1, math.ceil(seed * ratio ** i))) for i in range(layers - 1)] + [int(size)]


class DeepDecoder(nn.Module):
    r"""Deep decoder / ConvDecoder (see the module docs for the equations, sizes and input).

    :param in_channels: channels of the runner's input ``z`` (used by ``seed="input"`` only).
    :param out_channels: image channels.
    :param channels: :math:`k`, channels of every layer (default 64; exclusive with ``params``).
    :param layers: :math:`d`, number of layers (default 6, Heckel & Hand's; :math:`d - 1` upsamplings).
    :param params: size the network by a parameter budget: the largest ``k`` with :math:`P(k) \le`
        ``params``.
    :param kernel_size: 1 (deep decoder) or an odd size, 3 for the ConvDecoder.
    :param upsample: ``bilinear`` (deep decoder), ``nearest`` (ConvDecoder) or ``bicubic``.
    :param seed: ``"random"`` (own fixed seed, the paper's) or ``"input"`` (derived from ``z``).
    :param seed_size: ``None``: sizes halve from the image size; an int ``s``: an ``s × s`` seed and
        geometric growth to the image size.
    :param sigmoid_out: end with a sigmoid (the reference code's; images in [0, 1] only).
    """

    #: :math:`k` when neither ``channels`` nor ``params`` is given
    default_channels = 64

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int | None = None,
        layers: int = 6,
        params: int | None = None,
        kernel_size: int = 1,
        upsample: str = "bilinear",
        seed: str = "random",
        seed_size: int | None = None,
        sigmoid_out: bool = False,
    ) -> None:
        super().__init__()
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise DipkitError("in_channels and out_channels must be >= 1")
        layers = _integer("layers", layers)
        kernel_size = _integer("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise DipkitError(f"kernel_size must be odd, got {kernel_size}")
        _check_choice("upsample", upsample, _UPSAMPLE)
        _check_choice("seed", seed, _SEEDS)
        if seed_size is not None:
            seed_size = _integer("seed_size", seed_size)
        if params is not None and channels is not None:
            raise DipkitError("give either channels or params for a deep decoder, not both")
        if params is not None:
            channels = channels_for_parameters(_integer("params", params), layers, kernel_size, int(out_channels))
        channels = _integer("channels", self.default_channels if channels is None else channels)
        k = int(channels)

        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.channels, self.layers, self.kernel_size = k, layers, kernel_size
        self.upsample, self.seed_mode, self.seed_size = upsample, seed, seed_size
        self.sigmoid_out = bool(sigmoid_out)
        #: :math:`P(k)`, equal to ``count_parameters(self)``
        self.num_parameters = deep_decoder_parameters(k, layers, kernel_size, out_channels)
        pad = (kernel_size - 1) // 2
        self.convs = nn.ModuleList(nn.Conv2d(k, k, kernel_size, padding=pad, bias=False) for _ in range(layers))
        self.norms = nn.ModuleList(_GroupNorm(k, k) for _ in range(layers))
        self.out = nn.Conv2d(k, out_channels, 1, bias=False)
        # the own seed's generator seed, from the global RNG (seeded by the run)
        self._seed_int = int(torch.randint(0, 2 ** 62, (1,)).item())
        self._seed_cache: dict = {}

    # ------------------------------------------------------------------ state
    def get_extra_state(self):
        return {"seed": self._seed_int}

    def set_extra_state(self, state) -> None:
        self._seed_int = int(state["seed"])
        self._seed_cache = {}

    # ------------------------------------------------------------------ sizes and seed
    def sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Spatial sizes :math:`s_0 … s_{d-1}` of the layers' inputs after upsampling (``s_0``: the seed)."""
        if self.seed_size is None:
            hs, ws = _halving_sizes(height, self.layers), _halving_sizes(width, self.layers)
        else:
            hs = _geometric_sizes(self.seed_size, height, self.layers)
            ws = _geometric_sizes(self.seed_size, width, self.layers)
        return list(zip(hs, ws))

    def seed_tensor(self, z: torch.Tensor) -> torch.Tensor:
        """The network's seed ``[B, k, h_0, w_0]`` for input ``z`` (see the module docs)."""
        h0, w0 = self.sizes(*z.shape[-2:])[0]
        b, k = z.shape[0], self.channels
        if self.seed_mode == "random":
            key = (h0, w0, z.device, z.dtype)
            seed = self._seed_cache.get(key)
            if seed is None:
                gen = torch.Generator().manual_seed(self._seed_int)
                seed = (0.1 * torch.rand((1, k, h0, w0), generator=gen, dtype=torch.float64)).to(
                    device=z.device, dtype=z.dtype)
                self._seed_cache = {key: seed}
            return seed.expand(b, -1, -1, -1)
        r = max(1, math.ceil(math.sqrt(k / z.shape[1])))
        s = F.adaptive_avg_pool2d(z, (h0 * r, w0 * r))
        s = F.pixel_unshuffle(s, r)[:, :k]
        return s / (s.flatten(1).std(dim=1, unbiased=False).clamp_min(1e-12)[:, None, None, None])

    def _up(self, x: torch.Tensor, size) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        if self.upsample == "nearest":
            return F.interpolate(x, size=tuple(size), mode="nearest")
        return F.interpolate(x, size=tuple(size), mode=self.upsample, align_corners=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input(z, self.in_channels, "DeepDecoder")
        sizes = self.sizes(*z.shape[-2:])
        x = self.seed_tensor(z)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if i + 1 < self.layers:
                x = self._up(x, sizes[i + 1])
            x = norm(F.relu(conv(x)))
        out = self.out(x)
        return torch.sigmoid(out) if self.sigmoid_out else out


class ConvDecoder(DeepDecoder):
    r"""The ConvDecoder (Darestani & Heckel 2021): a :class:`DeepDecoder` with 3×3 convolutions and
    nearest-neighbour upsampling, by default 5 layers × 32 channels (46,432 parameters for one output
    channel; ``params=…`` or ``channels``/``layers`` resize it, see :func:`deep_decoder_parameters`)."""

    default_channels = 32

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int | None = None,
        layers: int = 5,
        params: int | None = None,
        kernel_size: int = 3,
        upsample: str = "nearest",
        seed: str = "random",
        seed_size: int | None = None,
        sigmoid_out: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, channels=channels, layers=layers, params=params,
                         kernel_size=kernel_size, upsample=upsample, seed=seed, seed_size=seed_size,
                         sigmoid_out=sigmoid_out)
