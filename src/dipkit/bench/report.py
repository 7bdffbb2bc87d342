r"""Bench outputs, built from the run dirs alone (so ``--resume`` and every executor give the same).

* ``runs.csv`` — one row per run (case, instance, method, seed): status, metrics, error;
* ``results.csv`` / ``results.md`` — one row per (case, method label): the CT paper's Table 2
  columns (peak PSNR and its iteration, early-stopping PSNR and iteration, final PSNR) plus SSIM
  (of the run's reconstruction: the early-stopped estimate when a stopping rule selected one, else
  the final one), final SSIM, wall time and iterations/s; each as mean and standard deviation over
  the completed runs of the row (seeds × images × noise seeds). The standard deviation is the
  sample one (``ddof=1``) and is left empty with a single run. ``failed`` counts failed runs and
  ``error`` gives the first one's message;
* ``psnr_curves.png`` — PSNR vs iteration from each run's ``history.csv``, one panel per case and
  one line per method (mean over the row's runs when they share their steps, with a ±1 std band);
  direct methods (one point, e.g. FBP) are drawn as a horizontal dashed line;
* ``recon_<case>.png`` — a figure grid per case (first instance, lowest seed): ground truth and the
  naive reconstruction, then one row per method with its peak / early-stopped / final estimates
  (``estimates.npz``); PSNR in each title;
* ``report.html`` — one self-contained page (images embedded as base64 PNG) with the table, the
  curves, the grids and the failures.
"""

from __future__ import annotations

import base64
import csv
import html
import io as _io
import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..io import save_figure, save_text
from .grid import RunSpec, load_naive

__all__ = ["collect_runs", "aggregate", "mean_std", "write_reports", "RUN_COLUMNS", "METRICS"]

