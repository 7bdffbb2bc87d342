"""CT self-validation: held-out rays vs held-out views, raw vs ramp-filtered score (issue 16, item 3).

For each CT case and network method (its defaults: nothing set but the method), one full-budget run
per *split* (``entries``: today's random held-out rays; ``views``: whole held-out projection
angles), with ``early_stop.rule=val:record`` so every run goes to its full step budget. The
estimate the ``val`` rule sees is kept at every check (every 10 steps), so every *score* is
evaluated afterwards on the same trajectory, and the oracle PSNR curve comes with it:

* ``entries/raw`` — the held-out-ray misfit (the library's score on the entries split: the run's own
  val pick);
* ``views/raw``, ``views/ramp`` — the library's scores (:class:`dipkit.physics.split.ValidationSplit`
  with ``split="views"``, ``score="raw"``/``"ramp"``) on the views split;
* exploratory, on the views split, not in the library: ``views/halframp`` — the residual filtered by
  :math:`|\\omega|^{1/2}` (with the Ram-Lak filter's transfer function, zero-padded the same way),
  which by the Fourier slice theorem weights the image error's spectrum by 1 along the held-out
  directions, i.e. matches the image's L2 error (and PSNR) where ``ramp`` weights it by
  :math:`|\\omega|^2`; ``views/fbp`` — the image-domain estimate :math:`\\|A^\\dagger[(Ax-y)\\odot m]\\|^2`
  (FBP of the held-out views' residual).

Per (case, method, variant): the val pick (PSNR and iteration: the minimum of the score over the
checks), the oracle peak of the same run (PSNR and iteration), peak − pick, and the fitting cost of
the views split: its pick and its peak minus those of the entries split (fewer views fitted).

Runs are cached as JSON (``--work``), so the table can be rebuilt and runs added without rerunning.
One torch thread. Usage::

    python benchmarks/ct_validation.py run --cases ct --methods dip-tv,dip-denoiser-admm
    python benchmarks/ct_validation.py run --cases ct,head-ct,ct-fan --methods all
    python benchmarks/ct_validation.py run --cases ct --methods dip-tv --splits views --fraction 0.1
    python benchmarks/ct_validation.py run --cases head-ct --methods dip --seed 1   # another split seed
    python benchmarks/ct_validation.py run --cases ct --methods dip-tv --splits all     # no split (all data)
    python benchmarks/ct_validation.py table --out TABLE.md

(The table lists split seed 0 only; ``--splits all`` runs fit all data with no rule, the trajectory a
``validation.refit`` rerun follows for methods whose schedule does not depend on the step budget.)
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

CASES = {  # name: (task, sample, views) — 64², 2 % noise, noise seed 0 (as the defaults bench)
    "ct": ("ct", "ct", 30),
    "head-ct": ("ct", "head-ct", 30),
    "ct-fan": ("ct-fan", "ct", 60),
}
METHODS = ("dip", "dip-tv", "dip-denoiser-admm", "deepred", "dip-tv-hqs", "dip-constrained", "aseqdip")
SCORES = {"entries": ("raw",), "views": ("raw", "ramp", "halframp", "fbp")}
#: entries/raw (today's split) on the cases of the defaults bench, from benchmarks/results/defaults.md
#: (commit 0403ebc; the same problems, methods and seeds — this script's own entries runs of ct/dip-tv
#: and ct/dip-denoiser-admm reproduce them to the step): ``(case, method): (pick, pick_it, peak, peak_it)``.
#: Used (marked †) where no entries run of this script is cached, to save CPU time.
REFERENCE = {
    ("ct", "aseqdip"): (31.13, 3740, 31.20, 3880), ("ct", "deepred"): (30.06, 1050, 31.72, 3000),
    ("ct", "dip"): (30.09, 1300, 31.07, 2540), ("ct", "dip-constrained"): (29.06, 820, 31.17, 2410),
    ("ct", "dip-denoiser-admm"): (28.94, 750, 31.39, 3000), ("ct", "dip-tv"): (29.12, 830, 31.80, 2980),
    ("ct", "dip-tv-hqs"): (29.09, 780, 31.28, 2840),
    ("ct-fan", "aseqdip"): (31.43, 3850, 31.56, 3970), ("ct-fan", "deepred"): (31.04, 2110, 31.36, 2240),
    ("ct-fan", "dip"): (31.72, 3000, 31.72, 3000), ("ct-fan", "dip-constrained"): (31.69, 2930, 31.71, 2950),
    ("ct-fan", "dip-denoiser-admm"): (31.89, 3000, 31.89, 3000), ("ct-fan", "dip-tv"): (32.21, 3000, 32.21, 3000),
    ("ct-fan", "dip-tv-hqs"): (31.79, 3000, 31.79, 3000),
}


def simulate(case: str):
    """The case's problem, simulated as ``dipkit bench`` does (same image, size, options, seed)."""
    from dipkit.io.samples import load_image_source
    from dipkit.tasks import get_task

    task_name, sample, views = CASES[case]
    task = get_task(task_name)
    image, info = load_image_source(None, sample, size=64, channels=task.channels)
    problem = task.simulate(image, seed=0, views=views, noise_level=0.02)
    problem.meta["source"] = info
    return problem


