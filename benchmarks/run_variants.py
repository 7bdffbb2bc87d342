"""Run-length and step-size variants side by side: each problem × variant, one run each.

For every problem file and every variant (a label and ``key=value`` settings, as ``--set`` takes
them) this runs ``dipkit reconstruct`` in-process and reports, per run: the reconstruction's PSNR
(the ground-truth-free pick), the oracle peak and its step, the final iterate's PSNR, the steps run
and why the run stopped, the wall time and the *worst drop* — the largest fall of the PSNR below
its running maximum over the run (how far a late Adam spike threw the iterate). PSNR needs the
problem's ground truth (simulated problems).

Usage::

    python benchmarks/run_variants.py OUT.md P1.npz [P2.npz …] \\
        --variant "fixed-2000=iterations=2000,schedule.kind=constant" \\
        --variant "auto-plateau=" --method dip [--threads 1] [--keep DIR]

A variant is ``LABEL=key=value,key=value`` (an empty setting list: the defaults). The table
names the commit it was made with.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dipkit.run.config import RunConfig, parse_overrides
from dipkit.problem import Problem
from dipkit.run import reconstruct


def worst_drop(psnr) -> float:
    p = np.asarray([v for v in psnr if v is not None and np.isfinite(v)], dtype=float)
    if p.size == 0:
        return float("nan")
    return float(np.max(np.maximum.accumulate(p) - p))


def parse_variant(text: str) -> tuple[str, list[str]]:
    label, _, rest = text.partition("=")
    items = [t for t in rest.split(",") if t.strip()]
    return label.strip(), items


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("problems", nargs="+")
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--method", default="dip")
    ap.add_argument("--set", action="append", default=[], help="settings for every variant")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--keep", help="write the run directories under this folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    rows = []
    for pf in args.problems:
        problem = Problem.load(pf)
        for v in args.variant:
            label, items = parse_variant(v)
            cfg = RunConfig(method=args.method, seed=args.seed, device="cpu")
            for k, val in parse_overrides(args.set + items):
                cfg.set(k, val)
            out = None if not args.keep else Path(args.keep) / Path(pf).stem / label
            t0 = time.perf_counter()
            res = reconstruct(problem, cfg, out, quiet=True)
            wall = time.perf_counter() - t0
            h = res.history
            stop = res.get("stop") or {}
            row = {"problem": Path(pf).stem, "variant": label, "psnr": res["psnr"],
                   "pick_it": (res.get("early_stop") or {}).get("iteration"),
                   "peak": res["peak"]["psnr"], "peak_it": res["peak"]["iteration"],
                   "final": res["final"]["psnr"], "steps": res["iterations"], "stop": stop.get("kind"),
                   "improving": stop.get("still_improving"), "drop": worst_drop(h.get("psnr", [])),
                   "lr_changes": len((res.get("schedule") or {}).get("changes", [])), "wall": wall}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"Made with commit {commit}: `python benchmarks/run_variants.py {' '.join(sys.argv[1:])}`", "",
             "| problem | variant | pick PSNR (it) | peak (it) | peak − pick | final | steps | stop | still improving "
             "| worst drop | lr changes | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['problem']} | {r['variant']} | {r['psnr']:.2f} ({r['pick_it']}) | {r['peak']:.2f} "
                     f"({r['peak_it']}) | {r['peak'] - r['psnr']:.2f} | {r['final']:.2f} | {r['steps']} | {r['stop']} "
                     f"| {r['improving']} | {r['drop']:.2f} | {r['lr_changes']} | {r['wall']:.0f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
