r"""``naive``: each task's standard direct reconstruction (no iterations, no network).

For an outside operator (one dipkit did not build: no operator kind, e.g. through
:func:`dipkit.solve`), the direct reconstruction is the least-squares solution
:math:`A^\dagger y` by :func:`least_squares` (:mod:`dipkit.core.direct`, re-exported here, as
is :data:`LSQ_ITERATIONS`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.baseline import Baseline
from ..core.direct import LSQ_ITERATIONS, fbp, least_squares
from ..errors import DipkitError
from ..methods.registry import register
from ..metrics import magnitude

__all__ = ["Naive", "naive_reconstruction", "bicubic_upsample", "sample_offset", "least_squares",
           "LSQ_ITERATIONS"]

def _magnitude_as_complex(x: torch.Tensor) -> torch.Tensor:
    """``[B, 2, H, W]`` (real, imag) → ``[|x|, 0]``: the magnitude in the real channel."""
    mag = magnitude(x)
    return torch.cat([mag, torch.zeros_like(mag)], dim=1)


def sample_offset(physics) -> tuple[float, float]:
    """Where ``y[i, j]`` of a :class:`~dipkit.physics.restoration.DownsamplingOp` sits in the image:
    at ``(f i + o_h, f j + o_w)``; deepinv's filtering centres an even-sized filter (bicubic,
    bilinear: 4f taps / 2f taps) half a pixel after the kept pixel, an odd one (gaussian) on it."""
    filt = physics.filter
    if filt is None:
        return 0.0, 0.0
    kh, kw = int(filt.shape[-2]), int(filt.shape[-1])
    return 0.5 * (1 - kh % 2), 0.5 * (1 - kw % 2)


def bicubic_upsample(physics, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    r"""Bicubic interpolation (Keys, ``a = -0.75``) of ``y`` ``[B, C, h, w]`` onto the ``H × W`` image grid
    of a down-sampling operator, at its sampling positions (:func:`sample_offset`), replicating the
    border (better than wrapping around on natural images, even for a circular operator). For
    ``o = (f - 1) / 2`` this is ``F.interpolate(y, scale_factor=f, mode="bicubic")``."""
    H, W = size
    f = int(physics.factor)
    oh, ow = sample_offset(physics)
    nh, nw = y.shape[-2:]
    uh = (torch.arange(H, dtype=y.dtype, device=y.device) - oh) / f  # positions in y-pixel units
    uw = (torch.arange(W, dtype=y.dtype, device=y.device) - ow) / f
    gy = 2 * uh / max(nh - 1, 1) - 1
    gx = 2 * uw / max(nw - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # [H, W, 2] as (x, y)
    grid = grid[None].expand(y.shape[0], H, W, 2)
    return F.grid_sample(y, grid, mode="bicubic", padding_mode="border", align_corners=True)


@torch.no_grad()
def naive_reconstruction(problem) -> torch.Tensor:
    """The direct reconstruction of :class:`Naive` for ``problem`` (``[B, C, H, W]``, ``img_shape``)."""
    return _naive(problem.spec.get("kind"), problem.physics, problem.y, problem.img_shape)


def _naive(kind, physics, y, img_shape) -> torch.Tensor:
    c, h, w = img_shape
    if kind is None:  # an outside operator
        x = least_squares(physics, y)
    elif kind == "ct":
        x = fbp(physics, y)
    elif kind in ("mri", "mri-multicoil"):
        x = _magnitude_as_complex(physics.A_adjoint(y))
    elif kind == "denoising":
        x = y.clone()
    elif kind in ("inpainting", "inpainting-mask"):
        x = physics.A_adjoint(y)
    elif kind in ("blur", "blur-kernel"):
        x = physics.A_adjoint(y)
    elif kind == "downsampling":
        x = bicubic_upsample(physics, y, (h, w))
    else:
        raise DipkitError(f"naive: no direct reconstruction for operator kind {kind!r} "
                          "(known: ct, mri, mri-multicoil, denoising, inpainting(-mask), blur(-kernel), downsampling)")
    if tuple(x.shape[1:]) != (c, h, w):
        raise DipkitError(f"naive: reconstruction of shape {tuple(x.shape)} does not match the image "
                          f"shape {(c, h, w)} of the problem")
    return x


@register
class Naive(Baseline):
    r"""The task's standard direct reconstruction (dispatch on the operator's spec ``kind``).

    ==================  ==========================================================================
    operator kind       reconstruction :math:`\hat x`
    ==================  ==========================================================================
    ``ct``              filtered back-projection :math:`A^\dagger y` (parallel or fan beam)
    ``mri``             zero-filled inverse FFT, magnitude: :math:`[\,|F^{-1} M y|,\ 0\,]` (the
                        magnitude in the real channel, zero imaginary channel)
    ``mri-multicoil``   coil-combined zero-filled adjoint, magnitude:
                        :math:`[\,|\sum_n S_n^* F^{-1} M y_n|,\ 0\,]`
    ``denoising``       the measurement :math:`y`
    ``inpainting``      the masked measurement :math:`m \odot y` (missing pixels 0)
    ``blur``            the adjoint :math:`A^\top y = \tilde h * y` (flipped kernel)
    ``downsampling``    bicubic up-sampling of :math:`y` to the image size, on the operator's own
                        sampling grid (``y[i]`` sits at ``f i + o``, ``o = 0.5`` for deepinv's
                        even-sized bicubic/bilinear filters, 0 otherwise), border replicated
    outside operator    least squares :math:`A^\dagger y` by CG (:func:`least_squares`)
    ==================  ==========================================================================

    For MRI the magnitude is the usual "zero-filled" image; for a real non-negative ground truth
    it is never farther from it than the complex zero-filled image (reverse triangle inequality).
    No hyper-parameters; the reconstruction has the problem's image shape ``[B, C, H, W]``.

    Reference: A. C. Kak, M. Slaney, *Principles of Computerized Tomographic Imaging*, 1988 (FBP);
    J. Zbontar et al., "fastMRI: An open dataset and benchmarks for accelerated MRI",
    arXiv:1811.08839, 2018 (zero-filled baseline).
    """

    name = "naive"
    description = "the task's direct reconstruction: FBP, zero-filled IFFT, y, masked y, Aᵀy, bicubic up-sampling"
    reference = "Kak & Slaney 1988 (FBP); Zbontar et al., fastMRI, arXiv:1811.08839 (zero-filled)"
    algorithm = "direct (no iterations)"

    direct = True

    def forward(self, state):
        shape = state.meta.get("img_shape")
        if shape is None or "operator_kind" not in state.meta:
            raise DipkitError("naive needs the problem's operator kind and image shape")
        return _naive(state.meta["operator_kind"], state.physics, state.y, tuple(shape))
