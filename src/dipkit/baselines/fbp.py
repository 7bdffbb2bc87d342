"""Filtered back-projection baseline (CT; least squares for an outside operator).

:func:`fbp` itself lives in :mod:`dipkit.core.direct` (re-exported here).
"""

from __future__ import annotations


from ..core.baseline import Baseline
from ..core.direct import fbp, least_squares
from ..methods.registry import register
from ..physics.ct import FanBeamCT, ParallelBeamCT

__all__ = ["fbp", "FBP"]


@register
class FBP(Baseline):
    """Filtered back-projection (CT): ``x = A†y``, a direct method (one engine step).

    For an outside operator (no operator kind, e.g. through :func:`dipkit.solve`: it may be any
    tomography or other linear operator) ``A†y`` is the least-squares solution by a fixed number
    of CG iterations (:func:`dipkit.core.direct.least_squares`); dipkit's other operators
    (MRI, restoration) are refused as before.

    Reference: A. C. Kak, M. Slaney, *Principles of Computerized Tomographic Imaging*, 1988, ch. 3.
    """

    name = "fbp"
    description = "filtered back-projection (parallel beam, and a real fan-beam FBP)"
    reference = "Kak & Slaney, Principles of Computerized Tomographic Imaging, 1988"
    algorithm = "FBP"
    direct = True

    def forward(self, state):
        if state.meta.get("operator_kind") is None and not isinstance(state.physics, (ParallelBeamCT, FanBeamCT)) \
                and "operator_kind" in state.meta:
            return least_squares(state.physics, state.y)
        return fbp(state.physics, state.y)
