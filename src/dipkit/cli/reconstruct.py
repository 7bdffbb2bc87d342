"""``dipkit reconstruct``: reconstruct a problem file with one method into a run directory.

``--out DIR`` must be a new or empty directory unless ``--overwrite`` (which removes the old run's
files first). ``--resume DIR`` continues an interrupted run from its ``checkpoint.pt`` with the
run's own settings (the problem file is the one the run used, unless given).
"""

from __future__ import annotations

import argparse

from ..errors import DipkitError
from .common import DEVICES, Verb, positive_float, positive_int, summary

__all__ = ["RECONSTRUCT", "build_config"]

#: options that set up a run; --resume takes the run's own
_RUN_OPTIONS = ("method", "iterations", "max_iterations", "time_limit", "seed", "device", "early_stop", "ensemble",
                "combine", "data_consistency", "config")


def checkpoint_every(text: str):
    """An argparse type: ``auto`` or an integer ≥ 0 (0: no checkpoints)."""
    if text.strip().lower() == "auto":
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer ≥ 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer ≥ 0, got {v}")
    return v


def _combine(text: str):
    """An argparse type: ``stack`` or an integer > 0 (``--combine``)."""
    if text.strip().lower() == "stack":
        return "stack"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'stack' or a positive integer, got {text!r}") from None


