"""``dipkit demo``: the main job on a bundled sample (a few minutes on a CPU)."""

from __future__ import annotations

from pathlib import Path

from .common import DEVICES, Verb, positive_int, summary

__all__ = ["DEMO"]


def add_arguments(d) -> None:
    d.add_argument("--out", default="dipkit-demo", help="output directory (default ./dipkit-demo)")
    d.add_argument("--iterations", type=positive_int, default=2000, help="DIP steps (default 2000)")
    d.add_argument("--device", choices=DEVICES, default="auto")
    d.add_argument("--bench", action="store_true",
                   help="instead: run the 'quick' bench preset (fbp, tv, dip, dip-tv, aseqdip on 64² CT) into OUT/bench")
    d.add_argument("--quiet", action="store_true")


def run(args) -> int:
    from ..config import RunConfig
    from ..io import load_image_source, save_text
    from ..runner import reconstruct
    from ..tasks import get_task

    out = Path(args.out)
    if args.bench:
        from ..bench import preset_path, run_bench

        res = run_bench(preset_path("quick"), out / "bench", log=None if args.quiet else print)
        print(f"wrote {out / 'bench'}/ (results.md, results.csv, psnr_curves.png, report.html, run dirs)")
        return 0 if not res["failed"] else 1
    image, info = load_image_source(None, "ct", size=128, channels="gray")
    problem = get_task("ct").simulate(image, views=30, noise_level=0.02, seed=0)
    problem.meta["source"] = info
    out.mkdir(parents=True, exist_ok=True)
    problem.save(out / "problem.npz")
    print(f"demo: real CT slice (pydicom CT_small), 128², 30 parallel views, 2% noise → {out / 'problem.npz'}")
    runs = [
        ("fbp", {}),
        ("tv", {}),
        # defaults only, as a user who sets nothing gets them: learning rate from the network
        # preset, FBP input, the ground-truth-free 'val' pick; ES-WMV recorded beside it
        ("dip", {"iterations": args.iterations, "early_stop": {"rule": "val,wmv:record"}}),
    ]
    lines = ["| method | PSNR [dB] | SSIM | peak PSNR (iter) | early stop (iter) | it/s |", "|---|---|---|---|---|---|"]
    for name, extra in runs:
        cfg = RunConfig.from_dict({"method": name, "device": args.device, **extra})
        res = reconstruct(problem, cfg, out / name, quiet=args.quiet)
        print(summary(res))
        pk = res["peak"]
        es = res["early_stop"] or {}
        lines.append(f"| {name} | {res['psnr']:.2f} | {res['ssim']:.3f} | "
                     + (f"{pk['psnr']:.2f} ({pk['iteration']})" if res["iterations"] else "–") + " | "
                     + (f"{es['psnr']:.2f} ({es['iteration']})" if es.get("iteration") is not None else "–")
                     + " | " + (f"{res['iterations_per_s']:.1f}" if res["iterations_per_s"] else "–") + " |")
    save_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}/ (problem.npz, fbp/, tv/, dip/, summary.md)")
    return 0


DEMO = Verb("the main job on a bundled sample (a few minutes on a CPU)", run, add_arguments,
            "Simulate CT from a real CT slice (30 views, 2%% noise, 128²) and reconstruct it with fbp, tv and "
            "dip with its defaults (self-validation picks the iterate); writes run dirs and a summary.")
