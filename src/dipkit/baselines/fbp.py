"""Filtered back-projection baseline (CT; least squares for an outside operator)."""

from __future__ import annotations

import torch

from ..errors import DipkitError
from ..methods.registry import register
from ..physics.ct import FanBeamCT, ParallelBeamCT
from .base import Baseline

__all__ = ["fbp", "FBP"]


@torch.no_grad()
def fbp(physics, y: torch.Tensor) -> torch.Tensor:
    """Filtered back-projection of the sinogram ``y`` ``[B, C, n_det, views]`` -> ``[B, C, N, N]``.

    Calls the operator's ``A_dagger``, which for dipkit's CT operators
    (:func:`dipkit.physics.ct.parallel_beam`, :func:`dipkit.physics.ct.fan_beam`) is a real
    parallel- or fan-beam FBP. Raises :class:`~dipkit.errors.DipkitError` for any other operator
    (including a bare ``deepinv.physics.Tomography``, whose ``A_dagger`` is a least-squares solve
    and whose fan-beam ``fbp`` is not a proper fan-beam FBP).
    """
    if not isinstance(physics, (ParallelBeamCT, FanBeamCT)):
        raise DipkitError(
            f"FBP needs a CT operator (dipkit.physics.ct parallel_beam / fan_beam), "
            f"got {type(physics).__name__}"
        )
    expected = tuple(physics.measurement_shape)
    if tuple(y.shape[-2:]) != expected:
        raise DipkitError(
            f"sinogram of shape {tuple(y.shape)} does not match the CT operator "
            f"(expected [..., {expected[0]}, {expected[1]}] = [..., detector cells, views])"
        )
    return physics.A_dagger(y)


@register
class FBP(Baseline):
    """Filtered back-projection (CT): ``x = A†y``, a direct method (one engine step).

    For an outside operator (no operator kind, e.g. through :func:`dipkit.solve`: it may be any
    tomography or other linear operator) ``A†y`` is the least-squares solution by a fixed number
    of CG iterations (:func:`dipkit.baselines.naive.least_squares`); dipkit's other operators
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
            from .naive import least_squares

            return least_squares(state.physics, state.y)
        return fbp(state.physics, state.y)
