"""Ground-truth-free quality tables from a `dipkit bench --preset defaults` directory (issue 9).

Reads only the run directories' ``metrics.json`` (and, when given, the JSON of an oracle TV
sweep made with ``benchmarks/tv_oracle.py``) and prints markdown:

1. per case: the direct reconstruction, TV with its default α ("auto": chosen by held-out misfit),
   the oracle-tuned TV (best PSNR over the α grid, needs the ground truth), and the best network
   method's validation pick — the question "does a user who sets nothing beat TV?";
2. per (case, method): the validation pick, the WMV pick, the oracle peak and the final iterate;
3. the distribution of (peak − pick) for the val and WMV rules: the share within 0.5 dB;
4. with an ``auto`` row (``--method auto``): what it chose, its PSNR against TV (α auto) and the
   oracle TV, its wall time against one default ``dip`` run, and where ranking by misfit chose a
   worse candidate than the best it had (by the ground truth); and for every network run why it
   stopped (patience / cap / budget) and whether it was still improving at the end.

Usage::

    python benchmarks/tv_oracle.py BENCH_DIR tv_oracle.json
    python benchmarks/defaults_table.py BENCH_DIR [--tv-oracle tv_oracle.json] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

BASELINES = ("naive", "fbp", "tv", "pnp-admm")
META = ("auto",)


def combine_psnr(run_dir: Path, k: int) -> float | None:
    """PSNR of the mean of an auto run's k best candidates by held-out misfit (what ``--combine k``
    would have returned), from the candidates' saved reconstructions; None without a ground truth."""
    import csv

    import numpy as np
    import torch

    from dipkit.problem import Problem
    from dipkit.run.summary import metric_pair

    sel = run_dir / "selection.csv"
    if not sel.is_file():
        return None
    rows = [r for r in csv.DictReader(sel.open()) if r.get("rank")]
    rows = sorted(rows, key=lambda r: int(r["rank"]))[:k]
    if len(rows) < k:
        return None
    recons = [np.load(run_dir / "candidates" / r["candidate"] / "reconstruction.npy") for r in rows]
    problem = Problem.load(run_dir.parent.parent / "problem.npz")
    x = torch.from_numpy(np.mean(recons, axis=0))[None].to(problem.y.dtype if not problem.y.is_complex() else
                                                           torch.float32)
    return metric_pair(x, problem, None)[0]


def load_runs(bench: Path) -> dict[tuple[str, str], dict]:
    """``{(case, method): metrics}`` for seed 0 of every run of the bench."""
    runs = {}
    for f in sorted(bench.glob("cases/*/*/*/seed0/metrics.json")):
        method, case = f.parent.parent.name, f.parent.parent.parent.parent.name
        runs[(case, method)] = json.loads(f.read_text())
    return runs


def tv_oracle(oracle: dict, case: str) -> tuple[float, str] | tuple[None, None]:
    if case not in oracle:
        return None, None
    return oracle[case]["psnr"], f"{oracle[case]['alpha']:g}"


def pick(m: dict, rule: str) -> float | None:
    s = (m.get("selections") or {}).get(rule)
    return None if s is None else s.get("psnr")


