"""Bench tables: one record per run (``runs.csv``) and one row per (case, method) (``results.csv``,
``results.md``), read from the run directories alone (see :mod:`dipkit.bench.report`)."""

from __future__ import annotations

import csv
import io as _io
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

from ...io import save_text
from ...run.rundir import read_error, read_metrics
from ..grid import RunSpec

__all__ = ["METRICS", "RUN_COLUMNS", "collect_runs", "mean_std", "aggregate", "write_csv", "result_columns",
           "fmt_cell", "markdown_table"]

#: aggregated metrics: (column, metrics.json path, markdown header, format)
METRICS: list[tuple[str, tuple[str, ...], str, str]] = [
    ("peak_psnr", ("peak", "psnr"), "peak PSNR", ".2f"),
    ("peak_iter", ("peak", "iteration"), "peak iter.", ".0f"),
    ("es_psnr", ("early_stop", "psnr"), "ES PSNR", ".2f"),
    ("es_iter", ("early_stop", "iteration"), "ES iter.", ".0f"),
    ("final_psnr", ("final", "psnr"), "final PSNR", ".2f"),
    ("val_psnr", ("validation", "psnr"), "val PSNR", ".2f"),
    ("val_iter", ("validation", "iteration"), "val iter.", ".0f"),
    ("ssim", ("ssim",), "SSIM", ".3f"),
    ("final_ssim", ("final", "ssim"), "final SSIM", ".3f"),
    ("wall_time_s", ("wall_time_s",), "time [s]", ".1f"),
    ("iterations_per_s", ("iterations_per_s",), "it/s", ".1f"),
]

RUN_COLUMNS = (["case", "task", "instance", "method", "method_name", "seed", "status", "iterations"]
               + [m[0] for m in METRICS] + ["psnr", "run_dir", "error"])


# ---------------------------------------------------------------------- collecting
def _get(d: Any, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    if isinstance(d, bool) or not isinstance(d, (int, float)):
        return None
    return float(d) if math.isfinite(float(d)) else None


def collect_runs(runs: Iterable[RunSpec]) -> list[dict]:
    """One record per planned run, read from its run dir (``status``: ok, failed or missing)."""
    rows = []
    for spec in runs:
        d = Path(spec.out)
        row: dict[str, Any] = {"case": spec.case, "task": spec.task, "instance": spec.instance,
                               "method": spec.label, "method_name": spec.method, "seed": spec.seed,
                               "run_dir": str(d), "error": None, "iterations": None, "psnr": None}
        metrics = read_metrics(d)
        if metrics is not None:
            row["status"] = "ok"
            row["iterations"] = metrics.get("iterations")
            row["fov_mask"] = bool(metrics.get("fov_mask"))
            row["psnr"] = _get(metrics, ("psnr",))
            for col, path, _, _ in METRICS:
                row[col] = _get(metrics, path)
            if row["iterations"] is None:  # a direct method (FBP): no iteration to speak of
                row["peak_iter"] = None
        else:
            err = read_error(d)
            row["status"] = "failed" if err is not None else "missing"
            row["error"] = err if err is not None else "not run (interrupted?)"
            for col, *_ in METRICS:
                row[col] = None
        rows.append(row)
    return rows


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """``(mean, sample std or None, n)`` of the values that are not None."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None, 0
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else None
    return mean, std, len(vals)


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per (case, method label), in grid order; see the module docs for the columns."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["method"]), []).append(r)
    out = []
    for (case, method), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        bad = [r for r in rs if r["status"] != "ok"]
        row: dict[str, Any] = {"case": case, "task": rs[0]["task"], "method": method,
                               "method_name": rs[0]["method_name"], "runs": len(ok), "failed": len(bad),
                               "instances": len({r["instance"] for r in rs}), "seeds": len({r["seed"] for r in rs})}
        for col, *_ in METRICS:
            mean, std, _n = mean_std(r[col] for r in ok)
            row[f"{col}_mean"] = mean
            row[f"{col}_std"] = std
        row["error"] = bad[0]["error"] if bad else None
        out.append(row)
    return out


# ---------------------------------------------------------------------- tables
def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_value(r.get(c)) for c in columns])
    save_text(path, buf.getvalue())


def result_columns() -> list[str]:
    cols = ["case", "task", "method", "method_name", "runs", "failed", "instances", "seeds"]
    for col, *_ in METRICS:
        cols += [f"{col}_mean", f"{col}_std"]
    return cols + ["error"]


def fmt_cell(mean, std, fmt: str) -> str:
    if mean is None:
        return "–"
    text = format(mean, fmt)
    if std is not None:
        text += " ± " + format(std, fmt)
    return text


def markdown_table(results: list[dict]) -> str:
    head = ["case", "method"] + [m[2] for m in METRICS] + ["runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["case"], r["method"]] + [fmt_cell(r[f"{c}_mean"], r[f"{c}_std"], f) for c, _, _, f in METRICS]
        runs = str(r["runs"]) + (f" ({r['failed']} failed)" if r["failed"] else "")
        lines.append("| " + " | ".join(cells + [runs]) + " |")
    return "\n".join(lines) + "\n"
