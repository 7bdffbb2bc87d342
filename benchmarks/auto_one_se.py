"""Would the one-standard-error rule have changed `--method auto`'s choice? Re-rank saved auto runs.

For every ``auto`` run of a ``dipkit bench`` directory (``cases/<task>/<case>/auto/seed0``), this
rebuilds the run's validation split (the same seed and settings as ``auto``: :func:`make_split`),
re-solves the classical baseline (``tv``, α = auto) on the fit view exactly as ``auto`` does, and for
every network candidate's saved reconstruction (its val pick, ``candidates/<label>/reconstruction.npy``)
computes the paired difference of the held-out entry scores against TV's fit-view image
(:meth:`ValidationSplit.entry_scores`) and its z = mean / standard error — the quantity
:func:`dipkit.run.auto.one_se_choice` tests. It then reports which candidate ``auto`` returns for
``--set auto.se=S`` for each S of ``--se`` (S = 0: the least misfit), with its PSNR (the bench knows
the ground truth) beside TV's (refit on all data, the ``tv`` row auto returns).

Run::

    python benchmarks/auto_one_se.py BENCH_DIR --se 0 1 2 --out auto-one-se.md

Cost: one TV solve per case (seconds at 128²); the network candidates are not re-run.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import glob
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _provenance import git_commit  # noqa: E402


def rerank(case_dir: Path) -> dict:
    from dipkit.problem import Problem
    from dipkit.run.config import RunConfig
    from dipkit.run.portfolio import candidate_config
    from dipkit.run.resolve import make_split, resolve_config, step_budget
    from dipkit.run.runner import _advance, _build_run
    from dipkit.stopping import parse_rules

    prob = Problem.load(case_dir.parent.parent / "problem.npz")
    cfg = RunConfig()
    cfg.method = "auto"
    split = make_split(prob, cfg)
    c = candidate_config(cfg, "tv")
    m = c.validate()
    res = resolve_config(c, m, prob)
    run = _build_run(m, prob, res, torch.device("cpu"), split=split, rules=parse_rules(res.early_stop.rule),
                     mask=None, quiet=True, console=None)
    _advance(m, run, step_budget(res, m)[0])
    base_x = run.state.estimate
    base = split.entry_scores(base_x).double()
    rows = {r["candidate"]: r for r in csv.DictReader(open(case_dir / "selection.csv"))}
    out = {"task": case_dir.parts[-4], "tv_psnr": float(rows["tv"]["psnr"]),
           "tv_misfit": float(split.misfit(base_x).mean()), "entries": base.numel(), "networks": []}
    for label, row in rows.items():
        f = case_dir / "candidates" / label / "reconstruction.npy"
        if label == "tv" or not f.exists() or not row.get("misfit"):
            continue
        x = torch.from_numpy(np.load(f)).to(base_x.dtype).reshape(base_x.shape)
        d = split.entry_scores(x).double() - base
        z = float(d.mean() / (d.std() / math.sqrt(d.numel())))
        out["networks"].append({"label": label, "misfit": float(split.misfit(x).mean()), "z": z,
                                "psnr": float(row["psnr"])})
    return out


def choice(rec: dict, se: float) -> tuple[str, float]:
    nets = sorted(rec["networks"], key=lambda n: n["misfit"])
    if not nets or nets[0]["misfit"] >= rec["tv_misfit"]:
        return "tv", rec["tv_psnr"]
    best = nets[0]
    if se > 0 and best["z"] > -se:
        return "tv", rec["tv_psnr"]
    return best["label"], best["psnr"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path)
    ap.add_argument("--se", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    recs = [rerank(Path(d)) for d in sorted(glob.glob(str(args.bench / "cases" / "*" / "*" / "auto" / "seed0")))]
    lines = [f"Made by `python benchmarks/auto_one_se.py {' '.join(sys.argv[1:])}` at commit {git_commit()}, "
             f"{datetime.date.today()}.", "",
             "## Network candidates against TV's fit-view image (paired z over held-out entries)", "",
             "| task | entries | TV PSNR | candidate | misfit − TV's | z | PSNR | PSNR − TV |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in recs:
        for n in sorted(r["networks"], key=lambda n: n["z"]):
            lines.append(f"| {r['task']} | {r['entries']} | {r['tv_psnr']:.2f} | {n['label']} | "
                         f"{n['misfit'] - r['tv_misfit']:+.3g} | {n['z']:.2f} | {n['psnr']:.2f} | "
                         f"{n['psnr'] - r['tv_psnr']:+.2f} |")
    lines += ["", "## What auto returns for each `auto.se`", "",
              "| task | TV PSNR | " + " | ".join(f"se={s:g}" for s in args.se) + " |",
              "|---|---:|" + "---|" * len(args.se)]
    wins = {s: 0 for s in args.se}
    for r in recs:
        cells = []
        for s in args.se:
            lab, p = choice(r, s)
            wins[s] += p >= r["tv_psnr"] - 1e-9
            cells.append(f"{lab} {p:.2f} ({p - r['tv_psnr']:+.2f})")
        lines.append(f"| {r['task']} | {r['tv_psnr']:.2f} | " + " | ".join(cells) + " |")
    lines.append("| **≥ TV** | | " + " | ".join(f"{wins[s]}/{len(recs)}" for s in args.se) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
