"""``dipkit reconstruct``: reconstruct a problem file with one method into a run directory."""

from __future__ import annotations

from .common import DEVICES, Verb, positive_int, summary

__all__ = ["RECONSTRUCT", "build_config"]


def add_arguments(r) -> None:
    r.add_argument("problem", help="problem file written by 'dipkit simulate'")
    r.add_argument("--method", help="method name (see 'dipkit methods'; default dip)")
    r.add_argument("--iterations", type=positive_int, help="gradient steps (default: the method's, e.g. 3000)")
    r.add_argument("--seed", type=int, help="seed of network init, input and per-step noise (default 0)")
    r.add_argument("--device", choices=DEVICES, help="auto uses a GPU when there is one (default)")
    r.add_argument("--early-stop", metavar="RULE",
                   help="stopping rule(s): 'val' (held-out misfit, no ground truth needed) or 'wmv' (running "
                        "variance) to stop, ':record' to only record the selection; several comma-separated "
                        "(the first one's selection is the reconstruction); 'none'")
    r.add_argument("--ensemble", type=positive_int, metavar="N",
                   help="N independently seeded reconstructions (seeds SEED…SEED+N−1) as one batched run: "
                        "writes their mean and the per-pixel std (uncertainty.npy/png)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting: method hyper-parameters (lr=1e-4, alpha=…), net.NAME, "
                        "input.kind/channels/std/perturb, early_stop.window/patience/delta, "
                        "validation.fraction/seed/refit, log_every, precision")
    r.add_argument("--config", help="YAML config (e.g. a run's config.yaml); --set and flags override it")
    r.add_argument("--out", required=True, help="run directory to write")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def build_config(args):
    """The :class:`~dipkit.config.RunConfig` of ``args`` (``--config``, then flags, then ``--set``)."""
    from ..config import RunConfig, load_config, parse_overrides

    cfg = RunConfig()
    if args.config:
        cfg.update(load_config(args.config), source=str(args.config))
    for key in ("method", "iterations", "seed", "device", "ensemble"):
        v = getattr(args, key)
        if v is not None:
            cfg.set(key, v)
    if args.early_stop is not None:
        cfg.set("early_stop.rule", args.early_stop)
    for key, value in parse_overrides(args.set):
        cfg.set(key, value)
    return cfg


def run(args) -> int:
    from ..problem import Problem
    from ..runner import reconstruct

    cfg = build_config(args)
    method = cfg.validate()  # checked (and built, once) before the problem is read
    problem = Problem.load(args.problem)
    res = reconstruct(problem, cfg, args.out, quiet=args.quiet, method=method)
    print(summary(res))
    print(f"wrote {args.out}")
    return 0


RECONSTRUCT = Verb("reconstruct a problem with a method", run, add_arguments,
                   "Reconstruct a problem file with one method and write a run directory.")
