"""What the data-consistency step does to saved reconstructions (issue 16; `dipkit.run.consistency`).

For each `RUN_DIR=PROBLEM.npz`: the run's image before any projection (`estimates.npz` `early_stop`,
else `final`; an `auto` run directory: its `reconstruction.npy`, which is unprojected when the run's
`metrics.json` has no applied `data_consistency`), then the PSNR of

* the full projection onto {x : A x = y} (CGLS, as `data_consistency: on`),
* the shrunk step x + λ*·v, λ* = 1 − N/‖v‖², without the noise-share bar,
* what `data_consistency: shrink` returns (the shrunk step only when the noise share ≤ ½; `--method
  auto`'s default; a single method's default `auto` leaves noisy data alone),

with the estimated noise share N/‖v‖². The ground truth only scores.

Usage::

    python benchmarks/consistency_check.py RUN_DIR=PROBLEM.npz ...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from dipkit.metrics import psnr
from dipkit.problem import Problem
from dipkit.run.consistency import data_consistency, noise_share, project_onto_data


def _image(d: Path, problem) -> torch.Tensor:
    m = json.loads((d / "metrics.json").read_text())
    if m.get("method") == "auto":
        if (m.get("data_consistency") or {}).get("applied"):
            raise SystemExit(f"{d}: its reconstruction is already projected")
        x = np.load(d / "reconstruction.npy")
    else:
        e = np.load(d / "estimates.npz")
        x = e["early_stop" if "early_stop" in e.files else "final"]
    return torch.from_numpy(x)[None].reshape(problem.x_true.shape).to(problem.y.dtype)


def main(pairs: list[str]) -> None:
    torch.set_num_threads(1)
    print("| run | noise σ | before | full projection | shrunk step λ* (no bar) | noise share | `shrink` returns |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for pair in pairs:
        d, pf = pair.split("=")
        p = Problem.load(pf)
        x = _image(Path(d), p)
        full, _ = project_onto_data(p.physics, p.y, x)
        sigma = p.noise_sigma
        share = noise_share(p.physics, p.y, x, full - x, sigma) if sigma else 0.0
        lam = min(1.0, max(0.0, 1.0 - share))
        out, rec = data_consistency(p, x, "shrink")

        def q(z):
            return f"{float(psnr(z.reshape(p.x_true.shape), p.x_true)):.2f}"

        print(f"| {d} | {sigma:.3g} | {q(x)} | {q(full)} | {q(x + lam * (full - x))} (λ {lam:.2f}) | {share:.2f} | "
              f"{q(out)}{'' if rec and rec['applied'] else ' (not applied)'} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
