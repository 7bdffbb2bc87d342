"""``dipkit demo``: the main job on a bundled sample (a few minutes on a CPU)."""

from __future__ import annotations

from pathlib import Path

from .common import DEVICES, Verb, positive_int, summary

__all__ = ["DEMO"]


def add_arguments(d) -> None:
    d.add_argument("--out", default="dipkit-demo", help="output directory (default ./dipkit-demo)")
    d.add_argument("--iterations", type=positive_int, default=None,
                   help="a fixed number of DIP steps (default: the runs decide their own length)")
    d.add_argument("--device", choices=DEVICES, default="auto")
    d.add_argument("--bench", action="store_true",
                   help="instead: run the 'quick' bench preset (fbp, tv, dip, dip-tv, aseqdip on 64² CT) into OUT/bench")
    d.add_argument("--quiet", action="store_true")


def run(args) -> int:
    from ..run.config import RunConfig
    from ..io import load_image_source, save_text
    from ..run import reconstruct
    from ..tasks import get_task

    out = Path(args.out)
    if args.bench:
        from ..bench import preset_path, run_bench

        res = run_bench(preset_path("quick"), out / "bench", log=None if args.quiet else print)
        print(f"wrote {out / 'bench'}/ (results.md, results.csv, psnr_curves.png, misfit_curves.png, report.html, run dirs)")
        return 0 if not res["failed"] else 1
    image, info = load_image_source(None, "ct", size=128, channels="gray")
    problem = get_task("ct").simulate(image, views=30, noise_level=0.02, seed=0)
    problem.meta["source"] = info
    out.mkdir(parents=True, exist_ok=True)
    problem.save(out / "problem.npz")
    print(f"demo: real CT slice (pydicom CT_small), 128², 30 parallel views, 2% noise → {out / 'problem.npz'}")
    fixed = {} if args.iterations is None else {"iterations": args.iterations}
    runs = [
        ("fbp", {}),
        ("tv", {}),  # α chosen by held-out misfit
        # defaults only, as a user who sets nothing gets them: learning rate from the network preset,
        # FBP input, the run stops itself when the held-out misfit has not improved for a while (the
        # 'val' pick is the reconstruction), the learning rate halves on plateaus; ES-WMV recorded beside
        ("dip", {**fixed, "early_stop": {"rule": "val,wmv:record"}}),
        # the method chosen by held-out misfit among a portfolio (TV, DIP variants), by successive halving
        ("auto", fixed),
    ]
    lines = ["| method | PSNR [dB] | SSIM | peak PSNR (iter) | pick (iter) | steps | stop | time [s] |",
             "|---|---|---|---|---|---|---|---|"]
    results = {}
    for name, extra in runs:
        cfg = RunConfig.from_dict({"method": name, "device": args.device, **extra})
        res = reconstruct(problem, cfg, out / name, quiet=args.quiet)
        results[name] = res
        print(summary(res))
        pk = res["peak"]
        es = res["early_stop"] or {}
        label = name if name != "auto" else f"auto → {res['auto']['chosen']}"
        steps = res["auto"]["total_steps"] if name == "auto" else res["iterations"]
        lines.append(f"| {label} | {res['psnr']:.2f} | {res['ssim']:.3f} | "
                     + (f"{pk['psnr']:.2f} ({pk['iteration']})" if res["iterations"] else "–") + " | "
                     + (f"{es['psnr']:.2f} ({es['iteration']})" if es.get("iteration") is not None else "–")
                     + f" | {steps or '–'} | {(res.get('stop') or {}).get('kind') or '–'} | {res['wall_time_s']:.0f} |")
    best = max(results, key=lambda n: results[n]["psnr"])
    verdict = winner_sentence(results, best)
    save_text(out / "summary.md", "\n".join(lines) + "\n\n" + verdict + "\n")
    print("\n".join(lines))
    print(verdict)
    print(f"wrote {out}/ (problem.npz, fbp/, tv/, dip/, auto/, summary.md)")
    return 0


def winner_sentence(results: dict, best: str) -> str:
    """One plain sentence: which method won (by the ground truth the demo knows) and by how much."""
    order = sorted(results, key=lambda n: -results[n]["psnr"])
    runner_up = order[1] if len(order) > 1 else None
    who = best if best != "auto" else f"auto (which chose {results['auto']['auto']['chosen']})"
    text = f"Winner: {who} with {results[best]['psnr']:.2f} dB"
    if runner_up is not None:
        text += f", {results[best]['psnr'] - results[runner_up]['psnr']:.2f} dB ahead of {runner_up}"
    if "tv" in results and "dip" in results:
        d = results["dip"]["psnr"] - results["tv"]["psnr"]
        text += (f". DIP {'beats' if d >= 0 else 'loses to'} TV by {abs(d):.2f} dB on this image "
                 "(PSNR against the ground truth, which the methods never saw).")
    return text


DEMO = Verb("the main job on a bundled sample (a few minutes on a CPU)", run, add_arguments,
            "Simulate CT from a real CT slice (30 views, 2%% noise, 128²) and reconstruct it with fbp, tv, dip "
            "and auto (the method chosen by held-out misfit) with their defaults; writes run dirs and a "
            "summary that says which won.")
