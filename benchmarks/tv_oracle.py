"""Oracle-tuned TV for every case of a bench directory (needs the ground truth).

For each ``BENCH/cases/<case>/<instance>/problem.npz``: TV (500 PDHG steps, all data) for α on the
half-decade grid 10⁻⁴ … 10², the PSNR of each, and the best — the classical baseline at its best
possible weight, which no user without a ground truth can choose. Resumable (cases already in OUT
are skipped).

Usage::

    python benchmarks/tv_oracle.py BENCH_DIR OUT.json
    python benchmarks/defaults_table.py BENCH_DIR --tv-oracle OUT.json
"""
import glob
import json
import os
import sys

import torch

from dipkit.run.config import RunConfig
from dipkit.problem import Problem
from dipkit.run import reconstruct

GRID = [1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1, 0.316, 1, 3.16, 10, 31.6, 100]


def main(bench: str, out: str) -> dict:
    torch.set_num_threads(1)
    res = json.load(open(out)) if os.path.exists(out) else {}
    for p in sorted(glob.glob(f"{bench}/cases/*/*/problem.npz")):
        case = p.split(os.sep)[-3]
        if case in res:
            continue
        prob = Problem.load(p)
        rows = {}
        for a in GRID:
            cfg = RunConfig.from_dict({"method": "tv", "params": {"alpha": a}, "device": "cpu"})
            rows[a] = reconstruct(prob, cfg, quiet=True)["psnr"]
        best = max(rows, key=rows.get)
        res[case] = {"alpha": best, "psnr": rows[best], "all": rows}
        print(case, best, f"{rows[best]:.2f}", flush=True)
        with open(out + ".tmp", "w") as f:
            json.dump(res, f, indent=1)
        os.replace(out + ".tmp", out)
    return res


if __name__ == "__main__":
    main(*sys.argv[1:3])
