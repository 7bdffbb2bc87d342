"""Bench ``report.html``: one self-contained page (images embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .tables import METRICS, fmt_cell

__all__ = ["html_report"]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def html_report(title: str, description: str, results: list[dict], rows: list[dict], images: list[tuple[str, Path]],
                config_text: str) -> str:
    e = html.escape
    head = ["case", "method"] + [m[2] for m in METRICS] + ["runs"]
    trs = []
    for r in results:
        cells = [r["case"], r["method"]] + [fmt_cell(r[f"{c}_mean"], r[f"{c}_std"], f) for c, _, _, f in METRICS]
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
