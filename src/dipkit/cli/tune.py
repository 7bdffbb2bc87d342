"""``dipkit tune``: choose a method's settings without a ground truth (held-out misfit)."""

from __future__ import annotations

from .common import DEVICES, Verb, positive_int

__all__ = ["TUNE"]


def add_arguments(t) -> None:
    t.add_argument("problem", help="problem file (dipkit simulate)")
    t.add_argument("--method", required=True, help="method name (see 'dipkit methods')")
    t.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,…", required=True,
                   help="a setting and its values (any --set key); several --grid make a product grid")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed settings, as reconstruct")
    t.add_argument("--iterations", type=positive_int, help="steps per grid point (default: the method's)")
    t.add_argument("--early-stop", metavar="RULE",
                   help="extra rules recorded beside 'val' (e.g. wmv:record); 'val' is always used")
    t.add_argument("--seed", type=int, help="run seed of every point (default 0)")
    t.add_argument("--device", choices=DEVICES, help="auto uses a GPU when there is one (default)")
    t.add_argument("--no-refit", dest="refit", action="store_false",
                   help="chosen/: rerun the chosen point with its full step budget instead of its validation pick's")
    t.add_argument("--out", required=True, help="output directory (points/, tune.csv, tune.json, chosen/)")
    t.add_argument("--executor", choices=["local", "ray"], default="local", help="as 'dipkit bench'")
    t.add_argument("--workers", type=positive_int, default=1, help="local executor: parallel worker processes")
    t.add_argument("--threads", type=positive_int, help="torch threads per run")
    t.add_argument("--ray-address", help="Ray cluster address (default: start a local cluster)")
    t.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    from ..run.config import RunConfig, parse_overrides
    from ..run.tune import parse_grid, tune

    cfg = RunConfig(method=args.method)
    for key in ("iterations", "seed", "device"):
        if getattr(args, key) is not None:
            cfg.set(key, getattr(args, key))
    if args.early_stop is not None:
        cfg.set("early_stop.rule", args.early_stop)
    for key, value in parse_overrides(args.set):
        cfg.set(key, value)
    res = tune(args.problem, cfg, parse_grid(args.grid), args.out, executor=args.executor, workers=args.workers,
               threads=args.threads, ray_address=args.ray_address, refit=args.refit,
               log=None if args.quiet else print)
    for r in res["rows"]:
        mark = " <- chosen" if res["chosen"] and r["point"] == res["chosen"]["point"] else ""
        parts = [f"{r['point']}: {r['status']}"]
        if r["misfit"] is not None:
            parts.append(f"held-out misfit {r['misfit']:.6g} @ {r['iteration']}")
        if r["psnr"] is not None:
            parts.append(f"PSNR {r['psnr']:.2f} dB")
        print("  ".join(parts) + mark)
    if res["chosen_metrics"] and res["chosen_metrics"].get("psnr") is not None:
        print(f"chosen (refit on all data): PSNR {res['chosen_metrics']['psnr']:.2f} dB")
    print(f"wrote {res['out']}/ (tune.csv, tune.json, points/, chosen/)")
    return 0 if res["chosen"] else 1


TUNE = Verb("choose a method's settings without a ground truth (grid, held-out misfit)", run, add_arguments,
            "Run a grid of settings with a validation split, choose by the misfit on held-out measurements, "
            "and rerun the chosen point on all data into OUT/chosen. Exit status 1 when no point succeeded.")
