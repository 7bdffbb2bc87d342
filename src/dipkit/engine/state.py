"""The state of one run of the engine.

Everything a method or a callback reads or changes lives here, so a run can be inspected,
checkpointed (:meth:`State.state_dict`) and resumed. Tensors keep a leading batch dimension ``B``
(independent reconstructions); loss terms are per-sample tensors of shape ``[B]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["State", "clone_tree", "to_device_tree"]


def clone_tree(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts, lists, tuples) with every tensor cloned (detached), so that
    later in-place updates of the originals do not reach the copy (snapshots, checkpoints)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone_tree(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clone_tree(v) for v in obj)
    return obj


def to_device_tree(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor moved to ``device`` (for state loaded from a checkpoint on the CPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device_tree(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device_tree(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_device_tree(v, device) for v in obj)
    return obj


@dataclass
class State:
    """Mutable state of a run.

    :ivar physics: the forward operator ``A``.
    :ivar y: the measurement ``[B, ...]``.
    :ivar net: the network ``f_θ`` (``None`` for network-free methods).
    :ivar z: the network input ``[B, C_z, H, W]`` (a leaf tensor; methods that update ``z`` make
        it require grad, e.g. Self-Guided DIP, or replace it, e.g. aSeqDIP).
    :ivar aux: auxiliary variables of splitting methods (``u``, ``w`` ...), by the papers' names.
    :ivar x: the last network output ``f_θ(z)`` (detached).
    :ivar estimate: the method's current reconstruction (last iterate, EMA, ``z`` ...).
    :ivar loss: per-sample total loss ``[B]`` of the last step (detached).
    :ivar terms: per-sample loss terms ``{name: [B]}`` of the last step (detached).
    :ivar step: gradient steps taken so far (the only step counter).
    :ivar outer_step: outer updates done so far.
    :ivar max_steps: the step budget.
    :ivar stop: set by a callback to end the run; ``stop_reason`` says why and ``stop_kind`` names
        the cause (``patience`` — a stopping rule's window passed without a new selection —,
        ``time_limit``, ``rule``, ``members``).
    :ivar z_perturb: std ``σ_p`` of fresh noise added to ``z`` every step (0: none).
    :ivar autocast_dtype: e.g. ``torch.bfloat16`` to run the network under autocast (an engine
        setting, not method code); ``None`` for full precision.
    :ivar generator: the run's seeded generator for per-step randomness (input perturbation,
        Langevin noise); on the run's device. Draw through :meth:`randn` / :meth:`rand`.
    :ivar generators: for an ensemble (independent runs as one batch), one generator per member:
        :meth:`randn` and :meth:`rand` then draw sample ``b``'s numbers from member ``b``'s
        generator, exactly as member ``b``'s own run would.
    :ivar meta: the problem's metadata (``task``, ``noise_sigma`` when known, ``img_shape`` …), so
        that methods can use what is known about the measurement (e.g. the noise level).
    :ivar metrics: observed per-sample values ``{name: [B]}`` that callbacks compute on the device
        (e.g. the held-out misfit ``val``); the history recorder samples them with the loss terms.
    :ivar report_every: for methods without an optimiser (classical baselines) the engine
        evaluates the loss terms — which are only observed, not differentiated — every
        ``report_every`` steps and at the last step (the run's history sampling interval).
    :ivar data_term: the stochastic data term of ``data.subset < 1``
        (:class:`dipkit.physics.subsets.SubsetDataTerm`: each call draws a random subset of the
        measurement blocks and returns the unbiasedly scaled term), or ``None`` for the full data
        term; methods form their data term through :func:`dipkit.methods.base.data_term`.
    :ivar pending_optimizer: an optimiser state loaded by :meth:`load_state_dict` before the
        optimiser existed; :func:`dipkit.engine.run` applies it once it has built the optimiser.
    """

    physics: Any
    y: torch.Tensor
    max_steps: int
    generator: torch.Generator
    net: torch.nn.Module | None = None
    z: torch.Tensor | None = None
    optimizer: torch.optim.Optimizer | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    x: torch.Tensor | None = None
    estimate: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    step: int = 0
    outer_step: int = 0
    stop: bool = False
    stop_reason: str | None = None
    stop_kind: str | None = None
    z_perturb: float = 0.0
    autocast_dtype: torch.dtype | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    report_every: int = 1
    generators: list[torch.Generator] | None = None
    data_term: Any = None
    pending_optimizer: dict | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.y.device

    def _draw(self, fn, shape, dtype) -> torch.Tensor:
        dtype = dtype or self.y.dtype
        if self.generators is None:
            return fn(tuple(shape), generator=self.generator, device=self.device, dtype=dtype)
        if shape[0] % len(self.generators):
            raise ValueError(f"cannot split a draw of shape {tuple(shape)} among {len(self.generators)} members")
        per = (shape[0] // len(self.generators), *shape[1:])
        return torch.cat([fn(per, generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def randn(self, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Standard normal numbers of ``shape`` (leading dimension: the batch) from the run's generator(s)."""
        return self._draw(torch.randn, shape, dtype)

    def rand(self, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Uniform [0, 1) numbers of ``shape`` (leading dimension: the batch) from the run's generator(s)."""
        return self._draw(torch.rand, shape, dtype)

    def image_like(self) -> torch.Tensor:
        r"""Zeros shaped like the reconstruction ``[B, C, H, W]`` (the shape of :math:`A^\top y`)."""
        with torch.no_grad():
            return torch.zeros_like(self.physics.A_adjoint(self.y))

    def opnorm_sq(self) -> torch.Tensor:
        r"""Per-sample :math:`\|A\|^2` ``[B]`` of the run's operator, estimated once on the device
        (:func:`dipkit.physics.linalg.opnorm_sq`) and cached in ``aux["opnorm_sq"]`` (so it is
        checkpointed with the run)."""
        cached = self.aux.get("opnorm_sq")
        if cached is None:
            from ..physics.linalg import opnorm_sq

            cached = self.aux["opnorm_sq"] = opnorm_sq(self.physics, self.image_like())
        return cached

    def network(self, z: torch.Tensor) -> torch.Tensor:
        """``f_θ(z)`` under the run's precision: autocast to ``autocast_dtype`` when set (an engine
        setting, not method code), the output cast back to the measurement's dtype."""
        if self.autocast_dtype is None:
            return self.net(z)
        with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
            out = self.net(z)
        return out.to(self.y.dtype)

    def request_stop(self, reason: str, kind: str = "rule") -> None:
        """Ask the engine to stop after the current step (``kind``: see :attr:`stop`)."""
        if not self.stop:
            self.stop, self.stop_reason, self.stop_kind = True, reason, kind

    def state_dict(self) -> dict:
        """Everything needed to resume: network, optimiser, z, aux, estimate, the last loss terms and
        observed metrics, counters, and the random states (the run's generator(s) and torch's global
        generator of the CPU and of the run's CUDA device). Tensors only reference the live ones:
        :func:`clone_tree` the result to keep it while the run goes on."""
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "net": None if self.net is None else self.net.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "z": self.z,
            "z_requires_grad": None if self.z is None else bool(self.z.requires_grad),
            "aux": dict(self.aux),
            "x": self.x,
            "estimate": self.estimate,
            "loss": self.loss,
            "terms": dict(self.terms),
            "metrics": dict(self.metrics),
            "step": self.step,
            "outer_step": self.outer_step,
            "stop": self.stop,
            "stop_reason": self.stop_reason,
            "stop_kind": self.stop_kind,
            "generator": self.generator.get_state(),
            "generators": None if self.generators is None else [g.get_state() for g in self.generators],
            "rng": rng,
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict`'s output (tensors are moved to the run's device; random states
        stay on the CPU, where generators keep them). Without an optimiser yet, its state waits in
        :attr:`pending_optimizer`."""
        dev = self.device

        def mv(v):
            return None if v is None else to_device_tree(v, dev)

        if self.net is not None and sd.get("net") is not None:
            self.net.load_state_dict(sd["net"])
        if sd.get("optimizer") is not None:
            if self.optimizer is not None:
                self.optimizer.load_state_dict(sd["optimizer"])
            else:
                self.pending_optimizer = sd["optimizer"]
        z = sd.get("z")
        if z is not None:
            if self.z is not None and self.z.shape == z.shape:
                with torch.no_grad():
                    self.z.copy_(z)
            else:  # e.g. aSeqDIP, whose z is replaced by the method
                self.z = z.detach().to(device=dev).clone()
                if sd.get("z_requires_grad"):
                    self.z.requires_grad_(True)
        self.aux = dict(mv(sd.get("aux", {})))
        self.x, self.estimate = mv(sd.get("x")), mv(sd.get("estimate"))
        if "loss" in sd:
            self.loss = mv(sd["loss"])
            self.terms = dict(mv(sd.get("terms") or {}))
            self.metrics = dict(mv(sd.get("metrics") or {}))
        self.step, self.outer_step = int(sd["step"]), int(sd["outer_step"])
        self.stop, self.stop_reason, self.stop_kind = bool(sd["stop"]), sd.get("stop_reason"), sd.get("stop_kind")
        self.generator.set_state(sd["generator"].cpu())
        for g, st in zip(self.generators or [], sd.get("generators") or []):
            g.set_state(st.cpu())
        rng = sd.get("rng") or {}
        if rng.get("cpu") is not None:
            torch.set_rng_state(rng["cpu"].cpu())
        if rng.get("cuda") is not None and dev.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), dev)
