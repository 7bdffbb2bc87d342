"""Ground-truth-free tuning: run a grid of settings and choose by the held-out misfit.

``dipkit tune PROBLEM --method M --grid key=v1,v2,… [--grid …] --out DIR`` runs every point of the
grid (the product of the values) with a validation split (:mod:`dipkit.physics.split`: the same
held-out entries for every point) and the ``val`` rule, on the bench executors (local, worker
processes or Ray). Each point's score is the held-out misfit of its validation pick (for the
classical baselines, whose iterations converge, the pick is along the iterations, normally at the
end). The point with the least misfit is chosen and run again on *all* the data — for the same
number of steps as its pick (``refit``) — into ``DIR/chosen/``, a normal run directory. This works
for every method, including the baselines (TV's α), so the classical baseline a DIP method is
compared with can be tuned the same ground-truth-free way.

Output: ``DIR/points/<point>/`` (one run directory per grid point), ``DIR/tune.csv`` (one row per
point: its parameters, status, held-out misfit, the pick's iteration, and PSNR/SSIM of the pick
when a ground truth is known), ``DIR/tune.json`` (the grid, the chosen point and its refit's
metrics) and ``DIR/chosen/``.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Callable

from .config import RunConfig, _parse_scalar
from ..errors import DipkitError
from ..io import csv_text, save_json, save_text

__all__ = ["parse_grid", "grid_points", "tune"]


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["alpha=0.1,0.3", "lr=1e-3"]`` → ``{"alpha": [0.1, 0.3], "lr": [0.001]}`` (YAML scalars)."""
    grid: dict[str, list] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        values = [_parse_scalar(v) for v in raw.split(",") if v.strip()]
        if not sep or not key or not values:
            raise DipkitError(f"--grid expects key=v1,v2,…, got {item!r}")
        if key in grid:
            raise DipkitError(f"--grid names {key!r} twice")
        grid[key] = values
    if not grid:
        raise DipkitError("tune needs at least one --grid key=v1,v2,…")
    return grid


def _label(point: dict) -> str:
    from ..bench.config import safe_name

    return safe_name("_".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()))


def grid_points(base: RunConfig, grid: dict[str, list]) -> list[tuple[dict, RunConfig]]:
    """Every ``(point, config)`` of the grid: ``base`` with the point's settings and a ``val`` rule."""
    from ..stopping import parse_rules

    rules = [] if base.early_stop.rule == "auto" else parse_rules(base.early_stop.rule)
    if not any(name == "val" for name, _ in rules):
        rules = [("val", "stop"), *rules]
    rule = ",".join(name if mode == "stop" else f"{name}:{mode}" for name, mode in rules)
    out = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        cfg = copy.deepcopy(base)
        for key, value in point.items():
            cfg.set(key, value, source="--grid")
        cfg.early_stop.rule = rule
        cfg.validation.refit = False
        out.append((point, cfg))
    return out


def tune(problem: str | Path, base: RunConfig, grid: dict[str, list], out: str | Path, *, executor: str = "local",
         workers: int = 1, threads: int | None = None, ray_address: str | None = None, refit: bool = True,
         quiet: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Run the grid on ``problem`` (a problem file), choose by held-out misfit, refit (module docs).

    :returns: ``{"rows": [...], "chosen": {point, misfit, …} | None, "chosen_metrics": {...} | None,
        "out": DIR}``.
    """
    from ..bench.executors import make_executor
    from ..problem import Problem
    from .rundir import read_metrics
    from . import reconstruct

    say = log or (lambda _m: None)
    problem = Path(problem)
    loaded = Problem.load(problem)  # fail early on a bad problem file
    points = grid_points(base, grid)
    for point, cfg in points:
        try:
            cfg.validate()
        except DipkitError as exc:
            raise DipkitError(f"grid point {point}: {exc}") from None
    out = Path(out)
    try:
        (out / "points").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DipkitError(f"cannot create output directory {out}: {exc.strerror}") from None
    jobs = []
    for i, (point, cfg) in enumerate(points):
        d = (out / "points" / _label(point)).resolve()
        jobs.append({"key": [str(i), _label(point)], "problem": str(problem.resolve()), "out": str(d),
                     "cfg": cfg.to_dict(), "threads": threads})
    say(f"tune: {len(jobs)} grid points of {base.method} on {problem}")

    def on_done(rec):
        say(f"  {rec['key'][1]}: {rec['status']}" + (f" ({rec['error']})" if rec.get("error") else ""))

    make_executor(executor, workers=workers, threads=threads, ray_address=ray_address).map(jobs, on_done)
    rows = []
    for (point, _), job in zip(points, jobs):
        m = read_metrics(job["out"])
        val = (m or {}).get("validation") or {}
        rows.append({**point, "point": job["key"][1], "status": "ok" if m else "failed",
                     "misfit": val.get("misfit"), "iteration": val.get("iteration"), "psnr": val.get("psnr"),
                     "ssim": val.get("ssim"), "peak_psnr": ((m or {}).get("peak") or {}).get("psnr"),
                     "run_dir": job["out"]})
    columns = [*grid, "point", "status", "misfit", "iteration", "psnr", "ssim", "peak_psnr", "run_dir"]
    save_text(out / "tune.csv", csv_text(rows, columns))
    ok = [r for r in rows if r["status"] == "ok" and r["misfit"] is not None]
    chosen = min(ok, key=lambda r: r["misfit"]) if ok else None
    chosen_metrics = None
    if chosen is not None:
        point = {k: chosen[k] for k in grid}
        cfg = copy.deepcopy(next(c for p, c in points if p == point))
        cfg.early_stop.rule = None
        if refit and cfg.validate().uses_network and chosen["iteration"]:
            cfg.iterations = int(chosen["iteration"])  # the pick's step count, now on all data
        say(f"tune: chose {chosen['point']} (held-out misfit {chosen['misfit']:.6g}); refit on all data → {out / 'chosen'}")
        res = reconstruct(loaded, cfg, out / "chosen", quiet=quiet)
        chosen_metrics = {"psnr": res.get("psnr"), "ssim": res.get("ssim"), "iterations": res.get("iterations")}
    summary = {"method": base.method, "problem": str(problem), "grid": grid,
               "chosen": None if chosen is None else {k: chosen[k] for k in [*grid, "point", "misfit", "iteration",
                                                                             "psnr"]},
               "refit": refit, "chosen_metrics": chosen_metrics, "failed": [r["point"] for r in rows
                                                                           if r["status"] != "ok"]}
    save_json(out / "tune.json", summary)
    return {"rows": rows, "chosen": summary["chosen"], "chosen_metrics": chosen_metrics, "out": out}