def _halframp(r: torch.Tensor) -> torch.Tensor:
    """``r [..., nd, V]`` filtered along the detector by the square root of the Ram-Lak transfer
    function, zero-padded as :func:`dipkit.physics.ct_fbp.ramp_filter` (exploratory score)."""
    from deepinv.physics.functional.radon import RampFilter

    nd = r.shape[-2]
    size = max(64, int(2 ** math.ceil(math.log2(2 * nd))))
    h = RampFilter(dtype=torch.float64)._get_fourier_filter(size).abs().sqrt().reshape(-1, 1)
    rp = torch.nn.functional.pad(r.to(torch.float64), (0, 0, 0, size - nd))
    return torch.fft.irfft(torch.fft.rfft(rp, dim=-2) * h, n=size, dim=-2)[..., :nd, :]


@torch.no_grad()
def scores(problem, split_kind: str, fraction: float, xs: torch.Tensor, seed: int = 0) -> dict[str, list[float]]:
    """Every score of ``SCORES[split_kind]`` for the snapshots ``xs [T, C, H, W]``."""
    from dipkit.physics.split import ValidationSplit

    out = {}
    y, phys = problem.y, problem.physics
    for score in ("raw", "ramp"):
        if score in SCORES[split_kind]:
            sp = ValidationSplit(phys, y, fraction=fraction, seed=seed, split=split_kind, score=score)
            out[score] = torch.cat([sp.misfit(x[None]) for x in xs]).tolist()
    if split_kind == "views":
        sp = ValidationSplit(phys, y, fraction=fraction, seed=seed, split="views")
        hr, fb = [], []
        for x in xs:
            r = (phys.A(x[None]) - y) * sp.held_out
            hr.append(float(_halframp(r[..., sp.views]).pow(2).sum()) / sp.n_held_out)
            fb.append(float(phys.A_dagger(r).to(torch.float64).pow(2).mean()))
        out["halframp"], out["fbp"] = hr, fb
    return out


def run_one(case: str, method: str, split_kind: str, fraction: float, work: Path, problem,
            iterations: int | None = None, seed: int = 0) -> dict:
    """One full-budget run (cached in ``work``): the snapshots' PSNR and every score."""
    from dipkit.run.config import RunConfig
    from dipkit.metrics import psnr
    from dipkit.run import reconstruct
    from dipkit.stopping.val import Validation

    f = work / (f"{case}__{method}__all.json" if split_kind == "all" else f"{case}__{method}__{split_kind}@{fraction:g}"
                                                                     f"{'' if not seed else f'~seed{seed}'}.json")
    if f.is_file():
        return json.loads(f.read_text())
    snaps: list[tuple[int, torch.Tensor]] = []
    orig = Validation.on_step_end

    def recording(self, state):  # keep the estimate the val rule sees, at every check
        if state.step % self.check_every == 0 or state.step == state.max_steps:
            snaps.append((int(state.step), state.estimate.detach().to(torch.float32).cpu().clone()))
        orig(self, state)

    if split_kind == "all":  # no split: all data fitted (what validation.refit reruns), no rule
        cfg = RunConfig.from_dict({"method": method, "device": "cpu", "log_every": 10, "early_stop": {"rule": "none"}})
    else:
        cfg = RunConfig.from_dict({"method": method, "device": "cpu", "log_every": 10,
                                   "early_stop": {"rule": "val:record"},
                                   "validation": {"split": split_kind, "score": "raw", "fraction": fraction,
                                                  "seed": seed}})
    if iterations:
        cfg.iterations = int(iterations)
    Validation.on_step_end = recording
    try:
        t0 = time.perf_counter()
        res = reconstruct(problem, cfg, quiet=True)
        wall = time.perf_counter() - t0
    finally:
        Validation.on_step_end = orig
    if split_kind == "all":
        h = res.history
        rec = {"case": case, "method": method, "split": split_kind, "fraction": 0.0, "steps": list(h["step"]),
               "psnr": list(h["psnr"]), "scores": {}, "wall_s": wall,
               "run": {"peak": res["peak"], "final": res["final"], "iterations": res["iterations"]}}
        work.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(rec))
        return rec
    xs = torch.cat([x for _, x in snaps])  # [T, C, H, W] (batch of 1)
    rec = {"case": case, "method": method, "split": split_kind, "fraction": fraction,
           "steps": [s for s, _ in snaps], "psnr": psnr(xs, problem.x_true.expand_as(xs)).tolist(),
           "scores": scores(problem, split_kind, fraction, xs, seed), "seed": seed, "wall_s": wall,
           "run": {"validation": res["validation"], "peak": res["peak"], "final": res["final"],
                   "iterations": res["iterations"]}}
    work.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(rec))
    return rec


def pick(rec: dict, score: str) -> tuple[float, int]:
    """(PSNR, step) at the score's minimum (the first one, as the val rule keeps it)."""
    v = rec["scores"][score]
    j = min(range(len(v)), key=lambda i: (v[i], i))
    return rec["psnr"][j], rec["steps"][j]


