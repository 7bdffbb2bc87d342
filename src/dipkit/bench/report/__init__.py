r"""Bench outputs, built from the run dirs alone (so ``--resume`` and every executor give the same).

* ``runs.csv`` — one row per run (case, instance, method, seed): status, metrics, error;
* ``results.csv`` / ``results.md`` — one row per (case, method label): the CT paper's Table 2
  columns (peak PSNR and its iteration, early-stopping PSNR and iteration, final PSNR), the
  validation pick (PSNR and iteration of the held-out-misfit minimum, when the ``val`` rule ran)
  plus SSIM
  (of the run's reconstruction: the early-stopped estimate when a stopping rule selected one, else
  the final one), final SSIM, wall time and iterations/s; each as mean and standard deviation over
  the completed runs of the row (seeds × images × noise seeds). The standard deviation is the
  sample one (``ddof=1``) and is left empty with a single run. ``failed`` counts failed runs and
  ``error`` gives the first one's message;
* ``psnr_curves.png`` — PSNR vs iteration from each run's ``history.csv``, one panel per case and
  one line per method (mean over the row's runs when they share their steps, with a ±1 std band);
  direct methods (one point, e.g. FBP) are drawn as a horizontal dashed line;
* ``misfit_curves.png`` — the held-out misfit (``history.csv``'s ``val`` column, the quantity the
  ``val`` rule picks by, no ground truth needed) vs iteration on a log scale, laid out like the PSNR
  curves; only runs with a validation split have one;
* ``recon_<case>.png`` — a figure grid per case (first instance, lowest seed): ground truth and the
  naive reconstruction, then one row per method with its peak / early-stopped / final estimates
  (``estimates.npz``); PSNR in each title;
* ``report.html`` — one self-contained page (images embedded as base64 PNG) with the table, the
  curves, the grids and the failures.
"""

from __future__ import annotations

from pathlib import Path

from ...io import save_text
from ..grid import RunSpec
from .html import html_report
from .plots import plot_misfit_curves, plot_psnr_curves, plot_recon_grid
from .tables import (METRICS, RUN_COLUMNS, aggregate, collect_runs, markdown_table, mean_std, result_columns,
                     write_csv)

__all__ = ["collect_runs", "aggregate", "mean_std", "markdown_table", "write_reports", "RUN_COLUMNS", "METRICS"]


def write_reports(out: Path, runs: list[RunSpec], *, title: str = "dipkit bench", description: str = "",
                  config_text: str = "") -> dict:
    """Write every report file into ``out``; returns ``{"rows", "results", "files"}``."""
    out = Path(out)
    rows = collect_runs(runs)
    results = aggregate(rows)
    write_csv(out / "runs.csv", rows, RUN_COLUMNS)
    write_csv(out / "results.csv", results, result_columns())
    md = f"# {title}\n\n" + (f"{description}\n\n" if description else "")
    md += ("Mean ± sample std over seeds and images; peak = best PSNR in the history (oracle), "
           "ES = early-stopping selection; SSIM of the run's reconstruction.\n\n")
    md += markdown_table(results)
    failures = [r for r in rows if r["status"] != "ok"]
    if failures:
        md += "\nFailed runs:\n\n" + "".join(
            f"- {r['case']} / {r['instance']} / {r['method']} / seed {r['seed']}: {r['error']}\n" for r in failures)
    save_text(out / "results.md", md)
    files = [out / "runs.csv", out / "results.csv", out / "results.md"]
    images: list[tuple[str, Path]] = []
    if plot_psnr_curves(out / "psnr_curves.png", rows):
        files.append(out / "psnr_curves.png")
        images.append(("PSNR vs iteration", out / "psnr_curves.png"))
    if plot_misfit_curves(out / "misfit_curves.png", rows):
        files.append(out / "misfit_curves.png")
        images.append(("Held-out misfit vs iteration", out / "misfit_curves.png"))
    problems = {(r.case, r.instance): r.problem for r in runs}
    for case in dict.fromkeys(r["case"] for r in rows):
        p = out / f"recon_{case}.png"
        if plot_recon_grid(p, case, rows, problems):
            files.append(p)
            images.append((f"Reconstructions: {case}", p))
    save_text(out / "report.html", html_report(title, description, results, rows, images, config_text))
    files.append(out / "report.html")
    return {"rows": rows, "results": results, "files": files}
