"""What the CLI verbs share: the argument parser class, argument types and the run summary line.

Nothing here imports torch or deepinv, so ``dipkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, NamedTuple

from ..errors import DipkitError

__all__ = ["Verb", "Parser", "positive_int", "nonneg_float", "summary", "DEVICES"]


class Verb(NamedTuple):
    """A verb of the command line."""

    help: str
    run: Callable[[argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    description: str | None = None

#: choices of ``--device``
DEVICES = ["auto", "cpu", "cuda"]


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and raise DipkitError (exit 2)."""

    def error(self, message):  # noqa: D401
        raise DipkitError(f"{self.prog}: {message}")


def positive_int(text: str) -> int:
    """An argparse type: an integer > 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    """An argparse type: a finite number ≥ 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text}")
    return v


def summary(res) -> str:
    """One line about a finished run (its ``metrics.json`` dict)."""
    parts = [f"{res['method']}:"]
    if res.get("psnr") is not None:
        parts.append(f"PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.3f}")
    if res.get("peak", {}).get("psnr") is not None and res.get("iterations"):
        parts.append(f"(peak {res['peak']['psnr']:.2f} dB @ {res['peak']['iteration']})")
    es = res.get("early_stop")
    if es and es.get("iteration") is not None:
        parts.append(f"early stop @ {es['iteration']}")
    if res.get("iterations_per_s"):
        parts.append(f"{res['iterations']} it, {res['iterations_per_s']:.1f} it/s")
    dc = res.get("data_consistency")
    if dc and dc.get("applied"):
        before = dc.get("psnr_before")
        how = "noiseless" if dc.get("noise_sigma") == 0.0 else (
            "asked for" if dc.get("mode") == "on" else f"step {dc.get('step', 1.0):.2f}, noise σ {dc.get('noise_sigma'):.3g}")
        parts.append(f"; projected onto the data ({how})" + ("" if before is None else f", {before:.2f} dB before"))
    return " ".join(parts)
