r"""Subspace DIP: optimise k coefficients of a sparse basis of the pre-training trajectory (CT paper §5.2).

Given pre-trained parameters :math:`\theta_0` (``net.weights``, from ``dipkit pretrain``) and the
(sparse) basis :math:`MU \in \mathbb R^{p\times k}` of the mean-centred pre-training trajectory
(:func:`dipkit.nets.subspace.subspace_basis`: randomised SVD, optional leverage-score mask M), the
network's parameters are restricted to the affine subspace (CT paper eq. 39)

.. math:: \theta(\gamma) = \theta_0 + M U \gamma, \qquad
   \hat\gamma \in \operatorname*{argmin}_{\gamma\in\mathbb R^k} L(\gamma)
   = \tfrac12\|A f_{\theta(\gamma)}(z) - y^\delta\|_2^2 ,

::

    Require: θ0 (pre-trained), trajectory θ^(1..K), k, input z = A†y
    U ← top-k left singular vectors of [θ^(i) − θ̄] (randomised SVD);  M ← leverage mask (optional)
    γ ← 0
    for s = 1 … N_max:
        x̃ = f_{θ0 + M U γ}(z)                          (torch.func.functional_call at θ(γ))
        L(γ) = ½‖A x̃ − y^δ‖²
        γ ← Adam step, or one L-BFGS iteration (strong-Wolfe line search), on ∇_γ L
    return f_{θ(γ)}(z)

Only the k coefficients are optimised, so the run cannot leave span(MU) around θ0 (the low
dimension regularises: less fitting of noise), and a quasi-Newton method is practical
(``optimizer="lbfgs"``: :class:`torch.optim.LBFGS`, history ``history``, strong-Wolfe line search;
one L-BFGS iteration per engine step, its line-search evaluations (at most 20) not counted as steps. L-BFGS reads
the loss and gradient norms on the host by its design — the one exception to the engine's no-sync
rule; ``adam`` keeps the loop sync-free).

The basis vectors have unit norm, so γ is in parameter units: Adam's ``lr`` moves θ by about
``lr`` (in ℓ2 norm) per coefficient and step. θ0 is the network's parameters when the run starts
(the loaded weights), the trajectory by default ``<weights stem>.trajectory.pt`` beside
``net.weights`` (``trajectory=PATH`` to choose another). Without weights and trajectory the method
refuses to run. θ0, U, the kept indices and γ live in ``state.aux`` (``subspace/…``), so a run is
checkpointed and resumed with them; after each step the network's parameters are set to θ(γ).

Reference: R. Barbano, J. Antorán, J. Leuschner, J. M. Hernández-Lobato, B. Jin, Ž. Kereta, "Image
Reconstruction via Deep Image Prior Subspaces", TMLR 2024; CT paper (Arridge, Barbano, Denker &
Kereta) §5.2, eq. (39); leverage scores: Drineas, Magdon-Ismail, Mahoney & Woodruff, JMLR 2012.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.func import functional_call

from ..errors import DipkitError
from .base import Method, count, perturb, positive
from .registry import register

__all__ = ["SubspaceDIP"]

_P = "subspace/"
#: most loss evaluations of one L-BFGS line search
_LINE_SEARCH_EVALS = 20


class _EngineLBFGS(torch.optim.LBFGS):
    """:class:`torch.optim.LBFGS` stepped by the engine without a closure: the first evaluation of a
    step reuses the loss and gradient the engine has just computed; line-search evaluations call
    ``evaluate()`` (forward, loss, backward at the trial point)."""

    def __init__(self, params, evaluate, **kwargs):
        super().__init__(params, **kwargs)
        self._evaluate = evaluate
        self.last_loss = None

    def step(self, closure=None):  # noqa: D102
        first = [True]

        def closure_():
            if first[0]:
                first[0] = False
                return self.last_loss
            with torch.enable_grad():
                self.zero_grad(set_to_none=False)
                loss = self._evaluate()
                loss.backward()
            return loss.detach()

        return super().step(closure_)


@register
class SubspaceDIP(Method):
    r"""Subspace DIP: :math:`\min_\gamma \tfrac12\|A f_{\theta_0 + MU\gamma}(z) - y^\delta\|^2` (CT paper eq. 39).

    :param k: subspace dimension (top-k singular vectors; at most K − 1 for K trajectory snapshots).
    :param leverage: fraction :math:`d_\tau/p` of parameters kept by the leverage-score mask M
        (``None``: no mask, the dense basis U).
    :param optimizer: ``"adam"`` (default) or ``"lbfgs"``.
    :param lr: Adam's learning rate on γ (parameter units; default 0.03); for L-BFGS the initial step scale
        of its strong-Wolfe line search (``None``: 1 for L-BFGS, 0.03 for Adam).
    :param history: L-BFGS memory (default 10).
    :param trajectory: the pre-training trajectory file (default: beside ``net.weights``).
    :param ema: optional EMA decay of the output (default ``None``: the last iterate).

    Reference: Barbano, Antorán, Leuschner, Hernández-Lobato, Jin & Kereta, TMLR 2024; CT paper §5.2.
    """

    name = "subspace-dip"
    description = "subspace DIP: θ = θ₀ + M U γ from the pre-training trajectory, Adam or L-BFGS on the k coefficients γ"
    reference = "Barbano, Antorán, Leuschner, Hernández-Lobato, Jin & Kereta, Image Reconstruction via DIP Subspaces, TMLR 2024"
    algorithm = "CT paper eq. (39)"
    #: needs pre-trained weights (net.weights) or an explicit trajectory (checked by RunConfig.validate)
    needs_pretrained: ClassVar[bool] = True
    #: bf16 autocast is not validated for the γ-parametrised network (nor for L-BFGS's line search,
    #: which compares losses of trial points): precision=auto keeps fp32
    bf16_safe = False
    # runs one network (an ensemble is refused in setup) and may use L-BFGS, which couples stacked members
    stack_members = False

    def __init__(self, *, k: int = 16, leverage: float | None = None, optimizer: str = "adam",
                 lr: float | None = None, history: int = 10, trajectory: str | None = None,
                 ema: float | None = None):
        if optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}")
        if lr is None:
            lr = 0.03 if optimizer == "adam" else 1.0
        super().__init__(lr=lr, ema=ema)
        self.lr = positive("lr", lr)
        self.k = count("k", k)
        self.leverage = None if leverage is None else float(leverage)
        if self.leverage is not None and not 0 < self.leverage <= 1:
            raise ValueError(f"leverage must be in (0, 1], got {leverage}")
        self.optimizer = optimizer
        self.schedulable = optimizer == "adam"  # gd / L-BFGS: no Adam rate for a schedule to lower
        # L-BFGS's line search compares the loss at trial points: a random data subset per evaluation
        # (data.subset < 1) would make those comparisons meaningless, so only Adam takes it
        self.stochastic_data = optimizer == "adam"
        self.history = count("history", history)
        self.trajectory = None if trajectory in (None, "") else str(trajectory)

    # ------------------------------------------------------------------ θ(γ)
    def _names(self, state) -> list[str]:
        return [n for n, p in state.net.named_parameters() if p.requires_grad]

    def gamma(self, state) -> torch.Tensor:
        """γ, the optimised coefficients ``[k]`` (the optimiser's tensor; ``state.aux`` is re-pointed to it
        when a rollback or resume replaced the aux tensor)."""
        g = state.aux[_P + "gamma"]
        if state.optimizer is not None:
            live = state.optimizer.param_groups[0]["params"][0]
            if live is not g:
                with torch.no_grad():
                    live.copy_(g)
                state.aux[_P + "gamma"] = g = live
        return g

    def theta(self, state, gamma: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\theta_0 + MU\gamma`, flat ``[p]`` (differentiable in γ)."""
        gamma = self.gamma(state) if gamma is None else gamma
        aux = state.aux
        return aux[_P + "theta0"].index_add(0, aux[_P + "idx"], aux[_P + "U"] @ gamma)

    def _params(self, state, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        params = dict(state.net.named_parameters())
        names = self._names(state)
        chunks = flat.split([params[n].numel() for n in names])
        return {n: c.view_as(params[n]) for n, c in zip(names, chunks)}

    def network_at(self, state, z: torch.Tensor, gamma: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`f_{\theta(\gamma)}(z)` by ``torch.func.functional_call`` under the run's precision."""
        params = self._params(state, self.theta(state, gamma))
        if state.autocast_dtype is None:
            return functional_call(state.net, params, (z,))
        with torch.autocast(device_type=state.device.type, dtype=state.autocast_dtype):
            out = functional_call(state.net, params, (z,))
        return out.to(state.y.dtype)

    # ------------------------------------------------------------------ hooks
    def setup(self, state, resuming: bool = False) -> None:
        from ..nets.subspace import flat_parameters, read_trajectory, subspace_basis, trajectory_path

        if hasattr(state.net, "member_parameters"):
            raise DipkitError("subspace-dip runs one network (use ensemble=1)")
        if resuming and _P + "gamma" in state.aux:
            state.aux[_P + "gamma"].requires_grad_(True)
            return
        path = self.trajectory
        if path is None:
            weights = state.meta.get("net_weights")
            if not weights:
                raise DipkitError("subspace-dip needs a pre-trained network: --set net.weights=W.pt (from "
                                  "'dipkit pretrain'; its trajectory W.trajectory.pt is the basis) or trajectory=PATH")
            path = trajectory_path(weights)
        doc = read_trajectory(path)
        names, shapes, theta0 = flat_parameters(state.net)
        if list(doc["names"]) != names or [list(s) for s in doc["shapes"]] != shapes:
            bad = next((n for n, s in zip(names, shapes) if n not in doc["names"]
                        or list(doc["shapes"][doc["names"].index(n)]) != s), names[0])
            raise DipkitError(f"trajectory {path} does not fit the network (tensor {bad!r}); pre-train with the "
                              "same net.name and options")
        idx, u = subspace_basis(doc["theta"].to(device=state.device, dtype=state.y.dtype), self.k,
                                leverage=self.leverage)
        state.aux[_P + "theta0"] = theta0.clone()
        state.aux[_P + "idx"] = idx
        state.aux[_P + "U"] = u.contiguous()
        state.aux[_P + "gamma"] = torch.zeros(self.k, device=state.device, dtype=state.y.dtype, requires_grad=True)

    def param_groups(self, state) -> list[dict]:
        return [{"params": [state.aux[_P + "gamma"]], "lr": self.lr}]

    def make_optimizer(self, groups) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            from ..core.optim import adam

            return adam(groups)
        # one L-BFGS iteration per engine step; max_eval bounds its line search (torch gives the line
        # search max_eval − 1 evaluations: the default max_iter·5//4 = 1 would leave it none)
        return _EngineLBFGS(groups, self._evaluate, lr=self.lr, max_iter=1, max_eval=1 + _LINE_SEARCH_EVALS,
                            history_size=self.history, line_search_fn="strong_wolfe")

    def forward(self, state) -> torch.Tensor:
        self._state = state
        return self.network_at(state, perturb(state.z, state.z_perturb, state.randn))

    def loss(self, state, x: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().loss(state, x)
        if isinstance(state.optimizer, _EngineLBFGS):
            state.optimizer.last_loss = terms["data"].sum().detach()
        return terms

    def _evaluate(self) -> torch.Tensor:
        """L(γ) at the optimiser's trial point (L-BFGS line search)."""
        state = self._state
        x = self.network_at(state, state.z)
        return super().loss(state, x)["data"].sum()

    def fresh_output(self, state) -> torch.Tensor:
        with torch.no_grad():
            return self.network_at(state, state.z).detach()

    def after_update(self, state) -> None:
        """Keep the network's parameters at θ(γ) (for readers of ``state.net``, checkpoints)."""
        with torch.no_grad():
            new = self._params(state, self.theta(state).detach())
            for n, p in state.net.named_parameters():
                if n in new:
                    p.copy_(new[n])