#: aggregated metrics: (column, metrics.json path, markdown header, format)
METRICS: list[tuple[str, tuple[str, ...], str, str]] = [
    ("peak_psnr", ("peak", "psnr"), "peak PSNR", ".2f"),
    ("peak_iter", ("peak", "iteration"), "peak iter.", ".0f"),
    ("es_psnr", ("early_stop", "psnr"), "ES PSNR", ".2f"),
    ("es_iter", ("early_stop", "iteration"), "ES iter.", ".0f"),
    ("final_psnr", ("final", "psnr"), "final PSNR", ".2f"),
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


def _error_of(run_dir: Path) -> str | None:
    try:
        lines = [ln.strip() for ln in (run_dir / "error.txt").read_text(encoding="utf-8").splitlines()]
    except OSError:
        return None
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else "failed"


def collect_runs(runs: Iterable[RunSpec]) -> list[dict]:
    """One record per planned run, read from its run dir (``status``: ok, failed or missing)."""
    rows = []
    for spec in runs:
        d = Path(spec.out)
        row: dict[str, Any] = {"case": spec.case, "task": spec.task, "instance": spec.instance,
                               "method": spec.label, "method_name": spec.method, "seed": spec.seed,
                               "run_dir": str(d), "error": None, "iterations": None, "psnr": None}
        metrics = None
        if (d / "metrics.json").is_file():
            try:
                metrics = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                metrics = None
        if metrics is not None:
            row["status"] = "ok"
            row["iterations"] = metrics.get("iterations")
            row["psnr"] = _get(metrics, ("psnr",))
            for col, path, _, _ in METRICS:
                row[col] = _get(metrics, path)
            if row["iterations"] is None:  # a direct method (FBP): no iteration to speak of
                row["peak_iter"] = None
        else:
            err = _error_of(d)
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


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
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


def _fmt(mean, std, fmt: str) -> str:
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
        cells = [r["case"], r["method"]] + [_fmt(r[f"{c}_mean"], r[f"{c}_std"], f) for c, _, _, f in METRICS]
        runs = str(r["runs"]) + (f" ({r['failed']} failed)" if r["failed"] else "")
        lines.append("| " + " | ".join(cells + [runs]) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_history(run_dir: str) -> dict[str, np.ndarray] | None:
    p = Path(run_dir) / "history.csv"
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError:
        return None
    if len(rows) < 2:
        return None
    head = rows[0]
    try:
        cols = {h: np.array([float(r[i]) if r[i] not in ("", "nan") else np.nan for r in rows[1:]])
                for i, h in enumerate(head)}
    except (ValueError, IndexError):
        return None
    return cols if "step" in cols and "psnr" in cols else None


def plot_psnr_curves(path: Path, rows: list[dict]) -> bool:
    """``psnr_curves.png``; False (nothing written) when no run has a PSNR history."""
    cases = list(dict.fromkeys(r["case"] for r in rows))
    curves: dict[str, dict[str, list[dict]]] = {c: {} for c in cases}
    any_curve = False
    for r in rows:
        if r["status"] != "ok":
            continue
        h = _read_history(r["run_dir"])
        if h is not None:
            curves[r["case"]].setdefault(r["method"], []).append(h)
            any_curve = True
    if not any_curve:
        return False
    plt = _plt()
    n = len(cases)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), dpi=110, squeeze=False)
    for ax, case in zip(axes.flat, cases):
        for k, (method, hs) in enumerate(curves[case].items()):
            color = f"C{k % 10}"
            if all(len(h["step"]) == 1 for h in hs):
                ax.axhline(float(np.nanmean([h["psnr"][0] for h in hs])), color=color, ls="--", lw=1.0,
                           label=method)
                continue
            same = all(len(h["step"]) == len(hs[0]["step"]) and np.array_equal(h["step"], hs[0]["step"])
                       for h in hs)
            if same:
                ps = np.stack([h["psnr"] for h in hs])
                mean = np.nanmean(ps, 0)
                ax.plot(hs[0]["step"], mean, color=color, lw=1.2, label=method + (f" (n={len(hs)})" if len(hs) > 1 else ""))
                if len(hs) > 1:
                    std = np.nanstd(ps, 0, ddof=1)
                    ax.fill_between(hs[0]["step"], mean - std, mean + std, color=color, alpha=0.15, lw=0)
            else:
                for j, h in enumerate(hs):
                    ax.plot(h["step"], h["psnr"], color=color, lw=0.9, alpha=0.8, label=method if j == 0 else None)
        ax.set_title(case, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("PSNR [dB]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)
    return True


def _display(img: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` → something imshow draws: gray, RGB, or the magnitude of a 2-channel complex image."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 4:
        img = img[0]
    if img.ndim == 2:
        return img
    if img.shape[0] == 1:
        return img[0]
    if img.shape[0] == 2:
        return np.sqrt(img[0] ** 2 + img[1] ** 2)
    if img.shape[0] == 3:
        return np.moveaxis(img, 0, -1)
    return img[0]


def _psnr_np(x: np.ndarray, ref: np.ndarray) -> float | None:
    if x.shape != ref.shape:
        return None
    mse = float(np.mean((x.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-30))


def plot_recon_grid(path: Path, case: str, rows: list[dict], problems: dict[tuple[str, str], str]) -> bool:
    """The reconstruction grid of ``case`` (see module docs); False when there is nothing to show."""
    from ..problem import Problem

    ok = [r for r in rows if r["case"] == case and r["status"] == "ok"]
    if not ok:
        return False
    inst = ok[0]["instance"]
    chosen: dict[str, dict] = {}
    for r in sorted(ok, key=lambda r: r["seed"]):
        if r["instance"] == inst and r["method"] not in chosen:
            chosen[r["method"]] = r
    problem_path = problems[(case, inst)]
    gt = naive = None
    try:
        problem = Problem.load(problem_path)
        if problem.x_true is not None:
            gt = problem.x_true[0].numpy()
    except Exception:  # noqa: BLE001
        problem = None
    naive = load_naive(problem_path)
    vmin, vmax = 0.0, 1.0
    if gt is not None:
        g = _display(gt)
        vmin, vmax = float(np.min(g)), float(np.max(g))
        if vmax <= vmin:
            vmax = vmin + 1.0
    plt = _plt()
    cols = ["peak", "early_stop", "final"]
    titles = {"peak": "peak", "early_stop": "early stop", "final": "final"}
    n_rows = 1 + len(chosen)
    fig, axes = plt.subplots(n_rows, 3, figsize=(3 * 2.4, n_rows * 2.5), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)

    def show(ax, img, title):
        d = _display(img)
        kw = {"cmap": "gray"} if d.ndim == 2 else {}
        if d.ndim == 3:
            d = np.clip((d - vmin) / (vmax - vmin), 0, 1)
            ax.imshow(d, **kw)
        else:
            ax.imshow(d, vmin=vmin, vmax=vmax, **kw)
        ax.set_title(title, fontsize=7)

    if gt is not None:
        show(axes[0, 0], gt, "ground truth")
    if naive is not None:
        p = _psnr_np(naive, gt) if gt is not None else None
        show(axes[0, 1], naive, "naive" + (f" {p:.2f} dB" if p is not None else ""))
    axes[0, 2].text(0.02, 0.5, f"{case}\n{inst}", fontsize=7, va="center", transform=axes[0, 2].transAxes)
    for i, (method, r) in enumerate(chosen.items(), start=1):
        try:
            with np.load(Path(r["run_dir"]) / "estimates.npz", allow_pickle=False) as z:
                est = {k: np.array(z[k]) for k in z.files}
        except (OSError, ValueError):
            est = {}
        psnrs = {"peak": r["peak_psnr"], "early_stop": r["es_psnr"], "final": r["final_psnr"]}
        iters = {"peak": r["peak_iter"], "early_stop": r["es_iter"], "final": r["iterations"]}
        axes[i, 0].set_ylabel(method, fontsize=8)
        for j, key in enumerate(cols):
            if key not in est:
                axes[i, j].text(0.5, 0.5, "–", ha="center", va="center", transform=axes[i, j].transAxes)
                axes[i, j].set_title(titles[key], fontsize=7)
                continue
            t = titles[key]
            if iters[key] is not None:
                t += f" @{int(iters[key])}"
            if psnrs[key] is not None:
                t += f" {psnrs[key]:.2f} dB"
            show(axes[i, j], est[key], t)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------- HTML
def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def html_report(title: str, description: str, results: list[dict], rows: list[dict], images: list[tuple[str, Path]],
                config_text: str) -> str:
    e = html.escape
    head = ["case", "method"] + [m[2] for m in METRICS] + ["runs"]
    trs = []
    for r in results:
        cells = [r["case"], r["method"]] + [_fmt(r[f"{c}_mean"], r[f"{c}_std"], f) for c, _, _, f in METRICS]
        runs = str(r["runs"]) + (f" ({r['failed']} failed)" if r["failed"] else "")
        cls = ' class="failed"' if r["failed"] else ""
        trs.append(f"<tr{cls}>" + "".join(f"<td>{e(str(c))}</td>" for c in cells + [runs]) + "</tr>")
    failures = [r for r in rows if r["status"] != "ok"]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;"
        "text-align:right}td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}"
        "tr.failed{background:#fdd}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto;"
        "font-size:12px}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>{e(description)}</p>" if description else "",
        "<h2>Results</h2>",
        "<p>Mean ± sample standard deviation over seeds and images. Peak: best PSNR in the history "
        "(an oracle); ES: the early-stopping rule's selection; SSIM: of the run's reconstruction "
        "(early-stopped when a rule selected one, else final).</p>",
        "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>", *trs, "</table>",
    ]
    for caption, p in images:
        if p.is_file():
            parts += [f"<h2>{e(caption)}</h2>", f'<img alt="{e(caption)}" src="data:image/png;base64,{_b64(p)}">']
    if failures:
        parts += ["<h2>Failed runs</h2>", "<ul>"]
        parts += [f"<li>{e(r['case'])} / {e(r['instance'])} / {e(r['method'])} / seed {r['seed']}: "
                  f"{e(str(r['error']))} <code>{e(r['run_dir'])}</code></li>" for r in failures]
        parts.append("</ul>")
    parts += ["<h2>Configuration</h2>", f"<pre>{e(config_text)}</pre>", "</body></html>"]
    return "\n".join(p for p in parts if p) + "\n"


def write_reports(out: Path, runs: list[RunSpec], *, title: str = "dipkit bench", description: str = "",
                  config_text: str = "") -> dict:
    """Write every report file into ``out``; returns ``{"rows", "results", "files"}``."""
    out = Path(out)
    rows = collect_runs(runs)
    results = aggregate(rows)
    _write_csv(out / "runs.csv", rows, RUN_COLUMNS)
    _write_csv(out / "results.csv", results, result_columns())
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
    problems = {(r.case, r.instance): r.problem for r in runs}
    for case in dict.fromkeys(r["case"] for r in rows):
        p = out / f"recon_{case}.png"
        if plot_recon_grid(p, case, rows, problems):
            files.append(p)
            images.append((f"Reconstructions: {case}", p))
    save_text(out / "report.html", html_report(title, description, results, rows, images, config_text))
    files.append(out / "report.html")
    return {"rows": rows, "results": results, "files": files}
