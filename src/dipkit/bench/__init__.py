"""``dipkit bench``: a grid of cases × methods × seeds → run dirs → tables, plots and a report.

>>> from dipkit.bench import run_bench, list_presets, preset_path
>>> res = run_bench("my-bench.yaml", "bench-out")                    # doctest: +SKIP
>>> res = run_bench(preset_path("quick"), "quick-out", workers=2)      # doctest: +SKIP
>>> res["results"][0]["peak_psnr_mean"]                                # doctest: +SKIP

* the YAML schema: :mod:`dipkit.bench.config`;
* the directory layout: :mod:`dipkit.bench.grid`;
* the executors (local, local processes, Ray): :mod:`dipkit.bench.executors`;
* the outputs (``results.csv``, ``results.md``, ``runs.csv``, ``psnr_curves.png``,
  ``misfit_curves.png``, ``recon_<case>.png``, ``report.html``): :mod:`dipkit.bench.report`.
"""

from __future__ import annotations

from .config import BenchConfig, list_presets, load_bench_config, parse_bench_config, preset_path
from .core import BenchResult, run_bench
from .executors import LocalExecutor, RayExecutor, execute_run, make_executor

__all__ = ["run_bench", "BenchResult", "BenchConfig", "load_bench_config", "parse_bench_config", "list_presets",
           "preset_path", "LocalExecutor", "RayExecutor", "make_executor", "execute_run"]
