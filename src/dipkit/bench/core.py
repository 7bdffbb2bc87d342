"""``run_bench``: simulate the cases, run the grid on an executor, write the reports."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import DipkitError
from ..io import save_yaml
from .config import BenchConfig, load_bench_config, parse_bench_config
from .executors import make_executor
from .grid import group_runs, plan_runs, prepare_case, run_is_complete
from .report import write_reports

__all__ = ["run_bench", "BenchResult"]


class BenchResult(dict):
    """``{"results", "rows", "files", "ran", "skipped", "failed", "out"}`` of :func:`run_bench`.

    ``results``: the rows of ``results.csv``; ``rows``: those of ``runs.csv``; ``ran``/``skipped``:
    the keys ``(case, instance, method label, seed)`` of the runs executed now / reused by resume;
    ``failed``: the keys of failed runs; ``files``: the report files written.
    """


def run_bench(config: str | Path | dict | BenchConfig, out: str | Path, *, executor: str = "local",
              workers: int = 1, threads: int | None = None, resume: bool = False, ray_address: str | None = None,
              executor_obj=None, log: Callable[[str], None] | None = None) -> BenchResult:
    """Run a bench: ``config`` is a YAML path, a parsed mapping or a :class:`BenchConfig`.

    Every case instance is simulated once into ``OUT/cases/<case>/<instance>/problem.npz``; every
    (instance, method, seed) is run by :func:`dipkit.run.reconstruct` into its own run dir — the
    seeds of one (instance, method) as one batched run (:mod:`dipkit.run.batched`, ``batch_seeds``) where
    the method allows it, with the same run dirs and results; then
    the reports are written (see :mod:`dipkit.bench.report`). With ``resume``, instances whose
    ``problem.npz`` and ``case.json`` match are reused, runs with a ``metrics.json`` (and the same
    ``config.yaml``) are skipped, and runs interrupted after a checkpoint continue from their
    ``checkpoint.pt`` (the others are redone). A failed run is recorded (``error.txt``, the ``failed`` column)
    and the grid goes on. ``threads``: torch threads per local run (default: torch's
    own in-process, ``cpu_count // workers`` in worker processes). ``executor_obj`` overrides
    ``executor``/``workers``/``threads``/``ray_address``.
    """
    say = log or (lambda _msg: None)
    if isinstance(config, BenchConfig):
        bench = config
    elif isinstance(config, dict):
        bench = parse_bench_config(config)
    else:
        bench = load_bench_config(config)
    bench.validate_names()
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DipkitError(f"cannot create output directory {out}: {exc.strerror}") from None
    if not out.is_dir():
        raise DipkitError(f"--out {out} is not a directory")
    out = out.resolve()
    save_yaml(out / "bench.yaml", bench.raw)
    ex = executor_obj or make_executor(executor, workers=workers, threads=threads, ray_address=ray_address)

    fresh: set[tuple[str, str]] = set()
    for case in bench.cases:
        for inst in case.instances:
            if prepare_case(out, case, inst, resume=resume):
                fresh.add((case.name, inst.name))
                say(f"simulated {case.name}/{inst.name} ({case.task})")
    runs = plan_runs(bench, out)
    todo, skipped = [], []
    for spec in runs:
        if resume and (spec.case, spec.instance) not in fresh and run_is_complete(spec):
            skipped.append(spec.key)
        else:
            todo.append(spec)
    if skipped:
        say(f"resume: {len(skipped)} of {len(runs)} runs already complete")
    by_key = {tuple(s.key): s for s in todo}
    done: list[tuple] = []
    failed: list[tuple] = []

    def on_done(rec: dict) -> None:
        key = tuple(rec["key"])
        done.append(key)
        spec = by_key.get(key)
        name = "/".join(str(k) for k in key[:3]) + f" seed {key[3]}"
        if rec["status"] == "ok":
            psnr = rec.get("psnr")
            say(f"[{len(done)}/{len(todo)}] {name}: ok" + (" (resumed)" if rec.get("resumed") else "")
                + (f", PSNR {psnr:.2f} dB" if psnr is not None else "")
                + (f", {rec['wall_s']:.1f} s" if rec.get("wall_s") is not None else ""))
        else:
            failed.append(key)
            say(f"[{len(done)}/{len(todo)}] {name}: FAILED: {rec['error']}" + (f" ({spec.out}/error.txt)" if spec else ""))

    if todo:
        def job(s):
            return s.job(resume=resume and (s.case, s.instance) not in fresh)

        jobs = [job(g[0]) if len(g) == 1 else {"group": [job(s) for s in g]} for g in group_runs(todo)]
        ex.map(jobs, on_done)
    text = (Path(bench.source).read_text(encoding="utf-8") if Path(bench.source).is_file()
            else (out / "bench.yaml").read_text(encoding="utf-8"))
    title = f"dipkit bench: {Path(bench.source).stem if Path(bench.source).is_file() else out.name}"
    rep = write_reports(out, runs, title=title, description=bench.description, config_text=text)
    all_failed = [tuple([r["case"], r["instance"], r["method"], r["seed"]]) for r in rep["rows"]
                  if r["status"] != "ok"]
    return BenchResult(results=rep["results"], rows=rep["rows"], files=rep["files"], ran=done,
                       skipped=skipped, failed=all_failed, out=out)
