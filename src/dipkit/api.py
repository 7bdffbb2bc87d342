r"""The Python API for any operator: :func:`solve` and :class:`DIPReconstructor`.

:func:`solve` reconstructs one measurement ``y`` with any dipkit method for **any** forward
operator — a deepinv ``Physics``/``LinearPhysics`` or any object with ``A(x)`` and
``A_adjoint(y)`` — with no problem file and no spec, and returns the same
:class:`~dipkit.run.rundir.RunResult` as :func:`dipkit.reconstruct` (optionally writing a run
directory)::

    import deepinv as dinv, dipkit
    physics = dinv.physics.Inpainting((1, 64, 64), mask=0.5)
    result = dipkit.solve(physics(x), physics, method="dip", iterations=2000, lr=1e-3)
    x_hat = result.reconstruction                      # [1, C, H, W], on the operator's device

* **Image shape**: that of ``A_adjoint(y)`` (which must be a real ``[1, C, H, W]`` tensor).
* **Device**: ``device=None`` runs where the operator is (the device of its tensors, else of
  ``y``). dipkit never moves an operator it did not build: asking for another device than the one
  the operator's tensors are on is a :class:`~dipkit.errors.DipkitError`; ``y`` and ``x_true`` are
  moved as needed. (A dipkit operator — one with a registered ``spec`` — is rebuilt on the asked
  device, as for problem files.)
* **Gradients**: the engine enables autograd itself, so ``solve`` works inside ``torch.no_grad()``
  (as ``deepinv.test`` and deepinv's trainers call their models in evaluation).
* **Settings**: ``iterations``, ``seed``, ``early_stop`` (``"wmv"``, ``"val"``, …) as arguments;
  every other keyword is a :class:`~dipkit.run.config.RunConfig` setting or a method hyper-parameter
  (``lr=1e-3``, ``log_every=10``, ``input={"kind": "noise"}``, ``early_stop={"window": 50}`` …);
  ``config=`` takes a whole ``RunConfig`` (or a mapping) to start from.
* **Networks**: ``net={"name": "skip", "channels": 64}`` chooses and sets up a dipkit network preset
  (``dipkit nets``).
* **Your own network**: ``net=module`` uses your ``nn.Module`` as :math:`f_\theta` (a copy: your
  module's weights, as given, are the initialisation and stay untouched). Its input ``z`` follows
  the ``input`` settings: for ``input.kind = noise`` (the default for outside operators) ``z`` has
  ``input.channels`` channels, or — when not set — the ``in_channels`` of the module's first
  convolution (the first sub-module with an ``in_channels`` attribute), else the image's; with
  ``meshgrid`` ``z`` has 2 channels, with ``fbp``/``adjoint`` the image's. The module must map
  ``z`` ``[1, C_z, H, W]`` to the image shape ``[1, C, H, W]``; a mismatch is a one-line error.
  Ensembles need dipkit's own networks.
* **Baselines**: ``fbp`` and ``naive`` fall back to the least-squares solution :math:`A^\dagger y`
  by a fixed number of conjugate-gradient iterations on :math:`A^\top A x = A^\top y`
  (:func:`dipkit.baselines.naive.least_squares`) for outside operators; ``input.kind = fbp``
  calls the operator's own ``A_dagger`` (deepinv's ``LinearPhysics`` has one).

:class:`DIPReconstructor` wraps :func:`solve` as a deepinv ``Reconstructor``
(``model(y, physics)``), usable in ``deepinv.test`` and in the evaluation of deepinv's trainers: each
sample of a batch is reconstructed on its own (DIP fits one network per image) with
``y[i:i+1]`` and the same ``physics`` — so the operator must apply to one sample at a time (no
per-sample operator parameters).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from .errors import DipkitError
from .run.config import RunConfig

__all__ = ["solve", "DIPReconstructor", "as_problem"]


def _registered_spec(physics) -> dict | None:
    """The spec of a dipkit-built operator (a ``spec`` dict with a registered kind), else None."""
    spec = getattr(physics, "spec", None)
    if not isinstance(spec, dict) or not spec.get("kind"):
        return None
    from .physics import PHYSICS_BUILDERS

    return dict(spec) if spec["kind"] in PHYSICS_BUILDERS else None


def as_problem(y: torch.Tensor, physics, *, x_true: torch.Tensor | None = None, device=None):
    """A :class:`~dipkit.problem.Problem` for ``(y, physics)`` on the run's device (module docs)."""
    from .problem import Problem, operator_device, same_device

    if not isinstance(y, torch.Tensor):
        raise DipkitError(f"y must be a torch tensor, got {type(y).__name__}")
    if y.ndim < 2 or y.shape[0] != 1:
        raise DipkitError(f"solve reconstructs one measurement: y must be [1, ...], got {tuple(y.shape)} "
                          "(DIPReconstructor loops over a batch)")
    y = y.detach()
    if x_true is not None:
        x_true = x_true.detach()
    spec = _registered_spec(physics)
    op_dev = None if spec else operator_device(physics)
    if device is None or str(device) == "auto":
        dev = op_dev if op_dev is not None else y.device
    else:
        from .run.resolve import resolve_device

        dev = resolve_device(str(device))
        if op_dev is not None and not same_device(op_dev, dev):
            raise DipkitError(f"the operator is on {op_dev} but device={device!r} was asked; dipkit cannot move an "
                              f"operator it did not build: move it yourself (physics.to(...)) or pass device={str(op_dev)!r}")
    y = y.to(dev)
    x_true = None if x_true is None else x_true.to(device=dev, dtype=y.dtype)
    if spec is not None:
        with torch.no_grad():
            shape = tuple(physics.A_adjoint(y).shape[1:])
        prob = Problem(physics=physics, y=y, spec=spec, x_true=x_true,
                       meta={"task": spec["kind"], "img_shape": list(shape)})
        return prob.to(dev)
    return Problem.external(physics, y, x_true=x_true)


