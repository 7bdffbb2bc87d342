"""``dipkit train-denoiser``: train the small CNN denoiser shipped as denoiser ``learned``
(the training itself: :func:`dipkit.priors.train.train_denoiser`)."""

from __future__ import annotations

import argparse

from .common import Verb

__all__ = ["TRAIN_DENOISER"]

DESCRIPTION = ("Train the small noise-conditional DnCNN used by the 'learned' denoiser on patches of "
               "bundled sample images (camera, shepp-logan and ct are held apart for evaluation).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..priors.train import HELD_OUT, TRAIN_IMAGES

    parser.add_argument("--out", required=True, help="weights file to write (.pt); a .json goes beside it")
    parser.add_argument("--steps", type=int, default=2000, help="Adam steps (default 2000)")
    parser.add_argument("--patch-size", type=int, default=32, help="patch side in pixels (default 32)")
    parser.add_argument("--batch-size", type=int, default=16, help="patches per step (default 16)")
    parser.add_argument("--sigma-range", type=float, nargs=2, default=(0.0, 55.0), metavar=("LO", "HI"),
                        help="noise levels drawn uniformly in [LO, HI]/255 (default 0 55)")
    parser.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate (default 1e-3)")
    parser.add_argument("--depth", type=int, default=8, help="convolution layers (default 8)")
    parser.add_argument("--features", type=int, default=24, help="channels per layer (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole run (default 0)")
    parser.add_argument("--images", nargs="+", default=list(TRAIN_IMAGES),
                        help="training sample names (default: all bundled samples except "
                             + ", ".join(HELD_OUT) + ")")
    parser.add_argument("--scales", type=float, nargs="+", default=(1.0, 0.5),
                        help="each image is used at these scales (default 1 0.5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (default 500)")
    parser.add_argument("--log-every", type=int, default=100, help="print the loss every N steps (default 100)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--no-eval", dest="evaluate", action="store_false",
                        help="skip the final PSNR evaluation on the held-apart images")


def run(args) -> int:
    from ..priors.train import train_denoiser

    opts = {k: v for k, v in vars(args).items() if k not in ("verb", "out")}
    record = train_denoiser(args.out, **opts)
    print(f"wrote {args.out} ({record['steps']} steps, {record['wall_time_s']:.0f} s)")
    return 0


TRAIN_DENOISER = Verb("train the small CNN denoiser shipped as denoiser 'learned'", run, add_arguments, DESCRIPTION)
