"""CT paper Figure 9 on our CT case: PSNR vs iteration of a cold-started DIP, a warm-started DIP
(pre-trained on random ellipses, the Educated DIP, §5.1) and the Subspace DIP (§5.2, Adam and L-BFGS).

Run (not part of the tests; minutes on a 2-core CPU)::

    PYTHONPATH=src python benchmarks/warm_subspace.py --out /work/scratch/issue11-warm/bench

It does, in ``--out``:

1. ``ct64.npz`` = ``dipkit simulate --task ct --sample ct --size 64 --views 30 --noise-level 0.02 --seed 0``;
2. unless ``--weights`` is given, ``pre/ellipses.pt`` = ``dipkit pretrain --like ct64.npz --steps S
   --batch-size B --lr LR --checkpoints K`` (weights, trajectory, JSON record);
3. one run directory per variant (``runs/<name>``; vanilla DIP and the subspace DIP, all with the
   ``unet`` preset, FBP input, seed 0, last iterate, no early stopping):
   ``cold`` (random init, the ``unet`` preset's lr 3e-3), ``warm`` (net.weights, the same lr), ``warm-lr3e-4``
   and ``warm-lr1e-4`` (smaller steps keep the head start), ``subspace-adam``, ``subspace-lbfgs`` and
   ``subspace-adam-lev0.1`` (leverage-score mask keeping 10 % of the parameters);
4. ``warm_subspace.json`` (per variant: initial, peak, final PSNR, peak step, steps and seconds to come
   within 0.5 dB of the peak, overfitting = peak − final, wall time, the command) and
   ``warm_subspace.png`` (PSNR curves, Figure 9; training phantoms, FBP, the warm start's initial
   output and the peak reconstructions, Figure 8).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import torch

from dipkit.run.config import RunConfig
from dipkit.io import save_json
from dipkit.metrics import psnr
from dipkit.problem import Problem
from dipkit.run import reconstruct
from dipkit.run.runner import build_state, resolve_config

WITHIN_DB = 0.5


def variants(weights: Path, steps: int, lbfgs_steps: int, k: int) -> dict[str, dict]:
    w = str(weights)
    return {
        "cold": {"method": "dip", "iterations": steps, "set": {"ema": None}},
        "warm": {"method": "dip", "iterations": steps, "set": {"ema": None, "net.weights": w}},
        "warm-lr3e-4": {"method": "dip", "iterations": steps, "set": {"ema": None, "lr": 3e-4, "net.weights": w}},
        "warm-lr1e-4": {"method": "dip", "iterations": steps, "set": {"ema": None, "lr": 1e-4, "net.weights": w}},
        "subspace-adam": {"method": "subspace-dip", "iterations": steps,
                          "set": {"k": k, "optimizer": "adam", "net.weights": w}},
        "subspace-lbfgs": {"method": "subspace-dip", "iterations": lbfgs_steps,
                           "set": {"k": k, "optimizer": "lbfgs", "net.weights": w}},
        "subspace-adam-lev0.1": {"method": "subspace-dip", "iterations": steps,
                                 "set": {"k": k, "optimizer": "adam", "leverage": 0.1, "net.weights": w}},
    }


def config(spec: dict, seed: int) -> RunConfig:
    cfg = RunConfig(method=spec["method"], iterations=spec["iterations"], seed=seed, device="cpu", log_every=10)
    cfg.early_stop.rule = None
    cfg.checkpoint.every = 0
    for key, value in spec["set"].items():
        cfg.set(key, value, source="bench")
    return cfg


def command(problem_file: Path, spec: dict, out: Path, seed: int) -> str:
    parts = ["dipkit", "reconstruct", str(problem_file), "--method", spec["method"], "--iterations",
             str(spec["iterations"]), "--seed", str(seed), "--early-stop", "none", "--set", "log_every=10"]
    for key, value in spec["set"].items():
        parts += ["--set", f"{key}={'none' if value is None else value}"]
    return shlex.join([*parts, "--out", str(out)])


def initial_output(problem: Problem, cfg: RunConfig) -> torch.Tensor:
    """f_θ0(z) exactly as the run builds its network and input (seeded)."""
    method = cfg.validate()
    resolved = resolve_config(cfg, method, problem)
    state = build_state(method, problem, resolved, torch.device("cpu"))
    with torch.no_grad():
        return state.net(state.z)


def summarise(res, x0_psnr: float) -> dict:
    steps, curve = [int(s) for s in res.history["step"]], [float(p) for p in res.history["psnr"]]
    j = max(range(len(curve)), key=lambda i: curve[i])
    peak, peak_step = float(curve[j]), int(steps[j])
    within = next(int(s) for s, p in zip(steps, curve) if p >= peak - WITHIN_DB)
    per_step = res["wall_time_s"] / max(1, res["iterations"])
    return {"initial_psnr": round(x0_psnr, 2), "peak_psnr": round(peak, 2), "peak_step": peak_step,
            "final_psnr": round(float(res["final"]["psnr"]), 2), "iterations": res["iterations"],
            "overfit_db": round(peak - float(res["final"]["psnr"]), 2),
            "steps_within_0.5dB": within, "seconds_within_0.5dB": round(within * per_step, 1),
            "seconds_to_peak": round(peak_step * per_step, 1), "wall_time_s": round(res["wall_time_s"], 1),
            "ms_per_step": round(1000 * per_step, 1)}


def figure(path: Path, problem: Problem, results: dict, curves: dict, images: dict, phantoms: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dipkit.io import save_figure

    fig = plt.figure(figsize=(13, 7.5))
    ax = fig.add_subplot(2, 1, 1)
    for name, (steps, curve) in curves.items():
        r = results[name]
        ax.plot([0, *steps], [r["initial_psnr"], *curve], label=f"{name} (peak {r['peak_psnr']:.2f} dB @ "
                                                                  f"{r['peak_step']}, final {r['final_psnr']:.2f})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("PSNR [dB]")
    ax.set_title("CT 64², 30 views, 2 % noise (sample 'ct'): cold vs warm start vs subspace DIP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    panels = [("ellipse 1", phantoms[0]), ("ellipse 2", phantoms[1]),
              ("FBP (input)", problem.physics.A_dagger(problem.y)[0]), *images.items(),
              ("ground truth", problem.x_true[0])]
    for i, (title, img) in enumerate(panels):
        a = fig.add_subplot(2, len(panels), len(panels) + i + 1)
        a.imshow(img.detach().cpu().squeeze().numpy(), cmap="gray", vmin=0, vmax=1)
        a.set_title(title, fontsize=7)
        a.axis("off")
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights", help="pre-trained weights (default: pre-train into OUT/pre/ellipses.pt)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3000, help="DIP steps per run (default 3000)")
    ap.add_argument("--lbfgs-steps", type=int, default=1000, help="L-BFGS iterations (default 1000)")
    ap.add_argument("--k", type=int, default=16, help="subspace dimension (default 16)")
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--pretrain-batch", type=int, default=4)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--checkpoints", type=int, default=32)
    ap.add_argument("--only", nargs="+", help="run only these variants")
    ap.add_argument("--reuse", action="store_true", help="read back variants whose run directory is complete")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import dipkit
    from dipkit.io import load_image_source
    from dipkit.phantoms import random_ellipses

    problem_file = out / f"ct{args.size}.npz"
    image, info = load_image_source(None, "ct", size=args.size, channels="gray")
    problem = dipkit.simulate("ct", image, views=30, noise_level=0.02, seed=0)
    problem.meta["source"] = info
    problem.save(problem_file)
    problem = Problem.load(problem_file)
    record = {"problem": f"dipkit simulate --task ct --sample ct --size {args.size} --views 30 --noise-level 0.02 "
                         f"--seed 0 --out {problem_file}", "fbp_psnr": round(float(psnr(
                             problem.physics.A_dagger(problem.y), problem.x_true)), 2), "threads": args.threads}
    weights = Path(args.weights) if args.weights else out / "pre" / "ellipses.pt"
    if not args.weights:
        from dipkit.run.warmstart import pretrain

        t0 = time.perf_counter()
        rec = pretrain(weights, like=problem_file, steps=args.pretrain_steps, batch_size=args.pretrain_batch,
                       lr=args.pretrain_lr, checkpoints=args.checkpoints, seed=args.seed, threads=args.threads)
        print(f"pre-trained in {time.perf_counter() - t0:.0f} s: {rec['validation']}", flush=True)
    record["pretrain"] = json.loads(weights.with_suffix(".json").read_text())
    results, curves, images = {}, {}, {}
    for name, spec in variants(weights, args.steps, args.lbfgs_steps, args.k).items():
        if args.only and name not in args.only:
            continue
        cfg = config(spec, args.seed)
        x0 = initial_output(problem, cfg)
        if name == "warm":
            images["warm start f_θ0(FBP)"] = x0[0]
        run_dir = out / "runs" / name
        if args.reuse and (run_dir / "metrics.json").is_file():  # a finished run (e.g. by another process)
            from dipkit.run.rundir import RunResult, read_estimates, read_history, read_metrics

            res = RunResult(read_metrics(run_dir))
            res.history = {k: list(v) for k, v in read_history(run_dir).items()}
            res.estimates = {k: torch.as_tensor(v)[None] for k, v in read_estimates(run_dir).items()}
        else:
            res = reconstruct(problem, cfg, run_dir, quiet=True)
        results[name] = {**summarise(res, float(psnr(x0, problem.x_true))),
                         "command": command(problem_file, spec, run_dir, args.seed)}
        curves[name] = (res.history["step"], res.history["psnr"])
        if "peak" in res.estimates:
            images[f"{name} peak"] = res.estimates["peak"][0]
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "command"}), flush=True)
    record["results"] = results
    save_json(out / "warm_subspace.json", record)
    phantoms = random_ellipses(2, args.size, generator=torch.Generator().manual_seed(args.seed))
    figure(out / "warm_subspace.png", problem, results, curves, images, phantoms)
    print(f"wrote {out / 'warm_subspace.json'} and {out / 'warm_subspace.png'}")


if __name__ == "__main__":
    main()
