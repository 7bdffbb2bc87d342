r"""Classical baselines: same Problem in, same result out, no network.

* ``fbp`` — filtered back-projection (parallel beam, and a real fan-beam FBP; see
  :mod:`dipkit.physics.ct`);
* ``tv``  — :math:`\min_{x\ge0} \tfrac12\|Ax-y\|_2^2 + \alpha\,\mathrm{TV}(x)` by Chambolle–Pock
  PDHG (:func:`dipkit.baselines.tv.tv_reconstruct`).

Network-free methods implement :meth:`reconstruct` instead of the engine hooks; the runner writes
their outputs exactly like a DIP run's.
"""

from __future__ import annotations

from typing import Callable

import torch

from .base import Method
from .registry import register

__all__ = ["Baseline", "FBP", "TV"]


class Baseline(Method):
    """A method without a network: :meth:`reconstruct` returns the reconstruction directly."""

    uses_network = False
    #: iterations when the run does not say (None where meaningless, as for FBP)
    default_iterations: int | None = None

    def __init__(self):
        self.output = None

    def reconstruct(self, problem, *, iterations: int | None = None, observer: Callable | None = None,
                    observe_every: int = 10) -> torch.Tensor:
        """The reconstruction ``[B, C, H, W]``; ``observer(iteration, x)`` every ``observe_every``."""
        raise NotImplementedError  # abstract


@register
class FBP(Baseline):
    """Filtered back-projection (CT only): ``x = A†y``.

    Reference: A. C. Kak, M. Slaney, *Principles of Computerized Tomographic Imaging*, 1988, ch. 3.
    """

    name = "fbp"
    description = "filtered back-projection (parallel beam, and a real fan-beam FBP)"
    reference = "Kak & Slaney, Principles of Computerized Tomographic Imaging, 1988"
    algorithm = "FBP"

    def reconstruct(self, problem, *, iterations=None, observer=None, observe_every=10):
        from ..baselines.fbp import fbp

        with torch.no_grad():
            return fbp(problem.physics, problem.y)


@register
class TV(Baseline):
    r"""Classical TV-regularised reconstruction by PDHG.

    .. math:: \hat x = \arg\min_{x \ge 0} \tfrac12\|Ax - y\|_2^2 + \alpha\,\mathrm{TV}(x)

    :param alpha: TV weight, on the scale of the un-normalised data term: it depends on the
        operator's norm, the image size and the noise (see :func:`dipkit.baselines.tv.tv_reconstruct`
        for measured optima). The default 1.0 suits CT at 128² (‖A‖² ≈ 4·10³); for operators with
        ‖A‖ ≈ 1 (denoising, inpainting, deblurring, super-resolution, MRI) use about 0.02–0.1.
    :param nonneg: enforce :math:`x \ge 0`; ``None`` (default) = on, except for complex images
        (MRI, stored as real/imaginary channels), whose imaginary part has no sign.

    Reference: A. Chambolle, T. Pock, "A first-order primal-dual algorithm for convex problems with
    applications to imaging", JMIV 2011; L. Rudin, S. Osher, E. Fatemi, Physica D 1992.
    """

    name = "tv"
    description = "classical TV-regularised reconstruction, min ½‖Ax−y‖² + α TV(x), x ≥ 0, by PDHG"
    reference = "Rudin, Osher & Fatemi 1992; Chambolle & Pock, JMIV 2011"
    algorithm = "PDHG"

    default_iterations = 500

    def __init__(self, *, alpha: float = 1.0, nonneg: bool | None = None):
        super().__init__()
        if not alpha >= 0:
            raise ValueError(f"alpha must be ≥ 0, got {alpha}")
        self.alpha, self.nonneg = float(alpha), (None if nonneg is None else bool(nonneg))

    def reconstruct(self, problem, *, iterations=None, observer=None, observe_every=10):
        from ..baselines.tv import tv_reconstruct

        with torch.no_grad():
            return tv_reconstruct(problem.physics, problem.y, self.alpha,
                                  iterations=int(iterations or self.default_iterations),
                                  nonneg=_nonneg_default(self.nonneg, problem), observer=observer,
                                  observe_every=observe_every)


def _nonneg_default(nonneg: bool | None, problem) -> bool:
    """``nonneg`` as given, else True unless the problem's image is complex (MRI: 2 channels)."""
    if nonneg is not None:
        return nonneg
    return not str((problem.meta or {}).get("task", "")).startswith("mri")