def fmt(v, nd=2):
    return "—" if v is None else f"{v:.{nd}f}"


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path)
    ap.add_argument("--tv-oracle", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    runs = load_runs(a.bench)
    oracle = json.loads(a.tv_oracle.read_text()) if a.tv_oracle and a.tv_oracle.is_file() else {}
    cases = sorted({c for c, _ in runs}, key=lambda c: min(i for i, (cc, _) in enumerate(runs) if cc == c))
    lines = ["## Does a user who sets nothing beat TV?", "",
             "| case | direct | TV (α auto) | TV oracle α | best network method (val pick) | Δ vs TV auto | Δ vs TV oracle | dip (val pick) |",
             "|---|---|---|---|---|---|---|---|"]
    detail = ["## Every network method: val pick, WMV pick, oracle peak, final (PSNR dB)", "",
              "| case | method | val pick (it) | WMV pick | peak (it) | final | peak − val | peak − WMV | steps, stop |",
              "|---|---|---|---|---|---|---|---|---|"]
    autos = ["## `--method auto`: the method chosen by held-out misfit", "",
             "| case | auto PSNR | chose | best candidate by PSNR | Δ vs TV auto | Δ vs TV oracle | time / dip's | "
             "combine 2 / 3 | candidates (PSNR, misfit rank) |", "|---|---|---|---|---|---|---|---|---|"]
    auto_wins, auto_n, ratios = 0, 0, []
    gaps_val, gaps_wmv, wins, goal = [], [], 0, 0
    for case in cases:
        direct = next((runs[(case, b)]["psnr"] for b in ("naive", "fbp") if (case, b) in runs), None)
        tv = runs.get((case, "tv"), {}).get("psnr")
        tvo, tvo_alpha = tv_oracle(oracle, case)
        best, best_name = None, None
        for (c, meth), m in runs.items():
            if c != case or meth in BASELINES or meth in META:
                continue
            v = pick(m, "val")
            w = pick(m, "wmv")
            peak = (m.get("peak") or {}).get("psnr")
            it = (m.get("selections") or {}).get("val", {}).get("iteration")
            stop = m.get("stop") or {}
            detail.append(f"| {case} | {meth} | {fmt(v)} ({it}) | {fmt(w)} | {fmt(peak)} "
                          f"({(m.get('peak') or {}).get('iteration')}) | {fmt((m.get('final') or {}).get('psnr'))} "
                          f"| {fmt(None if v is None or peak is None else peak - v)} "
                          f"| {fmt(None if w is None or peak is None else peak - w)} "
                          f"| {m.get('iterations')} {stop.get('kind', '')}{' (improving)' if stop.get('still_improving') else ''} |")
            if v is not None and peak is not None:
                gaps_val.append(peak - v)
            if w is not None and peak is not None:
                gaps_wmv.append(peak - w)
            if v is not None and (best is None or v > best):
                best, best_name = v, meth
        dip = pick(runs.get((case, "dip"), {}), "val")
        am = runs.get((case, "auto"))
        if am is not None:
            auto_n += 1
            ap = am.get("psnr")
            rows = (am.get("auto") or {}).get("candidates") or []
            good = [r for r in rows if r.get("psnr") is not None]
            top = max(good, key=lambda r: r["psnr"]) if good else None
            dwall = runs.get((case, "dip"), {}).get("wall_time_s")
            ratio = None if not dwall else am.get("wall_time_s", 0) / dwall
            if ratio is not None:
                ratios.append(ratio)
            if ap is not None and tv is not None and ap >= tv - 1e-9:
                auto_wins += 1
            cands = ", ".join(f"{r['candidate']} {fmt(r.get('psnr'))} (#{r.get('rank')})" for r in rows)
            adir = next(a.bench.glob(f"cases/{case}/*/auto/seed0"), None)
            comb = [None if adir is None else combine_psnr(adir, kk) for kk in (2, 3)]
            autos.append(f"| {case} | {fmt(ap)} | {(am.get('auto') or {}).get('chosen')} | "
                         f"{'—' if top is None else top['candidate'] + ' ' + fmt(top['psnr'])} | "
                         f"{fmt(None if ap is None or tv is None else ap - tv)} | "
                         f"{fmt(None if ap is None or tvo is None else ap - tvo)} | "
                         f"{'—' if ratio is None else f'{ratio:.1f}×'} | {fmt(comb[0])} / {fmt(comb[1])} | {cands} |")
        if best is not None and tv is not None and best >= tv:
            wins += 1
        if best is not None and tvo is not None and best >= tvo + 1.0:
            goal += 1
        lines.append(f"| {case} | {fmt(direct)} | {fmt(tv)} | {fmt(tvo)}"
                     f"{'' if tvo_alpha is None else f' (α={tvo_alpha})'} | {fmt(best)} ({best_name}) "
                     f"| {fmt(None if best is None or tv is None else best - tv)} "
                     f"| {fmt(None if best is None or tvo is None else best - tvo)} | {fmt(dip)} |")
    lines += ["", f"Best network method ≥ TV (α auto) in {wins} of {len(cases)} cases"
              + (f"; ≥ oracle-tuned TV + 1 dB in {goal} of {len(cases)}." if oracle else "."), ""]

    def dist(gaps):
        if not gaps:
            return "—"
        n = len(gaps)
        within = sum(g <= 0.5 for g in gaps)
        srt = sorted(gaps)
        return (f"{within}/{n} = {100 * within / n:.0f} % within 0.5 dB; median {srt[n // 2]:.2f} dB, "
                f"90th percentile {srt[min(n - 1, int(0.9 * n))]:.2f} dB, worst {srt[-1]:.2f} dB")
    lines += ["## Oracle peak − pick, over (case, network method) pairs", "",
              f"* val (held-out misfit): {dist(gaps_val)}", f"* WMV: {dist(gaps_wmv)}", ""]
    if auto_n:
        autos += ["", f"auto ≥ TV (α auto) in {auto_wins} of {auto_n} cases; its wall time is "
                      + (f"{min(ratios):.1f}–{max(ratios):.1f}× one default dip run." if ratios else "—"), ""]
        lines += autos
    text = "\n".join(lines + detail) + "\n"
    if a.out:
        a.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
