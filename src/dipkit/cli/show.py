"""``dipkit show RUN_DIR``: one run at a glance, ground truth or not.

Prints the run's summary (method, task, steps, why it stopped, the validation pick, PSNR/SSIM when
a ground truth was known, wall time), draws ``progress.png`` and ``overview.png`` when they are
missing (:func:`dipkit.run.rundir.write_pictures`; ``--redraw``: always) and writes ``RUN_DIR/show.html``, one
self-contained page (images embedded) with the pictures and the summary; ``--open`` opens it in a
browser. A directory that holds no complete run is a one-line error (exit 2).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DipkitError
from .common import Verb

__all__ = ["SHOW", "show_html", "summary_lines"]


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'dipkit reconstruct' (or bench, tune)")
    p.add_argument("--redraw", action="store_true", help="redraw progress.png and overview.png even if they exist")
    p.add_argument("--open", dest="open_browser", action="store_true", help="open show.html in a web browser")


def _num(v, spec: str) -> str | None:
    return None if not isinstance(v, (int, float)) or isinstance(v, bool) else format(v, spec)


def summary_lines(m: dict) -> list[tuple[str, str]]:
    """The run's summary as ``(label, text)`` lines, from its ``metrics.json``."""
    lines = [("method", f"{m.get('method', '?')}" + (f" (chose {m['auto']['chosen']})" if m.get("auto") else "")),
             ("task", str(m.get("task", "?")))]
    stop = m.get("stop") or {}
    steps = m.get("iterations")
    lines.append(("steps", "direct (no iterations)" if steps is None else str(steps)))
    if stop.get("reason") or m.get("stop_reason"):
        lines.append(("stopped", str(stop.get("reason") or m.get("stop_reason"))))
    val = (m.get("selections") or {}).get("val") or {}
    if val:
        text = f"step {val['iteration']}" if val.get("iteration") is not None else "per member"
        mis = _num(val.get("misfit"), ".4g")
        if mis:
            text += f", held-out misfit {mis}"
        if stop.get("still_improving"):
            text += " (still improving at the end: more steps might help)"
        lines.append(("val pick", text))
    for rule, sel in (m.get("selections") or {}).items():
        if rule != "val" and isinstance(sel, dict) and sel.get("iteration") is not None:
            lines.append((f"{rule} pick", f"step {sel['iteration']}"))
    refit = (m.get("validation") or {}).get("refit")
    if refit:
        lines.append(("refit", f"on all data for {refit.get('iterations')} steps"))
    if m.get("psnr") is not None:
        text = f"PSNR {m['psnr']:.2f} dB" + (f", SSIM {m['ssim']:.3f}" if m.get("ssim") is not None else "")
        peak = m.get("peak") or {}
        if peak.get("psnr") is not None and steps:
            text += f" (peak {peak['psnr']:.2f} dB @ {peak['iteration']}, an oracle)"
        lines.append(("quality", text))
    else:
        lines.append(("quality", "no ground truth: PSNR/SSIM unknown"))
    ens = m.get("ensemble") or {}
    if ens.get("members"):
        unc = m.get("uncertainty") or {}
        lines.append(("ensemble", f"{ens['members']} members"
                      + (f", mean per-pixel std {unc['mean_std']:.4g}" if unc.get("mean_std") is not None else "")))
    rb = m.get("rollbacks") or []
    if rb:
        lines.append(("rollbacks", f"{len(rb)}: " + ", ".join(f"step {r.get('step')} ({r.get('reason')})" for r in rb)))
    wall = _num(m.get("wall_time_s"), ".1f")
    if wall:
        rate = _num(m.get("iterations_per_s"), ".1f")
        lines.append(("wall time", f"{wall} s" + (f" ({rate} it/s)" if rate else "")
                      + (f" on {m['device']}" if m.get("device") else "")))
    return lines


def show_html(run_dir: Path, lines: list[tuple[str, str]], pictures: list[Path]) -> str:
    """``show.html``: the summary and the pictures (embedded as base64 PNG) on one page."""
    import html

    from ..bench.report.html import _b64

    e = html.escape
    title = f"dipkit run: {run_dir.name or run_dir}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             ("<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
              "font-size:14px}td{border:1px solid #ccc;padding:3px 8px}td:first-child{font-weight:bold}"
              "img{max-width:100%}</style></head><body>"),
             f"<h1>{e(title)}</h1>", f"<p><code>{e(str(run_dir.resolve()))}</code></p>", "<table>"]
    parts += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in lines]
    parts.append("</table>")
    captions = {"overview.png": "Overview: direct reconstruction, reconstruction, uncertainty, difference",
                "progress.png": "Progress: loss, held-out misfit (and PSNR) against the iteration"}
    for p in pictures:
        cap = captions.get(p.name, p.name)
        parts += [f"<h2>{e(cap)}</h2>", f'<img alt="{e(p.name)}" src="data:image/png;base64,{_b64(p)}">']
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _check(run_dir: Path) -> dict:
    from ..run.rundir import CHECKPOINT, read_error, read_metrics

    if not run_dir.exists():
        raise DipkitError(f"{run_dir}: no such directory")
    if not run_dir.is_dir():
        raise DipkitError(f"{run_dir} is not a directory (give a run directory written by 'dipkit reconstruct')")
    metrics = read_metrics(run_dir)
    if metrics is not None:
        return metrics
    err = read_error(run_dir)
    if err is not None:
        raise DipkitError(f"the run in {run_dir} failed: {err}")
    if (run_dir / CHECKPOINT).is_file():
        raise DipkitError(f"the run in {run_dir} is not complete (no metrics.json): resume it with "
                          "'dipkit reconstruct … --resume'")
    raise DipkitError(f"{run_dir} is not a dipkit run directory (no metrics.json)")


def run(args) -> int:
    from ..io import save_text
    from ..run.rundir import SHOW_HTML, write_pictures

    run_dir = Path(args.run_dir)
    metrics = _check(run_dir)
    lines = summary_lines(metrics)
    width = max(len(k) for k, _ in lines)
    print(f"{'run':<{width}}  {run_dir}")
    for k, v in lines:
        print(f"{k:<{width}}  {v}")
    pictures = write_pictures(run_dir, redraw=bool(args.redraw))
    page = run_dir / SHOW_HTML
    save_text(page, show_html(run_dir, lines, pictures))
    print(f"{'pictures':<{width}}  {', '.join(p.name for p in pictures) or 'none'}")
    print(f"wrote {page}")
    if args.open_browser:
        import webbrowser

        if not webbrowser.open(page.resolve().as_uri()):
            print(f"could not open a browser; open {page} yourself")
    return 0


SHOW = Verb("summarise a run directory, draw its pictures and write show.html", run, add_arguments,
            "Print a run's summary (method, task, steps, why it stopped, the validation pick, PSNR/SSIM when a "
            "ground truth was known, wall time), draw progress.png and overview.png when missing and write "
            "RUN_DIR/show.html, one self-contained page with the pictures and the summary.")
