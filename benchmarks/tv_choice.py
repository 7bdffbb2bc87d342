"""How good and how fast is TV's ground-truth-free weight (``tv`` with ``alpha=auto``)? (issue 16)

For every case at 128² — the project's images (``ct``, ``mr``, ``astronaut``) and images nobody
tuned on (``head-ct``, ``abdomen-mr``, ``motorcycle``) — it reports

* **auto**: ``dipkit reconstruct P --method tv`` with its defaults, through the same runner as the
  CLI (:func:`dipkit.run.reconstruct`): the α it chose, its PSNR, and its wall time (the run's
  ``wall_time_s``, which includes the α search; process start-up and imports are not in it) and
  the CPU time of the whole call (``cpu_s``: one thread, so less sensitive than the wall time to
  other jobs on a shared machine);
* **oracle**: the PSNR-best α of converged solves on all data (needs the ground truth): a coarse
  pass over half decades 10⁻⁵ … 10² (400 PDHG steps each, warm-started from the next larger α),
  then eighth decades over ±½ decade around the coarse best, 1000 steps each warm-started down
  the path; ``conv`` is the PSNR change of 500 more steps at the oracle α (how converged it is).

The oracle depends on the problem only, so it is cached in ``--oracle`` (JSON) and reused when the
auto rule changes. One torch thread; one case at a time.

Usage::

    python benchmarks/tv_choice.py --oracle tv_oracle128.json --out tv_auto.json [--cases ct,denoise]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import torch

# name: (task, sample, options); the held-out images get the suffix "/heldout"
CASES = {
    "ct": ("ct", "ct", {"views": 30, "noise_level": 0.02}),
    "ct-fan": ("ct-fan", "ct", {"views": 60, "noise_level": 0.02}),
    "mri": ("mri", "mr", {"acceleration": 4}),
    "mri-multicoil": ("mri-multicoil", "mr", {"acceleration": 4, "coils": 4}),
    "denoise": ("denoise", "astronaut", {}),
    "inpaint": ("inpaint", "astronaut", {"missing": 0.5}),
    "deblur": ("deblur", "astronaut", {}),
    "superres": ("superres", "astronaut", {"factor": 4, "noise_std": 0.01}),
}
HELDOUT = {"ct": "head-ct", "mr": "abdomen-mr", "astronaut": "motorcycle"}


def all_cases() -> dict:
    out = {}
    for name, (task, sample, opts) in CASES.items():
        out[name] = (task, sample, opts)
    for name, (task, sample, opts) in CASES.items():
        out[name + "/heldout"] = (task, HELDOUT[sample], opts)
    return out


def make_problem(task: str, sample: str, opts: dict, size: int = 128, seed: int = 0):
    """What ``dipkit simulate --task T --sample S --size 128 --seed 0 [options]`` writes."""
    from dipkit.io import load_image_source
    from dipkit.tasks import get_task

    t = get_task(task)
    image, _ = load_image_source(None, sample, size=size, channels=t.channels)
    return t.simulate(image, seed=seed, **opts)


@torch.no_grad()
def oracle(problem, nonneg: bool) -> dict:
    from dipkit.baselines.tv import tv_reconstruct
    from dipkit.metrics import psnr

    A, y, xt = problem.physics, problem.y, problem.x_true

    def p(x):
        return float(psnr(x, xt).mean())

    coarse, x, sols = {}, None, {}
    for k in range(4, -11, -1):  # 10^2 … 10^-5, half decades
        a = 10 ** (k / 2)
        x = tv_reconstruct(A, y, a, iterations=400, x0=x, nonneg=nonneg)
        coarse[k], sols[k] = p(x), x
    kbest = max(coarse, key=coarse.get)
    top = min(kbest + 1, 4)  # start the fine path half a decade above the coarse best
    x = sols[top]
    fine = {}
    for j in range(4 * top, 4 * (kbest - 1) - 1, -1):  # eighth decades, from 10^(top/2) down
        a = 10 ** (j / 8)
        x = tv_reconstruct(A, y, a, iterations=1000, x0=x, nonneg=nonneg)
        fine[j] = (p(x), x)
    jbest = max(fine, key=lambda j: fine[j][0])
    best_a, (best_p, best_x) = 10 ** (jbest / 8), fine[jbest]
    more = p(tv_reconstruct(A, y, best_a, iterations=500, x0=best_x, nonneg=nonneg))
    return {"alpha": best_a, "psnr": best_p, "conv": more - best_p,
            "coarse": {f"{10 ** (k / 2):.3g}": v for k, v in coarse.items()},
            "fine": {f"{10 ** (j / 8):.4g}": v[0] for j, v in fine.items()}}


def auto(problem) -> dict:
    from dipkit.run.config import RunConfig
    from dipkit.run import reconstruct

    cfg = RunConfig.from_dict({"method": "tv", "device": "cpu"})
    t0, c0 = time.perf_counter(), time.process_time()
    res = reconstruct(problem, cfg, quiet=True)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"alpha": res["params"]["alpha"], "psnr": res["psnr"], "wall_time_s": res["wall_time_s"],
            "total_s": total, "cpu_s": cpu, "iterations": res["iterations"]}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        return "?"


def table(oracles: dict, autos: dict) -> str:
    lines = ["| case | image | auto α | auto PSNR | oracle α | oracle PSNR | oracle − auto | conv | auto wall (s) "
             "| auto CPU (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    cases = all_cases()
    gaps = {"tuned": [], "heldout": []}
    for name in cases:
        if name not in autos or name not in oracles:
            continue
        a, o = autos[name], oracles[name]
        gap = o["psnr"] - a["psnr"]
        gaps["heldout" if name.endswith("/heldout") else "tuned"].append(gap)
        lines.append(f"| {name.split('/')[0]} | {cases[name][1]} | {a['alpha']:.3g} | {a['psnr']:.2f} | "
                     f"{o['alpha']:.3g} | {o['psnr']:.2f} | {gap:+.2f} | {o['conv']:+.3f} | {a['wall_time_s']:.2f} | "
                     f"{a.get('cpu_s', float('nan')):.2f} |")
    for k, v in gaps.items():
        if v:
            lines.append(f"\n{k} images: mean gap {sum(v) / len(v):.2f} dB, worst {max(v):.2f} dB ({len(v)} cases)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oracle", required=True, help="JSON cache of the oracle (made when missing)")
    ap.add_argument("--out", help="JSON of the auto results")
    ap.add_argument("--cases", help="comma-separated case names (default: all)")
    ap.add_argument("--no-auto", action="store_true", help="only the oracle")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cases = all_cases()
    names = list(cases) if not args.cases else args.cases.split(",")
    oracles = json.load(open(args.oracle)) if os.path.exists(args.oracle) else {}
    autos = {}
    for name in names:
        task, sample, opts = cases[name]
        problem = make_problem(task, sample, opts)
        if name not in oracles:
            nonneg = not task.startswith("mri")  # TV's default positivity (TV.positivity)
            t0 = time.perf_counter()
            oracles[name] = oracle(problem, nonneg)
            print(f"oracle {name}: α {oracles[name]['alpha']:.3g} PSNR {oracles[name]['psnr']:.2f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            with open(args.oracle + ".tmp", "w") as f:
                json.dump(oracles, f, indent=1)
            os.replace(args.oracle + ".tmp", args.oracle)
        if not args.no_auto:
            autos[name] = auto(problem)
            a = autos[name]
            print(f"auto {name}: α {a['alpha']:.3g} PSNR {a['psnr']:.2f} wall {a['wall_time_s']:.2f} s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"commit": commit(), "auto": autos}, f, indent=1)
    print(f"\ncommit {commit()}\n")
    print(table(oracles, autos))


if __name__ == "__main__":
    main()
