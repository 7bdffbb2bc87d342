"""The ``dipkit`` command line: simulate | reconstruct | bench | train-denoiser | methods | samples | nets | demo.

Bad input never shows a traceback: it prints one line ``dipkit: error: …`` on stderr and exits
with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path

from . import __version__
from .errors import DipkitError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and raise DipkitError (exit 2)."""

    def error(self, message):  # noqa: D401
        raise DipkitError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text}")
    return v


#: verbs implemented in other modules: ``verb -> (module, help)``; each module provides
#: ``add_arguments(parser)`` and ``run(args) -> int`` (and may raise DipkitError).
EXTENSION_VERBS: dict[str, tuple[str, str]] = {
    "bench": ("dipkit.bench.cli", "run a benchmark grid (cases × methods × seeds) and write tables, plots, report"),
    "train-denoiser": ("dipkit.priors.train", "train the small CNN denoiser shipped as denoiser 'learned'"),
}


def build_parser() -> argparse.ArgumentParser:
    from .tasks import SIMULATE_OPTIONS, TASKS

    p = _Parser(prog="dipkit", description="Deep Image Prior reconstructions from a single measurement.")
    p.add_argument("--version", action="version", version=f"dipkit {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    s = sub.add_parser("simulate", help="simulate a problem (measurement + operator) from an image",
                       description="Simulate y = A x + noise from an image and save it as a problem file.")
    s.add_argument("--task", required=True, choices=list(TASKS), help="; ".join(
        f"{t.name}: {t.description}" for t in TASKS.values()))
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="image file: PNG/JPEG/TIFF, NPY, or DICOM (windowed HU, see docs)")
    src.add_argument("--sample", help="a bundled sample by name (see 'dipkit samples')")
    s.add_argument("--size", type=_positive_int, default=128, help="resize to N×N with anti-aliasing (default 128)")
    types = {"positive_int": _positive_int, "nonneg_float": _nonneg_float, "int": int, "float": float, "str": str}
    for opt, (kind, help_) in SIMULATE_OPTIONS.items():
        s.add_argument("--" + opt.replace("_", "-"), dest=opt, type=types.get(kind, kind), default=None,
                       help=help_)
    s.add_argument("--seed", type=int, default=0, help="seed of the noise and of random masks (default 0)")
    s.add_argument("--out", required=True, help="problem file to write (.npz)")

    r = sub.add_parser("reconstruct", help="reconstruct a problem with a method",
                       description="Reconstruct a problem file with one method and write a run directory.")
    r.add_argument("problem", help="problem file written by 'dipkit simulate'")
    r.add_argument("--method", help="method name (see 'dipkit methods'; default dip)")
    r.add_argument("--iterations", type=_positive_int, help="gradient steps (default 3000)")
    r.add_argument("--seed", type=int, help="seed of network init, input and per-step noise (default 0)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto uses a GPU when there is one (default)")
    r.add_argument("--early-stop", metavar="RULE",
                   help="stopping rule: 'wmv' (stop) or 'wmv:record' (only record the selection); 'none'")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting: method hyper-parameters (lr=1e-4, alpha=…), net.NAME, "
                        "input.kind/channels/std/perturb, early_stop.window/patience/delta, log_every, precision")
    r.add_argument("--config", help="YAML config (e.g. a run's config.yaml); --set and flags override it")
    r.add_argument("--out", required=True, help="run directory to write")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("methods", help="list the methods with a one-line description and reference")
    sub.add_parser("samples", help="list the bundled sample images")
    sub.add_parser("nets", help="list the network presets")

    for verb, (module, help_) in EXTENSION_VERBS.items():
        mod = importlib.import_module(module)
        e = sub.add_parser(verb, help=help_, description=getattr(mod, "DESCRIPTION", help_))
        mod.add_arguments(e)

    d = sub.add_parser("demo", help="the main job on a bundled sample (a few minutes on a CPU)",
                       description="Simulate CT from a real CT slice (30 views, 2%% noise, 128²) and reconstruct "
                                   "it with fbp, tv and dip with early stopping; writes run dirs and a summary.")
    d.add_argument("--out", default="dipkit-demo", help="output directory (default ./dipkit-demo)")
    d.add_argument("--iterations", type=_positive_int, default=2000, help="DIP steps (default 2000)")
    d.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    d.add_argument("--bench", action="store_true",
                   help="instead: run the 'quick' bench preset (fbp, tv, dip, dip-tv, aseqdip on 64² CT) into OUT/bench")
    d.add_argument("--quiet", action="store_true")
    return p


