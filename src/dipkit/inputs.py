r"""Network inputs ``z`` for the DIP.

The CT paper §2.1 distinguishes uninformative inputs (random noise, a mesh-grid) from
informative ones (an FBP or another classical reconstruction). Each kind here returns a tensor
``[B, C_z, H, W]`` on the problem's device, built from the run's seeded ``torch.Generator``:

* ``noise``    — :math:`z \sim \mathcal N(0, \mathrm{std}^2 I)` with ``channels`` channels
  (default: the image's channel count), fixed during the run;
* ``meshgrid`` — two channels with the pixel coordinates in [0, 1] (Ulyanov et al., Fig. 22);
* ``fbp``      — the operator's direct reconstruction ``physics.A_dagger(y)`` (FBP for CT);
* ``tv``       — the classical TV reconstruction (:func:`dipkit.baselines.tv.tv_reconstruct`
  with its ground-truth-free weight), the strongest classical input;
* ``adjoint``  — :math:`A^\top y`, divided by its largest magnitude per sample (``A`` is not
  normalised, so the raw back-projection can be thousands of times larger than the image).

``auto`` (the default of a run's ``input.kind``) is resolved per task by
:func:`resolve_input_kind`: the FBP (``fbp``) for CT, ``noise`` for MRI and the image-restoration
tasks (:data:`AUTO_INPUT`). Measured with vanilla DIP (64², 3000 steps, the ``val`` pick; release
notes E1/E5): FBP input +1.6 and +0.6 dB over noise on two CT images at lr 3e-3, while on MRI the
zero-filled input cost 11 dB on a phantom and 0.8 dB on a photograph at lr 3e-3; on the image tasks
A†y was no better than noise (±0.8 dB either way).

*Input perturbation* (Ulyanov et al.'s ``reg_noise_std``) adds fresh noise
:math:`\sigma_p\,\varepsilon_k` to ``z`` at every step; it is applied by the method's
``forward`` using the run's generator(s), see :func:`perturb` (defined in :mod:`dipkit.core.method`).
"""

from __future__ import annotations

import torch

from .core.method import perturb  # defined with the method interface (dipkit.core.method); re-exported
from .errors import DipkitError
from .registry import Registry

__all__ = ["INPUTS", "make_input", "perturb", "resolve_input_kind", "AUTO_INPUT"]

#: input kinds: ``name -> builder(problem, *, channels, std, generator)``
INPUTS: Registry = Registry("input kind")


@INPUTS.register("noise", description="fixed seeded Gaussian noise N(0, std²) (channels: input.channels)")
def _noise(problem, *, channels, std, generator):
    c, h, w = problem.img_shape
    channels = channels or c
    return std * torch.randn((1, channels, h, w), generator=generator, device=problem.device,
                             dtype=problem.y.dtype)


@INPUTS.register("meshgrid", description="two channels of pixel coordinates in [0, 1]")
def _meshgrid(problem, *, channels, std, generator):
    _, h, w = problem.img_shape
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([xx, yy])[None].to(device=problem.device, dtype=problem.y.dtype)


@INPUTS.register("fbp", description="the direct reconstruction A†y (FBP for CT)")
def _fbp(problem, *, channels, std, generator):
    with torch.no_grad():
        return problem.physics.A_dagger(problem.y).detach()


@INPUTS.register("tv", description="a classical TV reconstruction, its weight chosen by held-out misfit")
def _tv(problem, *, channels, std, generator):
    from .baselines.tv import tv_reconstruct

    nonneg = not str(problem.meta.get("task", "")).startswith("mri")
    return tv_reconstruct(problem.physics, problem.y, "auto", nonneg=nonneg).detach()


@INPUTS.register("adjoint", description="the back-projection Aᵀy, scaled to max |·| = 1 per sample")
def _adjoint(problem, *, channels, std, generator):
    from .physics.linalg import normalised_adjoint

    return normalised_adjoint(problem.physics, problem.y)


#: what ``input.kind = auto`` means, by the problem's operator kind (others: ``noise``)
AUTO_INPUT: dict[str, str] = {"ct": "fbp"}


def resolve_input_kind(kind: str, problem) -> str:
    """``kind``, or for ``auto`` the input that works best for the problem's task (:data:`AUTO_INPUT`)."""
    if kind != "auto":
        return kind
    return AUTO_INPUT.get(str(problem.spec.get("kind", "")), "noise")


def make_input(kind: str, problem, *, generator: torch.Generator, channels: int | None = None,
               std: float = 0.1) -> torch.Tensor:
    """Build the network input ``z`` of the given kind for ``problem`` (see module docs)."""
    build = INPUTS[kind]
    if channels is not None and int(channels) <= 0:
        raise DipkitError(f"input.channels must be positive, got {channels}")
    return build(problem, channels=channels, std=std, generator=generator)

