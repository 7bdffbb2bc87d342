r"""The spectrum of the network Jacobian at initialisation: the linearised DIP / NTK view (CT paper §3.3).

For a network :math:`f_\theta` with input :math:`z`, the Jacobian at initialisation

.. math:: J = \frac{\partial f_\theta(z)}{\partial \theta}\Big|_{\theta = \theta^{(0)}} \in \mathbb R^{n \times p}

governs the DIP in the linearised (NTK) regime: under gradient descent with step τ the output evolves
as :math:`\tilde f^{(k+1)} = \tilde f^{(k)} - \tau\, J J^\top A^\top (A \tilde f^{(k)} - y)` (CT paper eq. 14),
so in the eigenbasis of the neural tangent kernel :math:`K = J J^\top = U \Sigma^2 U^\top` the component
along :math:`u_i` is fitted at a rate :math:`\propto \sigma_i^2` (eq. 18): the *spectral bias*. The
top left singular vectors :math:`u_i` (the "eigenfunctions" of Figure 3) are the image components the
DIP fits first. With the operator (``physics``), the same for :math:`AJ`: the residual in measurement
space decays along the left singular vectors of :math:`AJ` at rates :math:`\sigma_i^2`, and the image
moves along :math:`J v_i` (:math:`v_i` the right singular vectors), which :attr:`JacobianSpectrum.images`
holds (normalised).

Everything is **matrix-free**: :math:`J v` is one forward-mode product (``torch.func.jvp``),
:math:`J^\top u` one reverse-mode product (``torch.func.vjp``, whose graph is built once); :math:`J` is
never formed. Two algorithms:

* ``"lanczos"`` (default) — Golub–Kahan–Lanczos bidiagonalisation with full reorthogonalisation
  (float64 bases): after :math:`m` steps :math:`J V_m = U_m B_m`, :math:`J^\top U_m = V_m B_m^\top +
  \beta_m v_{m+1} e_m^\top` with :math:`B_m` upper bidiagonal; the SVD :math:`B_m = P \Sigma Q^\top`
  gives the Ritz triplets :math:`(\sigma_i, U_m p_i, V_m q_i)` with residual
  :math:`\|J^\top U_m p_i - \sigma_i V_m q_i\| = \beta_m |e_m^\top p_i|` (reported per value). Cost:
  :math:`m` JVPs + :math:`m` VJPs; default :math:`m = \max(3k, k + 20)` (capped by :math:`\min(n, p)`).
  Golub & Kahan, SIAM J. Numer. Anal. 1965; Golub & Van Loan, *Matrix Computations*, §10.4.
* ``"randomized"`` — randomised subspace iteration (Halko, Martinsson & Tropp, SIAM Review 2011,
  Alg. 4.4 + 5.1) with :math:`l = k +` ``oversample`` probes and ``power_iters`` power steps: cost
  :math:`l(1 + q)` JVPs and :math:`l(1 + q)` VJPs.

Singular vectors are returned with a fixed sign: the largest-magnitude entry of each left vector is
positive.

>>> spec = jacobian_svd(net, z, k=8)                       # J at θ0
>>> spec.values, spec.images.shape                         # σ_1 ≥ … ≥ σ_k, [k, C, H, W]
>>> spec = jacobian_svd(net, z, k=8, physics=problem.physics)   # A J

References: A. Jacot, F. Gabriel, C. Hongler, "Neural Tangent Kernel", NeurIPS 2018; R. Heckel,
M. Soltanolkotabi, "Denoising and Regularization via Exploiting the Structural Bias of Convolutional
Generators", ICLR 2020; CT paper (Arridge, Barbano, Denker & Kereta) §3.3 and Figure 3.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch.func import functional_call, jvp, vjp

from ..errors import DipkitError

__all__ = ["JacobianOperator", "JacobianSpectrum", "jacobian_svd", "lanczos_svd", "network_at_init",
           "quiet_forward_ad", "randomized_svd"]


def quiet_forward_ad() -> None:
    """Load torch's forward-AD decompositions now, silencing the ``torch.jit.script`` FutureWarning
    that torch 2.14 emits when it loads them on the first JVP (torch's own code, nothing to act on)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            import torch._decomp.decompositions_for_jvp  # noqa: F401
        except ImportError:  # a torch without it: nothing to load
            pass


class JacobianOperator:
    r"""The matrix-free map :math:`v \mapsto J v` (or :math:`A J v`) and its adjoint at the network's
    current parameters (θ0 when called at initialisation).

    Vectors are flat: ``v`` of length :math:`p` (the trainable parameters, in ``named_parameters``
    order), ``u`` of length :math:`n` (the flattened output, or measurement with ``physics``).

    :param net: the network (its trainable parameters are the variables; buffers stay as they are).
    :param z: the network input ``[1, C, H, W]``.
    :param physics: optional forward operator ``A`` (``physics.A``, ``physics.A_adjoint``).
    """

    def __init__(self, net: torch.nn.Module, z: torch.Tensor, physics=None):
        quiet_forward_ad()
        self.net, self.z, self.physics = net, z, physics
        self.names = [n for n, p in net.named_parameters() if p.requires_grad]
        if not self.names:
            raise DipkitError("the network has no trainable parameters")
        named = dict(net.named_parameters())
        self.theta0 = {n: named[n].detach() for n in self.names}
        self.shapes = [self.theta0[n].shape for n in self.names]
        self.sizes = [self.theta0[n].numel() for n in self.names]
        self.dtype = next(iter(self.theta0.values())).dtype
        self.device = z.device
        out, self._vjp = vjp(self._f, self.theta0)
        #: :math:`f_{\theta_0}(z)`
        self.output0 = out.detach()
        self.out_shape = tuple(out.shape)
        meas = self.output0 if physics is None else physics.A(self.output0)
        self.meas_shape = tuple(meas.shape)
        self.n = meas.numel()
        self.p = sum(self.sizes)

    def _f(self, params):
        return functional_call(self.net, params, (self.z,))

    def unflatten(self, v: torch.Tensor) -> dict:
        v = v.to(self.dtype)
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(v, self.sizes), self.shapes)}

    def flatten(self, tensors) -> torch.Tensor:
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def jvp_image(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`J v` as an image ``[1, C, H, W]`` (without the operator)."""
        _, out = jvp(self._f, (self.theta0,), (self.unflatten(v),))
        return out

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`J v` (or :math:`A J v`), flat, in the dtype of ``v``."""
        out = self.jvp_image(v)
        if self.physics is not None:
            out = self.physics.A(out)
        return out.reshape(-1).to(v.dtype)

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        r""":math:`J^\top u` (or :math:`J^\top A^\top u`), flat, in the dtype of ``u``."""
        w = u.to(self.dtype).view(self.meas_shape)
        if self.physics is not None:
            w = self.physics.A_adjoint(w).reshape(self.out_shape)
        (g,) = self._vjp(w)
        return self.flatten(g).to(u.dtype)


@dataclass
class JacobianSpectrum:
    """Top-``k`` singular triplets of ``J`` (or ``A J``) at initialisation.

    :ivar values: singular values σ_1 ≥ … ≥ σ_k (the NTK eigenvalues are σ²), ``[k]``.
    :ivar left: left singular vectors, ``[k, *shape]`` (image shape; measurement shape with ``A``).
    :ivar right: right singular vectors in parameter space, ``[k, p]``.
    :ivar images: the image-space directions: ``left`` for ``J``; :math:`J v_i/\\|J v_i\\|` for ``A J``.
    :ivar residuals: per value, Lanczos' :math:`\\|J^\\top u_i - σ_i v_i\\|`, or the randomised SVD's
        :math:`\\|J v_i - σ_i u_i\\|` (the other relation holds exactly in each case).
    :ivar output0: the initial output :math:`f_{θ_0}(z)` ``[C, H, W]``.
    """

    values: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    images: torch.Tensor
    residuals: torch.Tensor
    output0: torch.Tensor
    with_operator: bool = False
    info: dict = field(default_factory=dict)


def _orth(x: torch.Tensor, basis: list[torch.Tensor]) -> torch.Tensor:
    """Full reorthogonalisation of ``x`` against ``basis`` (twice: classical Gram–Schmidt, repeated)."""
    if basis:
        q = torch.stack(basis, dim=1)
        for _ in range(2):
            x = x - q @ (q.T @ x)
    return x


def _fix_signs(left: torch.Tensor, right: torch.Tensor):
    idx = left.abs().argmax(dim=1)
    s = torch.sign(left.gather(1, idx[:, None]))
    s[s == 0] = 1
    return left * s, right * s


def lanczos_svd(op, k: int, *, iters: int | None = None, generator: torch.Generator | None = None,
                dtype=torch.float64):
    r"""Top-``k`` singular triplets of the linear map ``op`` (``op.matvec``, ``op.rmatvec``, ``op.n``,
    ``op.p``, ``op.device``) by Golub–Kahan–Lanczos bidiagonalisation with full reorthogonalisation.

    Returns ``(values [k], left [k, n], right [k, p], residuals [k], steps)``; fewer than ``k`` when the
    Krylov space is exhausted (the rank of ``op`` is below ``k``).
    """
    n, p, dev = op.n, op.p, op.device
    m = min(n, p, int(iters) if iters else max(3 * k, k + 20))
    if m < 1:
        raise DipkitError("the Jacobian is empty")
    v = torch.randn(p, generator=generator, dtype=dtype).to(dev)   # drawn on the CPU: the same on every device
    v = v / v.norm()
    us, vs, alphas, betas = [], [v], [], []
    u_prev, beta = None, None
    scale = None
    for j in range(m):
        u = op.matvec(vs[-1])
        if u_prev is not None:
            u = u - beta * u_prev
        u = _orth(u, us)
        alpha = u.norm()
        if scale is None:
            scale = float(alpha)
        if float(alpha) <= 1e-12 * max(scale, 1e-300):
            break
        u = u / alpha
        us.append(u)
        alphas.append(alpha)
        w = op.rmatvec(u) - alpha * vs[-1]
        w = _orth(w, vs)
        beta = w.norm()
        betas.append(beta)
        u_prev = u
        if float(beta) <= 1e-12 * max(scale, 1e-300) or j + 1 == m:
            break
        vs.append(w / beta)
    steps = len(alphas)
    if steps == 0:
        z = torch.zeros(0, dtype=dtype, device=dev)
        return z, torch.zeros(0, n, dtype=dtype, device=dev), torch.zeros(0, p, dtype=dtype, device=dev), z, 0
    a = torch.stack(alphas)
    b = torch.stack(betas[:steps])
    B = torch.diag(a)
    if steps > 1:
        B = B + torch.diag(b[:steps - 1], 1)
    P, S, Qt = torch.linalg.svd(B)
    kk = min(k, steps)
    U = torch.stack(us, 1) @ P[:, :kk]
    V = torch.stack(vs[:steps], 1) @ Qt.T[:, :kk]
    res = (b[steps - 1] * P[steps - 1, :kk]).abs()
    left, right = _fix_signs(U.T.contiguous(), V.T.contiguous())
    return S[:kk], left, right, res, steps


def randomized_svd(op, k: int, *, oversample: int = 10, power_iters: int = 2,
                   generator: torch.Generator | None = None, dtype=torch.float64):
    r"""Top-``k`` singular triplets of ``op`` by randomised subspace iteration (Halko et al. 2011):
    :math:`Y = (J J^\top)^q J \Omega`, orthonormalised after every product, :math:`B = Q^\top J`,
    :math:`B = \hat U \Sigma V^\top`, :math:`U = Q \hat U`. Returns ``(values, left, right, residuals,
    products)`` like :func:`lanczos_svd`; the residuals :math:`\|J v_i - \sigma_i u_i\|` cost ``k`` more JVPs."""
    n, p, dev = op.n, op.p, op.device
    ell = min(n, p, int(k) + int(oversample))
    omega = torch.randn(p, ell, generator=generator, dtype=dtype).to(dev)

    def jmat(x):
        return torch.stack([op.matvec(x[:, i]) for i in range(x.shape[1])], 1)

    def jtmat(x):
        return torch.stack([op.rmatvec(x[:, i]) for i in range(x.shape[1])], 1)

    q, _ = torch.linalg.qr(jmat(omega))
    for _ in range(int(power_iters)):
        w, _ = torch.linalg.qr(jtmat(q))
        q, _ = torch.linalg.qr(jmat(w))
    bt = jtmat(q)                       # B^T = J^T Q, [p, ell]
    V, S, Uht = torch.linalg.svd(bt, full_matrices=False)
    kk = min(k, ell)
    U = q @ Uht.T[:, :kk]
    V = V[:, :kk]
    left, right = _fix_signs(U.T.contiguous(), V.T.contiguous())
    # J^T u_i = σ_i v_i holds by construction; the error is in J v_i = σ_i u_i
    res = torch.stack([(op.matvec(right[i]) - S[i] * left[i]).norm() for i in range(kk)])
    return S[:kk], left, right, res, ell * (2 + 2 * int(power_iters))


def network_at_init(problem, cfg, device="cpu"):
    """The network and input of a run of ``cfg`` (a :class:`~dipkit.run.config.RunConfig`: ``net``, ``input``,
    ``seed``) on ``problem``, at initialisation, built exactly as ``dipkit reconstruct`` builds them
    (:func:`dipkit.run.runner.build_state`). Returns ``(net, z, resolved_cfg)``; ``problem`` is moved to
    ``device``."""
    from ..run.runner import build_state, resolve_config

    method = cfg.validate()
    if not method.uses_network:
        raise DipkitError(f"method {cfg.method!r} has no network to analyse")
    device = torch.device(device)
    problem = problem.to(device)
    resolved = resolve_config(cfg, method, problem)
    resolved.iterations, resolved.ensemble = 1, 1
    state = build_state(method, problem, resolved, device)
    return state.net, state.z, resolved


def jacobian_svd(net: torch.nn.Module, z: torch.Tensor, k: int = 16, *, physics=None, method: str = "lanczos",
                 iters: int | None = None, oversample: int = 10, power_iters: int = 2, seed: int = 0,
                 ) -> JacobianSpectrum:
    r"""Top-``k`` singular values and vectors of :math:`J = \partial f_\theta(z)/\partial\theta` (or of
    :math:`AJ` with ``physics``) at the network's current parameters, matrix-free (module docs).

    :param net: the network at initialisation (its parameters are not changed).
    :param z: its input, ``[1, C, H, W]`` (one sample).
    :param k: number of singular triplets.
    :param physics: the forward operator for the spectrum of :math:`AJ`.
    :param method: ``"lanczos"`` (default) or ``"randomized"``.
    :param iters: Lanczos steps (default :math:`\max(3k, k + 20)`).
    :param oversample: extra probes of the randomised SVD; ``power_iters``: its power steps.
    :param seed: seed of the random start vector(s).
    """
    if isinstance(k, bool) or int(k) != k or int(k) < 1:
        raise DipkitError(f"k must be a positive integer, got {k!r}")
    if method not in ("lanczos", "randomized"):
        raise DipkitError(f"unknown method {method!r} for the Jacobian SVD; valid: lanczos, randomized")
    if z.dim() != 4 or z.shape[0] != 1:
        raise DipkitError(f"the Jacobian analysis takes one input [1, C, H, W], got {tuple(z.shape)}")
    t0 = time.perf_counter()
    op = JacobianOperator(net, z, physics)
    gen = torch.Generator().manual_seed(int(seed))
    if method == "lanczos":
        values, left, right, res, steps = lanczos_svd(op, int(k), iters=iters, generator=gen)
    else:
        values, left, right, res, steps = randomized_svd(op, int(k), oversample=oversample,
                                                         power_iters=power_iters, generator=gen)
    kk = values.shape[0]
    if physics is None:
        images = left.reshape(kk, *op.out_shape[1:])
    else:
        imgs = torch.stack([op.jvp_image(right[i]).reshape(-1).to(right.dtype) for i in range(kk)]) if kk else \
            torch.zeros(0, math.prod(op.out_shape), dtype=right.dtype, device=op.device)
        imgs = imgs / imgs.norm(dim=1, keepdim=True).clamp_min(1e-300)
        images = imgs.reshape(kk, *op.out_shape[1:])
    info = {"method": method, "steps": int(steps), "n": op.n, "p": op.p, "k": int(k), "found": int(kk),
            "seconds": round(time.perf_counter() - t0, 3)}
    return JacobianSpectrum(values=values, left=left.reshape(kk, *op.meas_shape[1:]), right=right, images=images,
                            residuals=res, output0=op.output0[0], with_operator=physics is not None, info=info)