# ---------------------------------------------------------------------- verbs
def _simulate(args) -> int:
    from .io import load_image_source
    from .tasks import get_task

    from .tasks import SIMULATE_OPTIONS

    task = get_task(args.task)
    given = {k: getattr(args, k) for k in SIMULATE_OPTIONS if getattr(args, k, None) is not None}
    wrong = sorted(set(given) - set(task.options))
    if wrong:
        raise DipkitError(f"task {task.name!r} does not take " + ", ".join("--" + w.replace("_", "-") for w in wrong)
                          + f" (it takes: {', '.join('--' + o.replace('_', '-') for o in task.options) or 'none'})")
    image, info = load_image_source(args.image, args.sample, size=args.size, channels=task.channels)
    problem = task.simulate(image, seed=args.seed, **given)
    problem.meta["source"] = info
    out = problem.save(args.out)
    opts = ", ".join(f"{k} {v}" for k, v in given.items())
    sigma = problem.meta.get("noise_sigma")
    print(f"wrote {out}  ({args.task}, image {'×'.join(map(str, image.shape[1:]))}"
          + (f", {opts}" if opts else "") + (f", noise σ = {sigma:.4g}" if sigma is not None else "") + ")")
    return 0


def _build_config(args):
    from .config import RunConfig, load_config, parse_overrides

    cfg = RunConfig()
    if args.config:
        cfg.update(load_config(args.config), source=str(args.config))
    for flag, key in (("method", "method"), ("iterations", "iterations"), ("seed", "seed"), ("device", "device")):
        v = getattr(args, flag)
        if v is not None:
            cfg.set(key, v)
    if args.early_stop is not None:
        cfg.early_stop.rule = None if args.early_stop in ("none", "off", "") else args.early_stop
    for key, value in parse_overrides(args.set):
        cfg.set(key, value)
    cfg.validate()
    from .methods import make_method
    from .nets import build_net  # noqa: F401  (validate net options early)

    make_method(cfg.method, **cfg.params)
    return cfg


def _summary(res) -> str:
    parts = [f"{res['method']}:"]
    if res.get("psnr") is not None:
        parts.append(f"PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.3f}")
    if res.get("peak", {}).get("psnr") is not None and res.get("iterations"):
        parts.append(f"(peak {res['peak']['psnr']:.2f} dB @ {res['peak']['iteration']})")
    es = res.get("early_stop")
    if es and es.get("iteration") is not None:
        parts.append(f"early stop @ {es['iteration']}")
    if res.get("iterations_per_s"):
        parts.append(f"{res['iterations']} it, {res['iterations_per_s']:.1f} it/s")
    return " ".join(parts)


def _reconstruct(args) -> int:
    from .problem import Problem
    from .runner import reconstruct

    cfg = _build_config(args)
    problem = Problem.load(args.problem)
    res = reconstruct(problem, cfg, args.out, quiet=args.quiet)
    print(_summary(res))
    print(f"wrote {args.out}")
    return 0


def _methods(args) -> int:
    from .methods import METHODS

    # the family's order (CT paper Table 1), then any method registered by a plug-in
    order = ["dip", "dip-tv", "dip-tv-hqs", "dip-wtv-admm", "dip-constrained", "deepred", "dip-denoiser-hqs",
             "dip-denoiser-admm", "dip-admm-v1", "dip-admm-v2", "self-guided", "aseqdip", "sgld",
             "naive", "fbp", "tv", "pnp-admm"]
    names = [n for n in order if n in METHODS] + sorted(n for n in METHODS if n not in order)
    width = max(len(n) for n in names)
    for name in names:
        cls = METHODS[name]
        print(f"{name:<{width}}  {cls.description}")
        ref = cls.reference
        if cls.algorithm and cls.algorithm not in ref:
            ref += f" [{cls.algorithm}]"
        print(f"{'':<{width}}  ref: {ref}")
    return 0


def _samples(args) -> int:
    from .io import list_samples

    samples = list_samples()
    width = max(map(len, samples))
    for name, desc in samples.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def _nets(args) -> int:
    from .nets import list_nets

    for name, desc in list_nets().items():
        print(f"{name:<12} {desc}")
    return 0


def _demo(args) -> int:
    from .config import RunConfig
    from .io import load_image_source, save_text
    from .runner import reconstruct
    from .tasks import get_task

    out = Path(args.out)
    if args.bench:
        from .bench import preset_path, run_bench

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
        # the small CPU U-Net wants a larger step than the paper's 1e-4 (which is for unet-paper)
        ("dip", {"iterations": args.iterations, "params": {"lr": 1e-3},
                 "early_stop": {"rule": "wmv:record", "patience": 500}}),
    ]
    lines = ["| method | PSNR [dB] | SSIM | peak PSNR (iter) | early stop (iter) | it/s |", "|---|---|---|---|---|---|"]
    for name, extra in runs:
        cfg = RunConfig.from_dict({"method": name, "device": args.device, **extra})
        res = reconstruct(problem, cfg, out / name, quiet=args.quiet)
        print(_summary(res))
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


VERBS = {"simulate": _simulate, "reconstruct": _reconstruct, "methods": _methods, "samples": _samples,
         "nets": _nets, "demo": _demo}


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.verb:
            parser.print_help()
            return 2
        if args.verb in EXTENSION_VERBS:
            return importlib.import_module(EXTENSION_VERBS[args.verb][0]).run(args)
        return VERBS[args.verb](args)
    except DipkitError as exc:
        msg = " ".join(str(exc).split())
        print(f"dipkit: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dipkit: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"dipkit: error: {exc.strerror or exc}"
              + (f": {exc.filename}" if getattr(exc, "filename", None) else ""), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
