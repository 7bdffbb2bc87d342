"""``dipkit simulate``: simulate a problem (measurement + operator) from an image."""

from __future__ import annotations

from ..errors import DipkitError
from .common import Verb, nonneg_float, positive_int

__all__ = ["SIMULATE"]


def add_arguments(s) -> None:
    from ..tasks import SIMULATE_OPTIONS, TASKS

    s.add_argument("--task", required=True, choices=list(TASKS), help="; ".join(
        f"{name}: {desc}" for name, desc in TASKS.describe().items()))
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="image file: PNG/JPEG/TIFF, NPY, or DICOM (windowed HU, see docs)")
    src.add_argument("--sample", help="a bundled sample by name (see 'dipkit samples')")
    s.add_argument("--size", type=positive_int, default=128, help="resize to N×N with anti-aliasing (default 128)")
    types = {"positive_int": positive_int, "nonneg_float": nonneg_float, "int": int, "float": float, "str": str}
    for opt, (kind, help_) in SIMULATE_OPTIONS.items():
        s.add_argument("--" + opt.replace("_", "-"), dest=opt, type=types.get(kind, kind), default=None,
                       help=help_)
    s.add_argument("--seed", type=int, default=0, help="seed of the noise and of random masks (default 0)")
    s.add_argument("--out", required=True, help="problem file to write (.npz)")


def run(args) -> int:
    from ..io import load_image_source
    from ..tasks import SIMULATE_OPTIONS, get_task

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


SIMULATE = Verb("simulate a problem (measurement + operator) from an image", run, add_arguments,
                "Simulate y = A x + noise from an image and save it as a problem file.")
