"""Stochastic DIP (``data.subset``) against full gradients: time per step, and quality at equal wall time.

In one process, side by side: one dipkit ``dip`` run per subset share (default 1, 0.5, 0.25), each
the run ``dipkit reconstruct --method dip --set data.subset=S`` builds by default (FBP input, EMA
output, the ``val`` rule's held-out split recording its misfit, ES-WMV recording), with the same
seed, so the same network initialisation and the same held-out split. The runs are stepped
*interleaved*, ``--block`` steps at a time in rotating order, so all variants see the same machine
load; each block's wall time is recorded.

Reported per variant:

* ``s_per_step`` — median over blocks of (block wall time / steps) and the mean;
* ``data_term_ms`` — the data term alone (forward + backward on a random image, the best of 5
  repeats of 50; interleaved over the variants before the runs): the operator's share of a step;
* at an equal wall-time budget ``T`` (default: what the full-gradient run needed for all
  ``--iterations`` steps; ``--budgets`` adds fractions of it): the steps done within ``T``, the PSNR
  of the *val pick* (the estimate at the least held-out misfit among the samples within ``T``) and
  its step, and the *peak* PSNR (ground truth, for reference) and its step.

Writes JSON (``--out``)::

    OMP_NUM_THREADS=1 python benchmarks/stochastic.py p64.npz --iterations 3000 --out stoch64.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch


def _runner(problem, subset: float, seed: int, net: str | None, log_every: int):
    """One stepping dipkit run (state, method, callbacks, recorder) of ``dip`` with ``data.subset``."""
    from dipkit.run.config import RunConfig
    from dipkit.engine.recorder import HistoryRecorder
    from dipkit.run.runner import _fit_view, build_state, make_split, resolve_config
    from dipkit.stopping import make_stopping_rule, parse_rules

    cfg = RunConfig(method="dip", device="cpu", seed=seed, iterations=10**9, log_every=log_every)
    if net:
        cfg.net.name = net
    cfg.early_stop.rule = "val:record,wmv:record"
    cfg.set("data.subset", subset)
    method = cfg.validate()
    resolved = resolve_config(cfg, method, problem)
    split = make_split(problem, cfg)
    torch.manual_seed(seed)
    state = build_state(method, _fit_view(problem, split), resolved, torch.device("cpu"))
    rules = [make_stopping_rule(n, m, cfg.early_stop, check_every=cfg.log_every, split=split)
             for n, m in parse_rules(cfg.early_stop.rule)]
    rec = HistoryRecorder(every=cfg.log_every, x_true=problem.x_true)
    return method, state, [*rules, rec], rec


def _steps(method, state, cbs, n):
    from dipkit.engine import run

    state.max_steps = state.step + n
    run(method, state, cbs)


def _at_budget(hist: dict, times: list[tuple[int, float]], budget: float) -> dict:
    """Val pick and peak among the history samples whose step was done within ``budget`` seconds
    (``times``: cumulative (step, seconds) at block ends; time within a block interpolated)."""
    def t_of(step):
        prev = (0, 0.0)
        for s, t in times:
            if step <= s:
                return prev[1] + (t - prev[1]) * (step - prev[0]) / max(1, s - prev[0])
            prev = (s, t)
        return float("inf")

    idx = [i for i, s in enumerate(hist["step"]) if t_of(s) <= budget]
    if not idx:
        return {"steps": 0}
    j_val = min(idx, key=lambda i: hist["val"][i])
    j_pk = max(idx, key=lambda i: hist["psnr"][i])
    return {"steps": hist["step"][idx[-1]], "val_pick_psnr": hist["psnr"][j_val],
            "val_pick_step": hist["step"][j_val], "peak_psnr": hist["psnr"][j_pk],
            "peak_step": hist["step"][j_pk], "last_psnr": hist["psnr"][idx[-1]]}


def _data_term_ms(runs: dict, repeats: int = 5, n: int = 50) -> dict:
    """Milliseconds of the data term alone (forward + backward) per variant, best of ``repeats``."""
    from dipkit.methods.base import data_term

    best = {s: float("inf") for s in runs}
    for _ in range(repeats):
        for s, (_, state, _, _) in runs.items():
            x = torch.rand_like(state.image_like()).requires_grad_(True)
            t0 = time.perf_counter()
            for _ in range(n):
                data_term(state, x).sum().backward()
            best[s] = min(best[s], (time.perf_counter() - t0) / n * 1e3)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("problem", help="a problem file (dipkit simulate --task ct ...)")
    p.add_argument("--subsets", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    p.add_argument("--iterations", type=int, default=3000, help="steps of the full-gradient run")
    p.add_argument("--block", type=int, default=50, help="steps per interleaved block")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--net", default=None, help="network preset (default: dipkit's)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                   help="wall-time budgets as fractions of the full-gradient run's time")
    p.add_argument("--extra", type=float, default=1.0,
                   help="subset runs may take up to this factor of the full run's steps (to reach the budget)")
    p.add_argument("--out", default="stochastic.json")
    args = p.parse_args()

    from dipkit.problem import Problem

    problem = Problem.load(args.problem)
    runs = {s: _runner(problem, s, args.seed, args.net, args.log_every) for s in args.subsets}
    gen_states = {s: r[1].generator.get_state() for s, r in runs.items()}
    term_ms = _data_term_ms(runs)
    for s, r in runs.items():  # the timing drew subsets: give the runs their seeded generators back
        r[1].generator.set_state(gen_states[s])
    wall = {s: 0.0 for s in runs}
    blocks = {s: [] for s in runs}
    times = {s: [] for s in runs}
    full = 1.0 if 1.0 in runs else max(runs)
    order = list(runs)
    r = 0
    while True:
        active = [s for s in order
                  if (runs[s][1].step < args.iterations if s == full else
                      runs[s][1].step < args.iterations * args.extra and
                      (runs[full][1].step < args.iterations or wall[s] < wall[full]))]
        if not active:
            break
        k = r % len(active)
        for s in active[k:] + active[:k]:
            method, state, cbs, _ = runs[s]
            n = min(args.block, (args.iterations if s == full else int(args.iterations * args.extra)) - state.step)
            t0 = time.perf_counter()
            _steps(method, state, cbs, n)
            dt = time.perf_counter() - t0
            wall[s] += dt
            blocks[s].append(dt / n)
            times[s].append((state.step, wall[s]))
        r += 1
    out = {"problem": args.problem, "meta": {k: v for k, v in problem.meta.items() if isinstance(v, (int, float, str))},
           "img_shape": list(problem.img_shape), "iterations": args.iterations, "block": args.block,
           "seed": args.seed, "threads": torch.get_num_threads(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "machine": platform.processor() or platform.machine(),
           "variants": {}}
    t_full = wall[full]
    for s, (method, state, cbs, rec) in runs.items():
        hist = rec.history()
        term = state.data_term
        out["variants"][str(s)] = {
            "subset": s, "blocks": None if term is None else term.describe(),
            "steps": state.step, "wall_s": wall[s],
            "s_per_step_median": statistics.median(blocks[s]), "s_per_step_mean": wall[s] / state.step,
            "data_term_ms": term_ms[s],
            "at_budget": {str(b): {"budget_s": b * t_full, **_at_budget(hist, times[s], b * t_full)}
                          for b in args.budgets},
            "history": {k: hist[k] for k in ("step", "psnr", "val", "loss")},
        }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{args.problem}: full-gradient run {t_full:.1f} s for {args.iterations} steps")
    print("data term alone (fwd+bwd): " + ", ".join(f"{s}: {v:.2f} ms" for s, v in term_ms.items()))
    print(f"{'subset':>7} {'ms/step':>8} {'budget':>7} {'steps':>6} {'val-pick':>9} {'@step':>6} {'peak':>7} {'@step':>6}")
    for s, v in out["variants"].items():
        for b, a in v["at_budget"].items():
            print(f"{s:>7} {1e3 * v['s_per_step_median']:8.2f} {b:>7} {a.get('steps', 0):6d} "
                  f"{a.get('val_pick_psnr', float('nan')):9.2f} {a.get('val_pick_step', 0):6d} "
                  f"{a.get('peak_psnr', float('nan')):7.2f} {a.get('peak_step', 0):6d}")


if __name__ == "__main__":
    main()