def _config(method: str, iterations, seed, early_stop, device, config, params: dict) -> RunConfig:
    if isinstance(config, RunConfig):
        cfg = copy.deepcopy(config)
    else:
        cfg = RunConfig()
        if config:
            cfg.update(dict(config), source="config")
    if method is not None:
        cfg.method = str(method)
    if iterations is not None:
        cfg.set("iterations", iterations, source="solve")
    if seed is not None:
        cfg.set("seed", seed, source="solve")
    if early_stop is not None:
        cfg.set("early_stop.rule", early_stop, source="solve")
    cfg.update(params, source="solve")
    cfg.device = str(device)
    return cfg


def solve(y: torch.Tensor, physics, method: str = "dip", *, iterations: int | None = None,
          device: str | torch.device | None = None, x_true: torch.Tensor | None = None, net=None,
          seed: int | None = None, early_stop: str | None = None, config: RunConfig | dict | None = None,
          out_dir: str | Path | None = None, overwrite: bool = False, quiet: bool = True, **params: Any):
    """Reconstruct ``y`` (``[1, ...]``) measured by ``physics`` with ``method`` (module docs).

    :param y: the measurement, with a leading batch dimension of 1.
    :param physics: any deepinv ``Physics`` (or object with ``A`` and ``A_adjoint``).
    :param method: a dipkit method name (``dipkit methods``).
    :param iterations: steps (default: the method's).
    :param device: ``None`` (the operator's device), ``"auto"``, ``"cpu"``, ``"cuda"``, …
    :param x_true: optional ground truth (PSNR/SSIM in the result and history).
    :param net: a user's ``nn.Module`` as f_θ, or a mapping of dipkit network settings (module docs).
    :param seed: network initialisation, input noise and per-step noise (default 0).
    :param early_stop: stopping rule(s), e.g. ``"wmv"``, ``"val"``, ``"wmv:record"``.
    :param config: a :class:`RunConfig` or mapping to start from.
    :param out_dir: write a run directory there (refused when non-empty unless ``overwrite``).
    :param quiet: no progress bar (default).
    :param params: RunConfig settings and method hyper-parameters.
    :returns: the :class:`~dipkit.run.rundir.RunResult` (``result.reconstruction``: ``[1, C, H, W]``).
    """
    from .run import reconstruct

    if isinstance(net, dict):
        params = {**params, "net": net}
        net = None
    problem = as_problem(y, physics, x_true=x_true, device=device)
    cfg = _config(method, iterations, seed, early_stop, problem.device, config, params)
    mth = cfg.validate()
    if mth.uses_network:
        from .inputs import resolve_input_kind

        kind = resolve_input_kind(cfg.input.kind, problem)
        if kind == "fbp" and not callable(getattr(problem.physics, "A_dagger", None)):
            raise DipkitError("input.kind=fbp needs an operator with A_dagger; use input.kind=noise or adjoint")
    return reconstruct(problem, cfg, out_dir, quiet=quiet, method=mth, overwrite=overwrite, net=net)


def _reconstructor_base():
    from deepinv.models import Reconstructor

    return Reconstructor


class DIPReconstructor(_reconstructor_base()):
    """A deepinv ``Reconstructor`` running a dipkit method: ``x_hat = model(y, physics)`` (module docs).

    ``DIPReconstructor("dip", iterations=500, lr=1e-3)`` takes :func:`solve`'s keywords (the
    settings are checked here, once). ``forward`` reconstructs each sample of the batch with
    :func:`solve` and returns ``[B, C, H, W]``; the last batch's :class:`RunResult` s are in
    :attr:`results`. Keywords that deepinv passes to models (``x_gt``, ``compute_metrics``,
    ``update_parameters``) are accepted; ``x_gt`` is used as the ground truth of the results'
    metrics.
    """

    def __init__(self, method: str = "dip", **params: Any):
        super().__init__()
        self.method, self.params = method, dict(params)
        probe = {k: v for k, v in params.items() if k not in ("device", "x_true", "out_dir", "overwrite", "quiet")}
        if not isinstance(probe.get("net", {}), dict):
            probe.pop("net")
        _config(method, probe.pop("iterations", None), probe.pop("seed", None), probe.pop("early_stop", None),
                "cpu", probe.pop("config", None), probe).validate()
        if params.get("out_dir") is not None:
            raise DipkitError("DIPReconstructor does not write run directories (use dipkit.solve)")
        self.results: list = []

    def forward(self, y: torch.Tensor, physics, x_gt: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        self.results = []
        outs = []
        for i in range(y.shape[0]):
            gt = None if x_gt is None else x_gt[i:i + 1]
            res = solve(y[i:i + 1], physics, self.method, **{**self.params, "x_true": gt})
            self.results.append(res)
            outs.append(res.reconstruction.detach())
        x = torch.cat(outs)
        if kwargs.get("compute_metrics"):
            return x, {}
        return x

    def extra_repr(self) -> str:
        return f"method={self.method!r}, " + ", ".join(f"{k}={v!r}" for k, v in self.params.items())