def add_arguments(r) -> None:
    r.add_argument("problem", nargs="?", help="problem file written by 'dipkit simulate' (with --resume: optional, "
                                              "default the file the run used)")
    r.add_argument("--method", help="method name (see 'dipkit methods'; default dip), or 'auto': a portfolio of "
                                    "methods ranked by held-out misfit, the best one is the reconstruction")
    r.add_argument("--iterations", type=positive_int,
                   help="a fixed number of gradient steps (default: network methods stop themselves when the "
                        "held-out misfit has not improved for max(500, half the best step) steps; others run "
                        "their method's default, e.g. TV 500)")
    r.add_argument("--max-iterations", type=positive_int, metavar="N",
                   help="cap of a run that decides its own length (default 20000)")
    r.add_argument("--time-limit", type=positive_float, metavar="SECONDS",
                   help="stop after this much wall time, keeping the best iterate found so far")
    r.add_argument("--seed", type=int, help="seed of network init, input and per-step noise (default 0)")
    r.add_argument("--device", choices=DEVICES, help="auto uses a GPU when there is one (default)")
    r.add_argument("--early-stop", metavar="RULE",
                   help="stopping rule(s): 'val' (held-out misfit, no ground truth needed) or 'wmv' (running "
                        "variance) to stop, ':record' to only record the selection; several comma-separated "
                        "(the first one's selection is the reconstruction); 'none'")
    r.add_argument("--combine", type=_combine, metavar="stack|K",
                   help="with --method auto: 'stack' (default) returns the convex combination of the candidates "
                        "with the least held-out misfit when it beats the chosen one by auto.se standard errors; "
                        "K averages the K candidates with the least misfit; 1 returns the chosen one alone")
    r.add_argument("--data-consistency", choices=("auto", "shrink", "on", "off"),
                   help="project the returned image onto {x : A x = y} (CGLS): auto (default) when the "
                        "measurement is known to be noiseless (noise σ = 0, e.g. simulated inpainting; with "
                        "--method auto: as shrink); shrink: also part of the way when the noise level is known "
                        "and the step is mostly signal; on: the full projection always; off: never. The "
                        "iterates and their selection are unchanged")
    r.add_argument("--ensemble", type=positive_int, metavar="N",
                   help="N independently seeded reconstructions (seeds SEED…SEED+N−1) as one batched run: "
                        "writes their mean and the per-pixel std (uncertainty.npy/png); the members run "
                        "stacked (vectorised) where the method allows it, else in a loop (--set ensemble_mode), "
                        "in chunks when they do not fit the memory (--set ensemble_memory_gb)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting: method hyper-parameters (lr=1e-4, alpha=…), net.NAME, "
                        "input.kind/channels/std/perturb, early_stop.window/patience/smooth/delta, "
                        "validation.fraction/seed/refit/split (entries, views: CT, lines: MRI)/score (raw, ramp), "
                        "max_iterations, time_limit, schedule.kind/window/factor/floor/warmup (constant, plateau, cosine), "
                        "init.kind/steps/lr (random; tv: the network first fitted to the TV image), "
                        "auto.candidates/min_steps/eta/combine/refit/se, healing.enabled/max_rollbacks/jump_factor/window, "
                        "data.subset (stochastic DIP: share of CT views / MRI lines / image rows per step), "
                        "log_every, precision (auto: bf16 where the hardware does it natively, else fp32; fp32; bf16), "
                        "ensemble_mode (auto: stacked where valid, else loop; stacked; loop), ensemble_memory_gb "
                        "(GB the ensemble's members may use; default half the available memory), memory_format "
                        "(contiguous, default; channels_last: the network's layout)")
    r.add_argument("--config", help="YAML config (e.g. a run's config.yaml); --set and flags override it")
    r.add_argument("--out", help="run directory to write (new or empty, unless --overwrite)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the run in a non-empty --out (its old files are removed first)")
    r.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the interrupted run in RUN_DIR from its checkpoint.pt, with its own settings")
    r.add_argument("--checkpoint-every", type=checkpoint_every, default=argparse.SUPPRESS, metavar="N",
                   help="write RUN_DIR/checkpoint.pt every N steps; 0: never; auto (default): every ~60 s when "
                        "the run is expected to last over a minute")
    r.add_argument("--keep-checkpoint", action="store_true", help="keep checkpoint.pt after the run is complete")
    r.add_argument("--dicom", action="store_true",
                   help="also write reconstruction.dcm (CT from a DICOM source: HU, new UIDs, the source's geometry)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def build_config(args):
    """The :class:`~dipkit.run.config.RunConfig` of ``args`` (``--config``, then flags, then ``--set``)."""
    from ..run.config import RunConfig, parse_overrides

    cfg = RunConfig()
    if args.config:
        cfg.update_from_file(args.config)
    for key in ("method", "iterations", "max_iterations", "time_limit", "seed", "device", "ensemble",
                "data_consistency"):
        v = getattr(args, key)
        if v is not None:
            cfg.set(key, v)
    if args.early_stop is not None:
        cfg.set("early_stop.rule", args.early_stop)
    if getattr(args, "combine", None) is not None:
        cfg.set("auto.combine", args.combine)
    for key, value in parse_overrides(args.set):
        cfg.set(key, value)
    _checkpoint_flags(cfg, args)
    return cfg


def _checkpoint_flags(cfg, args) -> None:
    if hasattr(args, "checkpoint_every"):
        cfg.checkpoint.every = args.checkpoint_every
    if getattr(args, "keep_checkpoint", False):
        cfg.checkpoint.keep = True


def run(args) -> int:
    from ..problem import Problem
    from ..run import reconstruct

    if args.resume is not None:
        return _resume(args)
    if args.problem is None:
        raise DipkitError("reconstruct needs a problem file (or --resume RUN_DIR)")
    if args.out is None:
        raise DipkitError("reconstruct needs --out RUN_DIR")
    cfg = build_config(args)
    method = cfg.validate()  # checked (and built, once) before the problem is read
    from ..run.rundir import prepare_run_dir

    if not args.overwrite:
        prepare_run_dir(args.out, overwrite=False)  # refuse a non-empty --out before any work
    problem = Problem.load(args.problem)
    res = reconstruct(problem, cfg, args.out, quiet=args.quiet, method=method, overwrite=args.overwrite,
                      dicom=args.dicom)
    print(summary(res))
    print(f"wrote {args.out}")
    return 0


def _resume(args) -> int:
    """``--resume RUN_DIR``: the run's request and problem from its checkpoint, then continue it."""
    from pathlib import Path

    from ..run.config import RunConfig
    from ..engine.checkpoint import load_checkpoint
    from ..problem import Problem
    from ..run.rundir import CHECKPOINT, METRICS
    from ..run import reconstruct

    given = [f"--{k.replace('_', '-')}" for k in _RUN_OPTIONS if getattr(args, k, None) is not None]
    if args.set:
        given.append("--set")
    if given:
        raise DipkitError(f"--resume continues a run with its own settings; drop {', '.join(given)}")
    run_dir = Path(args.resume)
    if args.out is not None and Path(args.out).resolve() != run_dir.resolve():
        raise DipkitError("--resume writes into the run's own directory; drop --out (or give the same one)")
    if args.overwrite:
        raise DipkitError("--resume and --overwrite contradict each other")
    if not (run_dir / CHECKPOINT).is_file():
        if (run_dir / METRICS).is_file():
            raise DipkitError(f"the run in {run_dir} is already complete (nothing to resume)")
        raise DipkitError(f"nothing to resume in {run_dir}: no {CHECKPOINT}")
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    info = ckpt.get("problem") or {}
    path = args.problem or info.get("file")
    if path is None:
        raise DipkitError("the run's problem did not come from a file; give it: dipkit reconstruct PROBLEM "
                          f"--resume {run_dir}")
    problem = Problem.load(path)
    if info.get("sha256") and problem.file_sha256 != info["sha256"]:
        raise DipkitError(f"problem file {path} has changed since the run started (SHA-256 differs)")
    cfg = RunConfig.from_dict(ckpt["request"], source=f"checkpoint {run_dir / CHECKPOINT}")
    _checkpoint_flags(cfg, args)
    res = reconstruct(problem, cfg, run_dir, quiet=args.quiet, resume=True, dicom=args.dicom)
    print(summary(res))
    print(f"resumed and wrote {run_dir}")
    return 0


RECONSTRUCT = Verb("reconstruct a problem with a method", run, add_arguments,
                   "Reconstruct a problem file with one method and write a run directory.")
