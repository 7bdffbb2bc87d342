"""Would a cross-validated stacking guard choose better than the in-sample one? (issue 16)

`--method auto` returns the stack (convex weights of least held-out misfit) only when its held-out
misfit beats the chosen candidate's by more than `auto.se` paired standard errors. The weights are
fitted on the entries that score them, so that z is optimistic. This script recomputes, from saved
`auto` run directories, the guard's z in-sample and with the weights cross-validated over K folds of
the held-out entries (each fold scored with weights fitted on the others; Breiman 1996 fitted the
level-one weights on cross-validated predictions), next to the PSNRs (ground truth only scores).

The candidates' fit-view images are their `candidates/<label>/reconstruction.npy` (network
candidates: the `val` pick fitted without the held-out entries); TV's fit-view solve is recomputed
(`--method tv` with the `val:record` rule, the run's default split). Runs made with a non-default
`validation.*` setting are not supported.

Usage::

    python benchmarks/stack_guard_cv.py AUTO_DIR=PROBLEM.npz ...
"""
from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import torch

from dipkit.metrics import psnr
from dipkit.problem import Problem
from dipkit.run import reconstruct
from dipkit.run.combine import stack_weights
from dipkit.run.config import RunConfig
from dipkit.run.resolve import make_split


def _z(d: torch.Tensor) -> float:
    d = d.double()
    sd = float(d.std())
    return float(d.mean()) / (sd / math.sqrt(d.numel())) if sd > 0 else 0.0


def _weights(R: torch.Tensor) -> torch.Tensor:
    w = stack_weights(R)  # as auto does: weights under 1 % dropped, the rest renormalised
    w = torch.where(w < 0.01, torch.zeros_like(w), w)
    return w / w.sum()


def main(pairs: list[str]) -> None:
    torch.set_num_threads(1)
    print("| case | chosen | held-out entries | TV | chosen (pick) | stack (fit view) | returned | z in-sample "
          "| z 2-fold CV | z 5-fold CV |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for pair in pairs:
        d, pf = pair.split("=")
        prob = Problem.load(pf)
        m = json.load(open(f"{d}/metrics.json"))
        split = make_split(prob, RunConfig(method="tv"))
        rows = [r for r in csv.DictReader(open(f"{d}/selection.csv")) if r["misfit"] not in ("", None)]
        rows.sort(key=lambda r: float(r["misfit"]))
        chosen = m["auto"]["chosen"]
        fit, ret = {}, {}
        for r in rows:
            lab = r["candidate"]
            x = torch.from_numpy(np.load(f"{d}/candidates/{lab}/reconstruction.npy")).float().reshape(prob.x_true.shape)
            ret[lab] = x
            if r["method"] == "tv":
                c = RunConfig(method="tv", device="cpu")
                c.early_stop.rule = "val:record"
                fit[lab] = reconstruct(prob, c, quiet=True).estimates["final"].reshape(x.shape)
            else:
                fit[lab] = x
        labs = [r["candidate"] for r in rows if bool(torch.isfinite(fit[r["candidate"]]).all())]
        with torch.no_grad():
            R = torch.cat([split.residual(fit[lab]) for lab in labs]).double()
        R = R[:, (R != 0).any(0)]  # the held-out entries
        rc = R[labs.index(chosen)]
        zs = [_z(((_weights(R)[:, None] * R).sum(0)) ** 2 - rc ** 2)]
        g = torch.Generator().manual_seed(0)
        for k in (2, 5):
            folds = torch.randperm(R.shape[1], generator=g) % k
            cv = torch.empty(R.shape[1], dtype=torch.float64)
            for f in range(k):
                cv[folds == f] = (_weights(R[:, folds != f])[:, None] * R[:, folds == f]).sum(0)
            zs.append(_z(cv ** 2 - rc ** 2))
        w = _weights(R)
        xs = sum(float(wi) * fit[lab] for wi, lab in zip(w, labs))

        def p(x):
            return float(psnr(x.reshape(prob.x_true.shape), prob.x_true))

        tv = f"{p(ret['tv']):.2f}" if "tv" in ret else "—"
        print(f"| {d} | {chosen} | {R.shape[1]} | {tv} | {p(fit[chosen]):.2f} | {p(xs):.2f} | {m['psnr']:.2f} | "
              + " | ".join(f"{z:+.2f}" for z in zs) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
