r"""Autoencoding Sequential DIP (aSeqDIP): CT paper Algorithm 8 / aSeqDIP Algorithm 1.

Alkhouri, Liang, Bell, Qu, Wang & Ravishankar, "Image reconstruction via autoencoding sequential
deep image prior", NeurIPS 2024.
"""

from __future__ import annotations

import torch

from ..errors import DipkitError
from ..physics.linalg import normalised_adjoint
from .base import Method, data_term
from .registry import register

__all__ = ["ASeqDIP", "auto_z0"]

_Z0 = ("auto", "fbp", "adjoint", "y", "input")


def auto_z0(physics, y: torch.Tensor, aty: torch.Tensor) -> str:
    """What ``z0="auto"`` starts from: ``"y"`` for an image-domain operator (``y`` has the image's
    shape), ``"fbp"`` for CT (parallel or fan beam, also inside a validation split's fit view),
    else ``"adjoint"`` (MRI)."""
    from ..physics.ct import is_ct
    from ..physics.split import MaskedPhysics

    if tuple(y.shape) == tuple(aty.shape):
        return "y"
    base = physics
    while isinstance(base, MaskedPhysics):
        base = base.base
    return "fbp" if is_ct(base) else "adjoint"


@register
class ASeqDIP(Method):
    r"""aSeqDIP: sequential θ updates with an autoencoding term; the input is the last output.

    For :math:`k = 1, \dots, K`:

    .. math::

        \theta_k &\leftarrow \arg\min_\theta\; \tfrac12\|A f_\theta(z_{k-1}) - y\|_2^2
                   + \tfrac{\lambda}{2}\,\|A\|^2\,\|f_\theta(z_{k-1}) - z_{k-1}\|_2^2
                   \quad(N \text{ Adam steps from } \theta_{k-1})\\
        z_k &= f_{\theta_k}(z_{k-1})

    and the reconstruction is :math:`z_K`.

    Algorithm 8 (CT paper) / Algorithm 1 (aSeqDIP)::

        Require: A, y, λ > 0, K outer iterations, N inner steps, z_0
        1: for k = 1 … K:
        2:     for i = 1 … N:                                       (inner_steps = N)
        3:         x̃ = f_θ(z_{k−1})
        4:         L(θ) = ½‖A x̃ − y‖² + (λ/2)‖A‖²·‖x̃ − z_{k−1}‖²
        5:         gradient step w.r.t. θ using ∇_θ L(θ)             (Adam, lr; θ carried over)
        6:     end for
        7:     z_k = f_θ(z_{k−1})                                   (outer_update)
        8: end for
        9: return z_K                                               (estimate = z)

    ``K`` is ``iterations // N``; when the step budget is not a multiple of ``N`` the last partial
    block trains θ but the estimate stays the last completed :math:`z_k`. The estimate is ``z``
    at every step (it changes only at outer updates, at the end of step ``kN``; the history row
    logged at step ``kN`` describes :math:`z_k` — the recorder re-evaluates a sampled step after
    its outer update, :class:`dipkit.engine.recorder.HistoryRecorder` — so the history's last row
    and its peak agree with the returned :math:`z_K`).

    *Initial input* :math:`z_0` (set by the method in ``setup``, whatever the run's
    ``--input`` is, unless ``z0="input"``):

    * ``"fbp"`` — the operator's direct reconstruction ``physics.A_dagger(y)`` in image units
      (CT: the filtered back-projection; MRI: the zero-filled inverse FFT, i.e. :math:`A^H y`
      unnormalised; image-domain operators: their pseudo-inverse, e.g. ``y`` for denoising);
    * ``"adjoint"`` — :math:`A^\top y` divided by its largest magnitude per sample (CT and MRI:
      aSeqDIP §3.2 uses :math:`A^H y`; the CT paper code normalises it by its maximum);
    * ``"y"`` — the measurement itself (denoising, inpainting, deblurring: aSeqDIP §3.2);
    * ``"auto"`` (default, :func:`auto_z0`) — ``"y"`` when ``y`` has the image's shape (an
      image-domain operator: denoising, inpainting, deblurring), ``"fbp"`` for CT (parallel and
      fan beam; measured below), else ``"adjoint"`` (MRI, where the zero-filled "FBP" is the
      adjoint up to a factor);
    * ``"input"`` — keep the run's input (e.g. ``--input fbp``); it must have the image's
      channel count, because ``z_k = f_θ(z_{k−1})`` feeds outputs back as inputs.

    *Defaults*: ``N = 2`` and Adam ``lr = 1e-4`` (aSeqDIP §4.1 and App. C.5, which also use
    ``K = 2000``, i.e. 4000 steps: ``default_iterations``); ``λ = 0.1`` and ``z0 = "auto"``
    chosen by the sweep below (aSeqDIP App. C.4 uses λ = 1, for its unit-norm operators at lr
    1e-4). The CT paper code (``run_dip.py``) uses ``denoise_strength = 0.01``,
    ``num_inner_steps = 5`` with its data term divided by :math:`\|A^\top A\|^2` and the penalty
    multiplied by (#detector pixels / #pixels); its λ therefore has other units.

    *Sweep* (64², the small U-Net, Adam lr 1e-3, 2000 steps, N = 2, seed 0; PSNR in dB, peak /
    final; ``dipkit simulate --task ct --sample shepp-logan --size 64 --views 30 --noise-level
    0.02`` and ``--task mri --sample mr --size 64 --acceleration 4``):

    ======  =============  =============  =============  =============
    λ       CT adjoint     CT fbp         MRI adjoint    MRI fbp
    ======  =============  =============  =============  =============
    1       23.94 / 23.94  24.75 / 24.75  27.07 / 26.48  26.51 / 26.27
    0.1     27.81 / 27.81  27.12 / 27.12  27.15 / 26.56  26.94 / 25.58
    0.01    27.09 / 25.38  26.65 / 26.65  26.99 / 26.00  26.62 / 25.50
    0.001   27.24 / 27.24  26.60 / 26.60  27.74 / 27.36  27.16 / 26.02
    ======  =============  =============  =============  =============

    Vanilla DIP (noise input): CT 27.84 / 27.84 (still rising at 2000 steps), MRI 26.25 (step
    290) / 24.77. Checks with seed 1 on the same CT problem: λ = 0.1 adjoint 29.01, fbp 27.32;
    λ = 0.001 adjoint 28.55 / 27.54, fbp 27.24; and on the bundled CT slice (``--sample ct``, 64²,
    30 views): λ = 0.1 adjoint 29.98, fbp 29.89 / 29.84; λ = 0.01 adjoint 29.85, fbp 29.91 (vanilla
    DIP 30.11). So the FBP start did not pay at this budget (superseded for CT by the measurements
    with the defaults below): the first outer update, after N = 2
    steps, replaces z by the output of a barely trained network, and after 200 steps both starts
    are at ≈ 19 dB on CT (seed 1: fbp 18.6, adjoint 19.3; the FBP itself has 25.6 dB); on MRI the FBP is the zero-filled
    reconstruction, i.e. the adjoint up to a factor (0.89 here), and the differences are run-to-run
    noise (≈ 0.5 dB). λ = 1 is too strong at this budget on CT (the autoencoding term slows the
    fit: −3 dB); λ = 0.1 is the best of the four on CT with either start and within 0.6 dB of the
    best peak on MRI.

    *Start on CT* (issue 16; ``benchmarks/aseqdip_z0.py --size 64``, commit 5a48134: defaults,
    4000 steps, val rule recording; 2 % noise, seed 0; PSNR in dB, final z_K / val pick):

    ==========================  =====  =============  =============
    case (64²)                  FBP    z0 = fbp       z0 = adjoint
    ==========================  =====  =============  =============
    parallel, 30 views, ct      23.76  31.23 / 31.22  31.18 / 31.13
    fan, 60 views, ct           26.91  32.49 / 32.51  31.52 / 31.43
    parallel, 30 views, head-ct 26.29  26.68 / 27.81  18.13 / 24.51
    fan, 60 views, head-ct      27.85  25.75 / 25.67  27.08 / 26.82
    ==========================  =====  =============  =============

    From the max-normalised adjoint — far from the image for the fan-beam operator and for the
    head CT — the run ended below the FBP on the head CT (18.1 dB, parallel; issue 16 reports
    18.4 dB vs FBP 23.5 at 128² with 60 fan-beam views); from the FBP it ended above it in three of the four cases
    and gained 0.05–8.6 dB at the end (0.1–3.3 dB in the val pick) there. On the fan-beam head CT
    both starts end below the FBP, both still rising at step 4000 (the FBP start 1.3 dB lower):
    that case needs a longer run, not another start. Hence ``auto`` = ``fbp`` on CT.

    *Scaling of λ*: the penalty is ``(λ/2)·‖A‖²·‖x̃ − z‖²`` with :math:`\|A\|^2` estimated once in
    ``setup`` by power iteration — the paper's λ for a unit-norm operator (the aSeqDIP paper's
    MRI, denoising and inpainting operators have norm 1, where this is exactly its objective
    :math:`\|Af - y\|^2 + \lambda\|f - z\|^2` up to a factor ½).

    :param lr: Adam learning rate β; default: the network preset's, at most 1e-3
        (:attr:`max_default_lr`; aSeqDIP §4.1: 1e-4 for its network). The feedback
        :math:`z_k = f_\theta(z_{k-1})` makes aSeqDIP less stable than plain DIP at the default
        ``unet``'s 3e-3: on 128² fan-beam CT (sample ``ct``, 60 views, 2 %) it peaked at 21.8 dB and
        its pick, 21.10 dB, fell below the FBP's 22.61; at 1e-3 it picked 31.10 dB
        (``benchmarks/results/schedules.md``).
    :param lam: autoencoding weight λ, relative to ‖A‖² (aSeqDIP App. C.4: 1; default 0.1, see above).
    :param inner_steps: gradient steps N per input update (aSeqDIP App. C.5: 2).
    :param z0: initial input: ``"auto"``, ``"fbp"``, ``"adjoint"``, ``"y"`` or ``"input"`` (see above).

    Reference: I. Alkhouri, S. Liang, E. Bell, Q. Qu, R. Wang, S. Ravishankar, "Image reconstruction
    via autoencoding sequential deep image prior", NeurIPS 2024.
    """

    name = "aseqdip"
    description = "autoencoding sequential DIP: N steps on ½‖Af_θ(z)−y‖² + λ/2‖f_θ(z)−z‖², then z ← f_θ(z)"
    reference = "Alkhouri, Liang, Bell, Qu, Wang & Ravishankar, NeurIPS 2024 (aSeqDIP)"
    algorithm = "CT paper Alg. 8 / aSeqDIP Alg. 1"
    default_iterations = 4000
    max_default_lr = 1e-3

    def __init__(self, *, lr: float | None = None, lam: float = 0.1, inner_steps: int = 2, z0: str = "auto"):
        if int(inner_steps) < 1:
            raise ValueError(f"inner_steps must be ≥ 1, got {inner_steps}")
        if float(lam) < 0:
            raise ValueError(f"lam must be non-negative, got {lam}")
        if z0 not in _Z0:
            raise ValueError(f"z0 must be one of {', '.join(_Z0)}, got {z0!r}")
        super().__init__(lr=lr, ema=None)
        self.lam, self.inner_steps, self.z0 = float(lam), int(inner_steps), z0

    # ------------------------------------------------------------------ hooks
    @torch.no_grad()
    def initial_input(self, state) -> torch.Tensor:
        """:math:`z_0` for ``state`` (see the class docs)."""
        aty = state.physics.A_adjoint(state.y)
        kind = self.z0
        if kind == "auto":
            kind = auto_z0(state.physics, state.y, aty)
        if kind == "input":
            z = state.z
        elif kind == "fbp":
            z = state.physics.A_dagger(state.y)
        elif kind == "y":
            if tuple(state.y.shape) != tuple(aty.shape):
                raise DipkitError(f"aseqdip z0='y' needs y with the image shape {tuple(aty.shape)}, "
                                  f"got {tuple(state.y.shape)} (use z0=adjoint)")
            # under a validation split the fit sees y with held-out entries zeroed: complete them
            fill = getattr(state.physics, "fill", None)
            z = state.y if fill is None else fill(state.y)
        else:
            z = normalised_adjoint(state.physics, state.y)
        if z.shape[1] != aty.shape[1]:
            raise DipkitError(f"aseqdip feeds outputs back as inputs, so z needs the image's {aty.shape[1]} "
                              f"channel(s), got {z.shape[1]} (drop input.channels)")
        return z.detach().clone()

    def setup(self, state, resuming: bool = False) -> None:
        state.opnorm_sq()
        if not resuming:
            state.z = self.initial_input(state)
        state.estimate = state.z

    def forward(self, state) -> torch.Tensor:
        return state.network(state.z)

    def loss(self, state, x):
        d = (x - state.z).pow(2).flatten(1).sum(1)
        return {"data": data_term(state, x),
                "autoencoder": (0.5 * self.lam * state.opnorm_sq()) * d}

    def iterate(self, state) -> torch.Tensor:
        return state.z

    def outer_update(self, state) -> None:
        state.z = state.network(state.z).detach()
        state.estimate = state.z