def peak(rec: dict) -> tuple[float, int]:
    j = max(range(len(rec["psnr"])), key=lambda i: (rec["psnr"][i], -i))
    return rec["psnr"][j], rec["steps"][j]


def table(work: Path, fractions: list[float]) -> str:
    recs = [json.loads(f.read_text()) for f in sorted(work.glob("*.json"))]
    recs = [r for r in recs if not r.get("seed") and r["split"] != "all"]  # the table: split seed 0
    by = {(r["case"], r["method"], r["split"], r["fraction"]): r for r in recs}
    cases = [c for c in CASES if any(r["case"] == c for r in recs)]
    lines = ["| case | method | variant | val pick (it) | peak (it) | peak − pick | pick − entries pick "
             "| peak − entries peak | entries peak − pick |", "|---|---|---|---|---|---|---|---|---|"]
    gaps: dict[str, list[float]] = {}
    abs_gaps: dict[str, list[float]] = {}
    for case in cases:
        for method in METHODS:
            base = by.get((case, method, "entries", 0.05))
            ref = None
            if base is not None:
                assert pick(base, "raw")[1] == base["run"]["validation"]["iteration"]  # the run's own pick
                ref = (*pick(base, "raw"), *peak(base))
            elif (case, method) in REFERENCE:
                ref = REFERENCE[(case, method)]
                gaps.setdefault("entries/raw", []).append(ref[2] - ref[0])
                abs_gaps.setdefault("entries/raw", []).append(ref[2] - ref[0])
                lines.append(f"| {case} | {method} | entries/raw † | {ref[0]:.2f} ({ref[1]}) | {ref[2]:.2f} ({ref[3]}) "
                             f"| {ref[2] - ref[0]:.2f} | — | — | {ref[2] - ref[0]:.2f} |")
            for frac in fractions:
                for split_kind in ("entries", "views"):
                    r = by.get((case, method, split_kind, frac))
                    if r is None or (split_kind == "entries" and frac != 0.05):
                        continue
                    pk, pit = peak(r)
                    for score in SCORES[split_kind]:
                        p, it = pick(r, score)
                        variant = f"{split_kind}/{score}" + ("" if frac == 0.05 else f" @{frac:g}")
                        gaps.setdefault(variant, []).append(pk - p)
                        d_pick = d_peak = d_abs = "—"
                        if ref is not None:
                            abs_gaps.setdefault(variant, []).append(ref[2] - p)
                            d_abs = f"{ref[2] - p:.2f}"
                            if split_kind != "entries":
                                d_pick, d_peak = f"{p - ref[0]:+.2f}", f"{pk - ref[2]:+.2f}"
                        lines.append(f"| {case} | {method} | {variant} | {p:.2f} ({it}) | {pk:.2f} ({pit}) "
                                     f"| {pk - p:.2f} | {d_pick} | {d_peak} | {d_abs} |")
    summary = ["| variant | runs | peak − pick ≤ 0.5 dB | mean | median | worst "
               "| entries peak − pick ≤ 0.5 dB | mean | median | worst |",
               "|---|---|---|---|---|---|---|---|---|---|"]

    def stats(g):
        s = sorted(g)
        return (f"{sum(x <= 0.5 for x in s)} | {sum(s) / len(s):.2f} | {s[len(s) // 2]:.2f} | {s[-1]:.2f}"
                if s else "— | — | — | —")
    for variant, g in gaps.items():
        summary.append(f"| {variant} | {len(g)} | {stats(g)} | {stats(abs_gaps.get(variant, []))} |")
    return "\n".join(summary) + "\n\n" + "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("run", "table"))
    ap.add_argument("--cases", default="ct")
    ap.add_argument("--methods", default="dip-tv,dip-denoiser-admm")
    ap.add_argument("--splits", default="entries,views")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0, help="validation.seed (the split's seed)")
    ap.add_argument("--fractions", default="0.05", help="table: the view-split fractions to list")
    ap.add_argument("--iterations", type=int, default=None, help="override the methods' budgets (smoke tests)")
    ap.add_argument("--work", type=Path, default=Path("ct-validation-runs"))
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.action == "run":
        methods = METHODS if a.methods == "all" else a.methods.split(",")
        for case in a.cases.split(","):
            problem = simulate(case)
            for method in methods:
                for split_kind in a.splits.split(","):
                    r = run_one(case, method, split_kind, a.fraction, a.work, problem, a.iterations, a.seed)
                    msg = [f"{case} {method} {split_kind}@{a.fraction:g}: peak {peak(r)[0]:.2f} ({peak(r)[1]})"]
                    msg += [f"{s} {pick(r, s)[0]:.2f} ({pick(r, s)[1]})" for s in r["scores"]]
                    print(" | ".join(msg) + f" | {r['wall_s']:.0f} s", flush=True)
        return
    text = table(a.work, [float(f) for f in a.fractions.split(",")])
    if a.out:  # the table only: the results file's text around it is written by hand
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
