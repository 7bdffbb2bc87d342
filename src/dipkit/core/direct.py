r"""Direct reconstructions :math:`A^\dagger y`: what the ``fbp`` and ``naive`` baselines (and inputs,
tasks, benchmarks) share.

* :func:`fbp`: filtered back-projection through dipkit's CT operators (their ``A_dagger``);
* :func:`least_squares`: :math:`A^\dagger y` for any linear operator by a fixed number of CG steps
  (outside operators, which have no kind).

They lived in :mod:`dipkit.baselines.fbp` and :mod:`dipkit.baselines.naive`, which imported each
other for them; both modules re-export them.
"""

from __future__ import annotations

import torch

from ..errors import DipkitError

__all__ = ["fbp", "least_squares", "LSQ_ITERATIONS"]

#: conjugate-gradient iterations of :func:`least_squares`
LSQ_ITERATIONS = 50


@torch.no_grad()
def fbp(physics, y: torch.Tensor) -> torch.Tensor:
    """Filtered back-projection of the sinogram ``y`` ``[B, C, n_det, views]`` -> ``[B, C, N, N]``.

    Calls the operator's ``A_dagger``, which for dipkit's CT operators
    (:func:`dipkit.physics.ct.parallel_beam`, :func:`dipkit.physics.ct.fan_beam`) is a real
    parallel- or fan-beam FBP. Raises :class:`~dipkit.errors.DipkitError` for any other operator
    (including a bare ``deepinv.physics.Tomography``, whose ``A_dagger`` is a least-squares solve
    and whose fan-beam ``fbp`` is not a proper fan-beam FBP).
    """
    from ..physics.ct import FanBeamCT, ParallelBeamCT

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


@torch.no_grad()
def least_squares(physics, y: torch.Tensor, iterations: int = LSQ_ITERATIONS) -> torch.Tensor:
    r""":math:`A^\dagger y` for any linear operator: ``iterations`` conjugate-gradient steps on the
    normal equations :math:`A^\top A x = A^\top y` from :math:`x = 0`
    (:func:`dipkit.physics.linalg.conjugate_gradient`; a fixed count, no host synchronisation). From
    zero, CG stays in the range of :math:`A^\top`, so it tends to the minimum-norm least-squares
    solution; stopping after a fixed number of steps also regularises an ill-posed problem (early
    stopping of CGLS). Used by ``naive`` and ``fbp`` for outside operators."""
    from ..physics.linalg import conjugate_gradient

    aty = physics.A_adjoint(y)
    return conjugate_gradient(lambda v: physics.A_adjoint(physics.A(v)), aty, torch.zeros_like(aty), iterations)
