r"""Parameter subspaces from a pre-training trajectory (CT paper §5.2; Barbano et al. 2024).

``dipkit pretrain`` (:func:`dipkit.run.warmstart.pretrain`) records K snapshots
:math:`\theta^{(1)},\dots,\theta^{(K)}\in\mathbb R^p` of the trainable parameters at uniformly
spaced steps of the supervised training (38) — the *trajectory*, stored beside the weights as
``<weights stem>.trajectory.pt`` (:func:`trajectory_path`). :func:`subspace_basis` turns it into
the (sparse) basis of the Subspace DIP (method ``subspace-dip``, :mod:`dipkit.methods.subspace`):

1. stack the mean-centred snapshots, :math:`\Theta = [\theta^{(1)} - \bar\theta, \dots,
   \theta^{(K)} - \bar\theta] \in \mathbb R^{p\times K}`;
2. a randomised SVD (Halko, Martinsson & Tropp 2011, with ``power_iters`` subspace iterations and a
   seeded Gaussian sketch of k + ``oversample`` columns) gives :math:`\Theta \approx U S V^\top`;
   keep the top-k left singular vectors :math:`U \in \mathbb R^{p\times k}` (:math:`k \le K - 1`,
   the rank of a centred K-column matrix);
3. optionally sparsify by leverage scores (Drineas et al. 2012)
   :math:`\rho_i = \sum_{j=1}^k U_{ij}^2` (CT paper, after eq. 38): the mask
   :math:`M = \mathrm{diag}(\mathbf 1_{\mathrm{top}_{d_\tau}}(i))` keeps the :math:`d_\tau` rows with the
   largest scores, :math:`d_\tau = \lceil \text{leverage}\cdot p\rceil`.

The basis is returned as ``(idx, U_M)``: the kept row indices ``idx`` (``[d]``, ascending) and
:math:`U_M = (MU)[\text{idx}] \in \mathbb R^{d\times k}`, so :math:`MU\gamma` is
``zeros(p).index_add(0, idx, U_M @ γ)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import DipkitError

__all__ = ["trajectory_path", "save_trajectory", "read_trajectory", "subspace_basis", "flat_parameters",
           "TRAJECTORY_FORMAT"]

TRAJECTORY_FORMAT = "dipkit-trajectory"


def trajectory_path(weights: str | Path) -> Path:
    """Where ``dipkit pretrain`` puts the trajectory of the weights file ``weights`` (``W.pt`` → ``W.trajectory.pt``)."""
    weights = Path(weights)
    return weights.with_name(weights.stem + ".trajectory.pt")


def flat_parameters(net: torch.nn.Module) -> tuple[list[str], list[list[int]], torch.Tensor]:
    """Names, shapes and the concatenation ``[p]`` (detached) of ``net``'s trainable parameters."""
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    return ([n for n, _ in named], [list(p.shape) for _, p in named],
            torch.cat([p.detach().reshape(-1) for _, p in named]))


def save_trajectory(path: str | Path, *, names, shapes, steps, theta: torch.Tensor) -> Path:
    """Write a trajectory (``theta``: ``[K, p]`` snapshots at ``steps``) atomically."""
    from ..io import atomic_write

    doc = {"format": TRAJECTORY_FORMAT, "version": 1, "names": list(names),
           "shapes": [list(map(int, s)) for s in shapes], "steps": [int(s) for s in steps],
           "theta": theta.detach().cpu().contiguous()}
    with atomic_write(path, "wb") as fh:
        torch.save(doc, fh)
    return Path(path)


def read_trajectory(path: str | Path) -> dict:
    """A trajectory written by :func:`save_trajectory` (``torch.load(weights_only=True)``)."""
    from ..io.guard import guarded, read_torch

    path = Path(path)
    if not path.is_file():
        raise DipkitError(f"pre-training trajectory not found: {path} (written by 'dipkit pretrain' beside the weights)")
    doc = read_torch(path, "trajectory")
    if not isinstance(doc, dict) or doc.get("format") != TRAJECTORY_FORMAT:
        raise DipkitError(f"{path} is not a dipkit pre-training trajectory")
    theta = doc.get("theta")
    with guarded(path, "trajectory"):  # damaged names/shapes lists
        names, shapes = list(doc["names"]), [list(map(int, s)) for s in doc["shapes"]]
        p = sum(math.prod(s) for s in shapes)
        ok = len(names) == len(shapes) and all(isinstance(n, str) for n in names)
    if not ok or not isinstance(theta, torch.Tensor) or theta.ndim != 2 or theta.shape[1] != p:
        raise DipkitError(f"trajectory {path} is corrupt (theta does not match its parameter shapes)")
    return doc


def subspace_basis(theta: torch.Tensor, k: int, *, leverage: float | None = None, oversample: int = 5,
                   power_iters: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The rank-``k`` (optionally leverage-sparsified) basis ``(idx, U_M)`` of the trajectory
    ``theta`` ``[K, p]`` (module docs). Deterministic for a given ``seed``; computed in float64 on
    ``theta``'s device, returned in ``theta``'s dtype."""
    if theta.ndim != 2:
        raise DipkitError(f"the trajectory must be [K, p], got {tuple(theta.shape)}")
    n_snap, p = theta.shape
    k = int(k)
    if not 1 <= k <= n_snap - 1:
        raise DipkitError(f"subspace dimension k must be in [1, K-1] = [1, {n_snap - 1}] for a trajectory of "
                          f"K = {n_snap} snapshots, got {k} (pre-train with more --checkpoints)")
    if leverage is not None and not 0 < float(leverage) <= 1:
        raise DipkitError(f"leverage (the fraction of parameters kept) must be in (0, 1], got {leverage}")
    a = (theta - theta.mean(0, keepdim=True)).to(torch.float64).T  # Θ, p × K
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    cols = min(k + int(oversample), n_snap)
    omega = torch.randn((n_snap, cols), generator=gen, dtype=torch.float64).to(a.device)
    q, _ = torch.linalg.qr(a @ omega)
    for _ in range(int(power_iters)):
        w, _ = torch.linalg.qr(a.T @ q)
        q, _ = torch.linalg.qr(a @ w)
    ub, s, _ = torch.linalg.svd(q.T @ a, full_matrices=False)
    if not bool(s[k - 1] > 1e-12 * s[0].clamp_min(1e-300)):
        raise DipkitError(f"the trajectory has rank below k = {k}; choose a smaller k")
    u = q @ ub[:, :k]  # p × k, orthonormal columns
    if leverage is None:
        idx = torch.arange(p, device=a.device)
    else:
        d = max(1, math.ceil(float(leverage) * p))
        rho = u.pow(2).sum(1)  # leverage scores ρ_i
        idx = torch.topk(rho, d).indices.sort().values
    return idx, u[idx].to(theta.dtype)
