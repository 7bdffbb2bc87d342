"""What `--method auto` returns, and what each of its later stages adds (issue 16).

Reads `dipkit reconstruct P --method auto --out DIR` run directories (and, optionally, one default
`dip` run directory per case, for the cost ratio) and prints a markdown table per case:

* **TV** — the `tv` candidate (α auto, solved on all the data);
* **choice** — the candidate the one-standard-error rule chose, as the choice alone would return it
  (a network candidate: its `val` pick, fitted without the held-out entries);
* **choice + refit** — the same candidate, the mean of its pick and its refit on all the data
  (`auto.refit=mean`), and the refit alone (`replace`);
* **stack** — the convex combination of all candidates with the least held-out misfit, with each
  network member as its pick (`auto.refit=none`), as the mean of pick and refit (the default), and
  as its refit alone (`replace`), and with only the chosen candidate as the mean of pick and refit
  (the others as their picks) — computed from the saved images (`reconstruction.npy`,
  `refit.npy`), whether or not the guard let `auto` return it;
* **returned** — what `auto` returned (its `psnr`), and whether the stack passed its guard;
* the stacking weights, network steps, `auto`'s wall time and its ratio to one `dip` run.

The ground truth is used only to score (PSNR), never to choose.

Usage::

    python benchmarks/auto_table.py AUTO_DIR[=DIP_DIR] ... [--out FILE.md]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _psnr(x: np.ndarray, ref: np.ndarray, problem) -> float:
    import torch

    from dipkit.metrics import psnr

    t = torch.from_numpy(np.asarray(x, dtype=np.float32)).reshape(problem.x_true.shape)
    return float(psnr(t, problem.x_true))


def case_row(auto_dir: Path, dip_dir: Path | None) -> dict:
    from dipkit.problem import Problem

    m = json.loads((auto_dir / "metrics.json").read_text())
    a = m["auto"]
    problem = Problem.load(m["problem_file"])
    rows = {r["candidate"]: r for r in a["candidates"]}
    chosen = a["chosen"]
    refit = a.get("refit") or {}
    cdir = auto_dir / "candidates"

    def image(label: str, mode: str) -> np.ndarray:
        pick = np.load(cdir / label / "reconstruction.npy").reshape(-1)
        f = cdir / label / "refit.npy"
        if mode == "pick" or not f.is_file():
            return pick
        r = np.load(f).reshape(-1)
        return r if mode == "replace" else 0.5 * (pick + r)

    comb = a.get("combine") or {}
    weights = comb.get("weights") or {}
    stack = {}
    missing = [lab for lab in weights if rows[lab]["method"] != "tv" and not (cdir / lab / "refit.npy").is_file()]
    for mode in ("pick", "mean", "replace"):
        if weights and (mode == "pick" or not missing):
            stack[mode] = _psnr(sum(w * image(lab, mode) for lab, w in weights.items()), None, problem)
    if weights and (cdir / chosen / "refit.npy").is_file():  # only the chosen candidate refit (mean)
        stack["chosen"] = _psnr(sum(w * image(lab, "mean" if lab == chosen else "pick")
                                    for lab, w in weights.items()), None, problem)
    out = {"case": Path(m["problem_file"]).stem, "tv": (rows.get("tv") or {}).get("psnr"), "chosen": chosen,
           "choice": rows[chosen]["psnr"], "refit_mean": (refit.get(chosen) or {}).get("mean_psnr"),
           "refit_replace": (refit.get(chosen) or {}).get("psnr"), "stack": stack, "stack_used": comb.get("used"),
           "stack_z": comb.get("z"), "weights": weights, "returned": m["psnr"], "steps": a["total_steps"],
           "wall": a["wall_time_s"], "commit_version": m.get("dipkit_version")}
    if dip_dir is not None:
        d = json.loads((dip_dir / "metrics.json").read_text())
        out.update(dip_psnr=d["psnr"], dip_wall=d["wall_time_s"])
    return out


def _f(v, spec=".2f") -> str:
    return "—" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    lines = ["| case | TV | choice (pick) | choice + refit: mean / refit | stack: picks / mean / refits / chosen's mean | "
             "returned | Δ vs TV | stack weights (z; used) | network steps | wall s | dip: PSNR, wall s | auto / dip |",
             "|---|---:|---|---|---|---:|---:|---|---:|---:|---|---:|"]
    for r in rows:
        st = r["stack"]
        w = ", ".join(f"{lab} {v:.2f}" for lab, v in sorted(r["weights"].items(), key=lambda kv: -kv[1]))
        dip = "—" if "dip_wall" not in r else f"{r['dip_psnr']:.2f}, {r['dip_wall']:.0f}"
        ratio = "—" if "dip_wall" not in r else f"{r['wall'] / r['dip_wall']:.2f}×"
        lines.append(
            f"| {r['case']} | {_f(r['tv'])} | {r['chosen']} {_f(r['choice'])} | {_f(r['refit_mean'])} / "
            f"{_f(r['refit_replace'])} | {_f(st.get('pick'))} / {_f(st.get('mean'))} / {_f(st.get('replace'))} / "
            f"{_f(st.get('chosen'))} | "
            f"**{_f(r['returned'])}** | {_f(None if r['tv'] is None else r['returned'] - r['tv'], '+.2f')} | "
            f"{w} (z {_f(r['stack_z'], '.2f')}; {'yes' if r['stack_used'] else 'no'}) | {r['steps']} | "
            f"{r['wall']:.0f} | {dip} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="AUTO_DIR or AUTO_DIR=DIP_DIR")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for spec in args.runs:
        a, _, d = spec.partition("=")
        rows.append(case_row(Path(a), Path(d) if d else None))
    text = table(rows)
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
