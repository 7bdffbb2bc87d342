"""The run's precision: ``auto`` (default), ``fp32`` or ``bf16`` (autocast of the network).

``bf16`` runs the network :math:`f_\\theta` under ``torch.autocast(dtype=torch.bfloat16)``
(:meth:`dipkit.engine.State.network`); the operator, the loss terms, the optimiser state and every
observed metric stay in fp32. ``auto`` resolves, once per run, to

* ``bf16`` where the hardware does bf16 matrix products natively — a CUDA GPU for which
  ``torch.cuda.is_bf16_supported()`` holds, or a CPU with the ``avx512_bf16`` or ``amx_bf16``
  instructions (``/proc/cpuinfo`` flags; ``torch.backends.cpu.get_cpu_capability()`` reports
  ``AVX512``/``AMX`` levels but not bf16 itself) — and the method has not opted out
  (:attr:`dipkit.methods.base.Method.bf16_safe`);
* ``fp32`` everywhere else (without native support bf16 is emulated, and is not the default).

The resolved value is what ``config.yaml`` records and ``metrics.json`` reports as ``precision``.
"""

from __future__ import annotations

import functools

import torch

from .errors import DipkitError

__all__ = ["PRECISIONS", "check_precision", "native_bf16", "resolve_precision", "cpu_flags"]

PRECISIONS = ("auto", "fp32", "bf16")

#: CPU instruction-set flags (``/proc/cpuinfo``) that make bf16 matrix products native
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check_precision(value) -> str:
    """``value`` if it is one of :data:`PRECISIONS`, else a one-line :class:`DipkitError`."""
    if value not in PRECISIONS:
        raise DipkitError(f"precision must be auto, fp32 or bf16, got {value!r}")
    return value


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags") or line.startswith("Features"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 matrix products natively (see the module docs)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        except (RuntimeError, AssertionError):
            return False
    if device.type == "cpu":
        return any(f in cpu_flags() for f in CPU_BF16_FLAGS)
    return False


def resolve_precision(precision: str, device: torch.device | str, method=None) -> str:
    """``fp32`` or ``bf16``: ``precision`` with ``auto`` resolved for ``device`` and ``method``
    (a method with ``bf16_safe = False`` gets ``fp32`` under ``auto``; an explicit ``bf16`` is kept)."""
    check_precision(precision)
    if precision != "auto":
        return precision
    if method is not None and (not getattr(method, "uses_network", True) or not getattr(method, "bf16_safe", True)):
        return "fp32"
    return "bf16" if native_bf16(device) else "fp32"
