"""``dipkit pretrain``: supervised pre-training of a network preset on random-ellipse phantoms for a
task's operator — the warm start of the Educated DIP and the trajectory of the Subspace DIP
(the training itself: :func:`dipkit.run.warmstart.pretrain`)."""

from __future__ import annotations

import argparse

from ..errors import DipkitError
from .common import DEVICES, Verb, nonneg_float, positive_int

__all__ = ["PRETRAIN"]

DESCRIPTION = ("Pre-train a network on random-ellipse phantoms pushed through a task's operator (input: the "
               "FBP/A†y of the noisy measurement, target: the phantom; MSE, Adam). Writes the weights "
               "(start any network method from them with --set net.weights=W.pt), the training trajectory "
               "W.trajectory.pt (the basis of subspace-dip) and a JSON record W.json.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..tasks import SIMULATE_OPTIONS, TASKS

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", choices=list(TASKS), help="the task whose operator and noise the pairs use")
    src.add_argument("--like", metavar="PROBLEM.npz",
                     help="use the operator, image size and noise level of this problem file")
    p.add_argument("--size", type=positive_int, default=64, help="image size N×N with --task (default 64)")
    types = {"positive_int": positive_int, "nonneg_float": nonneg_float, "int": int, "float": float, "str": str}
    for opt, (kind, help_) in SIMULATE_OPTIONS.items():
        p.add_argument("--" + opt.replace("_", "-"), dest=opt, type=types.get(kind, kind), default=None,
                       help=argparse.SUPPRESS if opt not in ("views", "noise_level", "noise_std") else help_)
    p.add_argument("--net", default="unet", help="network preset (default unet; see 'dipkit nets')")
    p.add_argument("--set", action="append", default=[], metavar="net.KEY=VALUE",
                   help="a network option, e.g. --set net.channels=32 (repeatable)")
    p.add_argument("--input", dest="input_kind", default="fbp", choices=["fbp", "adjoint"],
                   help="network input built from each noisy measurement (default fbp = A†y)")
    p.add_argument("--steps", type=positive_int, default=1000, help="Adam steps (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="phantoms per step (default 4)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning-rate schedule: cosine decay to lr/100 (default) or constant")
    p.add_argument("--checkpoints", type=positive_int, default=32,
                   help="trajectory snapshots K, uniformly spaced (default 32; subspace-dip's k ≤ K−1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantoms, noise and initialisation (default 0)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--log-every", type=int, default=100, help="print the loss every N steps (default 100; 0: never)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--out", required=True, help="weights file to write (.pt); W.trajectory.pt and W.json go beside it")


def run(args) -> int:
    from ..run.config import parse_overrides
    from ..tasks import SIMULATE_OPTIONS
    from ..run.warmstart import pretrain

    given = {k: getattr(args, k) for k in SIMULATE_OPTIONS if getattr(args, k, None) is not None}
    if args.like and given:
        raise DipkitError("--like takes the operator and noise from the problem file: drop "
                          + ", ".join("--" + k.replace("_", "-") for k in given))
    net_options = {}
    for key, value in parse_overrides(args.set):
        if not key.startswith("net.") or key == "net.name":
            raise DipkitError(f"pretrain --set takes network options net.KEY=VALUE (the preset is --net), got {key!r}")
        net_options[key[4:]] = value
    rec = pretrain(args.out, task=args.task, like=args.like, size=args.size, task_options=given, net=args.net,
                   net_options=net_options, input_kind=args.input_kind, steps=args.steps, batch_size=args.batch_size,
                   lr=args.lr, schedule=args.schedule, seed=args.seed, checkpoints=args.checkpoints,
                   device=args.device, threads=args.threads, log_every=args.log_every, quiet=args.quiet)
    val = rec["validation"]
    print(f"wrote {args.out} ({rec['steps']} steps, {rec['wall_time_s']:.0f} s, final loss {rec['final_loss']:.3e}; "
          f"held-out phantoms: input {val['psnr_input']:.2f} dB → output {val['psnr_output']:.2f} dB) "
          f"and {rec['trajectory']['file']} ({rec['trajectory']['snapshots']} snapshots)")
    return 0


PRETRAIN = Verb("pre-train a network on random-ellipse phantoms (warm start, subspace-dip basis)", run,
                add_arguments, DESCRIPTION)
