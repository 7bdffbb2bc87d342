"""``dipkit bench``: run a grid of cases × methods × seeds and write tables, plots and a report."""

from __future__ import annotations

import argparse

from ..errors import DipkitError
from .common import Verb, positive_int

__all__ = ["BENCH"]

DESCRIPTION = ("Run a benchmark grid (cases × methods × seeds) from a YAML config or a shipped preset; "
               "writes one run dir per run and results.csv, results.md, psnr_curves.png, "
               "misfit_curves.png, reconstruction grids and a self-contained report.html. A failed run is recorded (error.txt, "
               "the 'failed' column) and the grid goes on. Exit status: 0 all runs ok, 1 some runs failed, "
               "2 bad input.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="bench YAML file (schema: dipkit.bench.config)")
    parser.add_argument("--preset", help="a shipped preset instead of CONFIG (see --list)")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--out", help="bench directory to write (required unless --list)")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local: this machine (default); ray: one Ray task per run (pip install ray)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="local executor: parallel worker processes (default 1: one run at a time)")
    parser.add_argument("--threads", type=positive_int,
                        help="local executor: torch threads per run (default: torch's own with one worker, "
                             "cpu_count // N with N workers)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse matching problems and skip runs whose metrics.json exists")
    parser.add_argument("--ray-address", help="Ray cluster address (default: start a local cluster)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    from ..bench import list_presets, preset_path, run_bench

    if args.list:
        presets = list_presets()
        width = max((len(n) for n in presets), default=0)
        for name, desc in presets.items():
            print(f"{name:<{width}}  {desc}")
        return 0
    if (args.config is None) == (args.preset is None):
        raise DipkitError("bench: give either a CONFIG file or --preset NAME" + (" (not both)" if args.config else ""))
    if not args.out:
        raise DipkitError("bench: --out DIR is required")
    if args.workers > 1 and args.executor != "local":
        raise DipkitError("bench: --workers applies to the local executor only")
    if args.threads and args.executor != "local":
        raise DipkitError("bench: --threads applies to the local executor only")
    if args.ray_address and args.executor != "ray":
        raise DipkitError("bench: --ray-address needs --executor ray")
    config = args.config if args.config is not None else preset_path(args.preset)
    res = run_bench(config, args.out, executor=args.executor, workers=args.workers, threads=args.threads,
                    resume=args.resume,
                    ray_address=args.ray_address, log=None if args.quiet else print)
    from ..bench.report import markdown_table

    print(markdown_table(res["results"]), end="")
    n_fail = len(res["failed"])
    print(f"{len(res['ran'])} runs done, {len(res['skipped'])} reused, {n_fail} failed; "
          f"wrote {res['out']}/report.html")
    return 1 if n_fail else 0


BENCH = Verb("run a benchmark grid (cases × methods × seeds) and write tables, plots, report", run,
             add_arguments, DESCRIPTION)
