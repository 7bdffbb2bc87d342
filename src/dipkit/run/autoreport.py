"""The tables of an ``auto`` run (:mod:`dipkit.run.auto`): ``selection.csv``'s rows and ``selection.md``."""

from __future__ import annotations

import json
import math

from .combine import fmt_weights as _fmt_weights
from .portfolio import CANDIDATES

__all__ = ["COLUMNS", "rows", "markdown", "fmt"]


def fmt(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.4g}"


COLUMNS = ["rank", "candidate", "method", "settings", "status", "misfit", "pick_iteration", "steps", "stop",
            "wall_s", "psnr", "ssim", "peak_psnr", "weight", "refit_steps", "refit_psnr", "refit_mean_psnr", "refit_wall_s"]


def rows(cands, ranked, chosen, rule=None, weights=None) -> list[dict]:
    rank = {c.label: i + 1 for i, c in enumerate(ranked)}
    rows = []
    for c in sorted(cands, key=lambda c: rank.get(c.label, len(cands) + 1)):
        r = c.result or {}
        settings = {}
        spec = CANDIDATES.get(c.label)
        if spec:
            settings = {k: v for k, v in spec.items() if k != "method"}
        status = c.status
        if c is chosen:
            status = "chosen" if c is ranked[0] else (
                f"chosen: {ranked[0].label} is within {rule['se']:g} SE (z = {rule['z']:.2f})")
        elif rule is not None and c is ranked[0] and rule.get("preferred") == chosen.label:
            status = f"least misfit, but within {rule['se']:g} SE of the simpler {chosen.label}"
        rows.append({"rank": rank.get(c.label), "candidate": c.label, "method": c.cfg.method,
                     "settings": json.dumps(settings) if settings else "",
                     "status": status if c.error is None else f"failed: {c.error}",
                     "misfit": c.misfit() if c.error is None else None,
                     "pick_iteration": (r.get("early_stop") or {}).get("iteration"),
                     "steps": c.steps if c.method is not None and c.method.uses_network else r.get("iterations"),
                     "stop": (r.get("stop") or {}).get("kind"),
                     "wall_s": None if c.run is None else float(c.run.wall) + (
                         0.0 if c.method is None or c.method.uses_network else float(r.get("wall_time_s") or 0.0)),
                     "psnr": r.get("psnr"), "ssim": r.get("ssim"), "peak_psnr": (r.get("peak") or {}).get("psnr"),
                     "weight": (weights or {}).get(c.label), "refit_steps": c.extra.get("refit", {}).get("iterations"),
                     "refit_psnr": c.extra.get("refit", {}).get("psnr"),
                     "refit_mean_psnr": c.extra.get("refit", {}).get("mean_psnr"),
                     "refit_wall_s": c.extra.get("refit", {}).get("wall_s")})
    return rows


def markdown(rows: list[dict], chosen: str, combine: dict | None, total_steps: int, wall: float,
              rule: dict | None = None, refit: dict | None = None, times: dict | None = None,
              consistency: dict | None = None, returned_psnr: float | None = None) -> str:
    def f(v, spec):
        return "—" if v is None else format(v, spec)

    lines = ["| rank | candidate | settings | held-out misfit | pick (it) | steps | stop | time s | PSNR | SSIM | "
             "weight | refit: steps, time s, PSNR (mean with the pick) | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rf = "—" if r.get("refit_steps") is None else (
            f"{r['refit_steps']}, {f(r['refit_wall_s'], '.1f')}, {f(r['refit_psnr'], '.2f')} "
            f"({f(r.get('refit_mean_psnr'), '.2f')})")
        lines.append(f"| {f(r['rank'], 'd')} | {r['candidate']} | {r['settings'] or '—'} | {f(r['misfit'], '.4g')} | "
                     f"{f(r['pick_iteration'], 'd')} | {f(r['steps'], 'd')} | {r['stop'] or '—'} | "
                     f"{f(r['wall_s'], '.1f')} | {f(r['psnr'], '.2f')} | {f(r['ssim'], '.3f')} | "
                     f"{f(r.get('weight'), '.2f')} | {rf} | {r['status']} |")
    if rule is not None and rule["preferred"] == chosen and rule["best"] != chosen:
        why = (f"Chosen: **{chosen}** — {rule['best']}'s held-out misfit is lower by {-rule['difference']:.3g}, "
               f"within {rule['se']:g} standard error(s) of the difference (z = {rule['z']:.2f} over "
               f"{rule['entries']} entries), so the simpler candidate is kept (one-standard-error rule).")
    else:
        why = f"Chosen by the least held-out misfit: **{chosen}**."
        if rule is not None:
            why += (f" Its misfit is below {rule['baseline']}'s by {-rule['z']:.2f} standard errors of the paired "
                    f"difference (needed: more than {rule['se']:g}).")
    lines += ["", f"{why} {total_steps} network steps in all, {wall:.0f} s."]
    psnr = "" if not combine or combine.get("psnr") is None else f", PSNR {combine['psnr']:.2f} dB"
    if combine and combine["kind"] == "mean":
        lines.append(f"Combined: the mean of the {combine['k']} best ({', '.join(combine['candidates'])}), held-out "
                     f"misfit {combine['misfit']:.4g} (of the images fitted without the held-out entries){psnr}.")
    elif combine:
        lines.append(f"Stacking (the convex combination with the least held-out misfit): {_fmt_weights(combine['weights'])}"
                     f", held-out misfit {combine['misfit']:.4g}, z = {combine['z']:.2f} against {combine['versus']} "
                     + (f"(needed: below −{combine['se']:g}): **returned**{psnr}." if combine["used"] else
                        f"(needed: below −{combine['se']:g}): not used, {combine['versus']} returned."))
    done = {lab: r for lab, r in (refit or {}).items() if "iterations" in r}
    if done:
        mode = next(iter(done.values()))["mode"]
        lines.append("Refit on all the data (the candidate returned, for its pick's steps; returned: "
                     + ("the mean of pick and refit" if mode == "mean" else "the refit") + "): "
                     + ", ".join(f"{lab} {r['iterations']} steps, {r['wall_s']:.0f} s"
                                 + ("" if r.get("psnr") is None else
                                    f", refit {r['psnr']:.2f} dB, mean {r['mean_psnr']:.2f} dB")
                                 for lab, r in done.items()) + ".")
    if consistency and consistency.get("applied"):
        lines.append(f"Returned image projected onto the data ({consistency['reason']}; "
                     f"{consistency['iterations']} CGLS iteration(s))"
                     + ("." if consistency.get("psnr_before") is None or returned_psnr is None else
                        f": PSNR {consistency['psnr_before']:.2f} dB before, {returned_psnr:.2f} dB after."))
    if times:
        lines.append("Time by stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()) + ".")
    return "\n".join(lines) + "\n"
