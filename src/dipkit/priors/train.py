r"""``dipkit train-denoiser``: train the small noise-conditional DnCNN behind the ``learned`` denoiser.

Training data are random patches of images that ship with dipkit's dependencies and load offline
(:func:`dipkit.io.load_sample`: scikit-image's sample images, converted to gray, and pydicom's
CT/MR test files), each used at the scales given by ``--scales`` (anti-aliased downscaling).
The images in :data:`HELD_OUT` (``camera``, ``shepp-logan``, ``ct``) are kept for evaluation and
are refused as training images.

Each step draws ``--batch-size`` patches of ``--patch-size``² pixels (image chosen with
probability proportional to its area, random position, one of the 8 flips/rotations), a noise
level :math:`\sigma_i \sim \mathcal U[\sigma_{lo}, \sigma_{hi}]/255` per patch and
:math:`\tilde x_i = x_i + \sigma_i n_i`, and takes an Adam step on the mean squared error
:math:`\frac1N\sum_i\|D(\tilde x_i, \sigma_i) - x_i\|^2` with a cosine learning-rate decay from
``--lr`` to ``--lr/100``. Everything is drawn from one ``torch.Generator`` seeded by ``--seed``.

The state dict is written with ``torch.save`` atomically to ``--out`` (every ``--save-every``
steps and at the end) together with ``<out stem>.json``: the architecture, the exact command,
the steps done, the seed, the wall time, the final training loss and the PSNR on the held-apart
images. The shipped weights ``dipkit/data/denoiser_dncnn.pt`` were made this way (the command is in
``dipkit/data/denoiser_dncnn.json`` and ``dipkit/data/README.md``).
"""

from __future__ import annotations

import argparse
import math
import shlex
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import DipkitError

__all__ = ["DESCRIPTION", "add_arguments", "run", "train", "TRAIN_IMAGES", "HELD_OUT"]

DESCRIPTION = ("Train the small noise-conditional DnCNN used by the 'learned' denoiser on patches of "
               "bundled sample images (camera, shepp-logan and ct are held apart for evaluation).")

#: images never used for training (the denoiser benchmark and tests evaluate on them)
HELD_OUT = ("camera", "shepp-logan", "ct")

#: default training images (all load offline through :func:`dipkit.io.load_sample`)
TRAIN_IMAGES = ("astronaut", "coffee", "cat", "rocket", "coins", "moon", "clock", "text", "page",
                "brick", "grass", "gravel", "cell", "microaneurysms", "immunohistochemistry",
                "retina", "hubble", "ct-head", "mr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def _load_images(names, scales, patch: int) -> list[torch.Tensor]:
    from skimage.transform import rescale

    from ..io import load_sample

    out = []
    for name in names:
        key = str(name).strip().lower().replace("_", "-")
        if key in HELD_OUT:
            raise DipkitError(f"{name!r} is held apart for evaluation and cannot be a training image "
                              f"(held apart: {', '.join(HELD_OUT)})")
        img = load_sample(key, channels="gray")[0]
        for s in scales:
            im = img if s == 1 else rescale(img, float(s), anti_aliasing=True, preserve_range=True)
            if min(im.shape) >= patch:
                out.append(torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32)))
    if not out:
        raise DipkitError(f"no training image is at least {patch}×{patch} pixels")
    return out


def _sample_batch(images, weights, n, patch, gen):
    idx = torch.multinomial(weights, n, replacement=True, generator=gen)
    rnd = torch.rand(n, 2, generator=gen)
    rots = torch.randint(0, 8, (n,), generator=gen)
    out = torch.empty(n, 1, patch, patch)
    for k in range(n):
        im = images[int(idx[k])]
        i = int(rnd[k, 0] * (im.shape[0] - patch + 1))
        j = int(rnd[k, 1] * (im.shape[1] - patch + 1))
        p = im[i:i + patch, j:j + patch]
        r = int(rots[k])
        p = torch.rot90(p, r % 4)
        if r >= 4:
            p = p.flip(-1)
        out[k, 0] = p
    return out


def _psnr(x, ref) -> float:
    mse = float(((x - ref) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-20))


def evaluate_held_out(net, sigmas=(15, 25, 50), size: int = 128, seed: int = 0) -> dict:
    """PSNR (dB) of ``net`` on the central ``size``² crops of :data:`HELD_OUT` images."""
    from ..io import load_sample

    gen = torch.Generator().manual_seed(seed)
    res = {}
    net.eval()
    with torch.no_grad():
        for name in HELD_OUT:
            img = torch.from_numpy(load_sample(name, channels="gray"))[None]
            h, w = img.shape[-2:]
            i, j = max(0, (h - size) // 2), max(0, (w - size) // 2)
            img = img[..., i:i + size, j:j + size]
            for s in sigmas:
                sig = s / 255
                noisy = img + sig * torch.randn(img.shape, generator=gen)
                out = net(noisy, torch.full((1, 1, 1, 1), sig))
                res[f"{name}@{s}"] = {"noisy": round(_psnr(noisy, img), 2), "denoised": round(_psnr(out, img), 2)}
    return res


def command_line(args) -> str:
    """The ``dipkit train-denoiser`` command that reproduces ``args``."""
    parts = ["dipkit", "train-denoiser", "--out", str(args.out), "--steps", str(args.steps),
             "--patch-size", str(args.patch_size), "--batch-size", str(args.batch_size),
             "--sigma-range", *(f"{v:g}" for v in args.sigma_range), "--lr", f"{args.lr:g}",
             "--depth", str(args.depth), "--features", str(args.features), "--seed", str(args.seed),
             "--images", *args.images, "--scales", *(f"{v:g}" for v in args.scales)]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    return shlex.join(parts)


def train(args) -> dict:
    """Train as ``args`` says (see :func:`add_arguments`); returns the JSON record that it writes."""
    from ..io import atomic_write, save_json
    from .learned import SmallDnCNN

    if args.steps < 1 or args.patch_size < 8 or args.batch_size < 1:
        raise DipkitError("need --steps ≥ 1, --patch-size ≥ 8 and --batch-size ≥ 1")
    lo, hi = sorted(args.sigma_range)
    if lo < 0:
        raise DipkitError("--sigma-range must be ≥ 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    meta_path = out.with_suffix(".json")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    images = _load_images(args.images, args.scales, args.patch_size)
    weights = torch.tensor([float((im.shape[0] - args.patch_size + 1) * (im.shape[1] - args.patch_size + 1))
                            for im in images])
    net = SmallDnCNN(depth=args.depth, features=args.features).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 100)
    record = {"arch": net.arch, "command": command_line(args), "seed": args.seed, "steps": 0,
              "patch_size": args.patch_size, "batch_size": args.batch_size, "sigma_range_255": [lo, hi],
              "lr": args.lr, "images": list(args.images), "scales": list(args.scales),
              "held_out": list(HELD_OUT), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "device": str(device), "sigma_units": "image units ([0, 1] scale)"}

    def save(step, loss_avg, wall):
        state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        with atomic_write(out, "wb") as fh:
            torch.save(state, fh)
        record.update(steps=step, wall_time_s=round(wall, 1),
                      cpu_time_s=round(time.process_time() - c0, 1), final_loss=loss_avg)
        save_json(meta_path, record)

    t0, c0 = time.perf_counter(), time.process_time()
    avg = None
    net.train()
    for step in range(1, args.steps + 1):
        clean = _sample_batch(images, weights, args.batch_size, args.patch_size, gen)
        sig = (lo + (hi - lo) * torch.rand(args.batch_size, 1, 1, 1, generator=gen)) / 255
        noisy = clean + sig * torch.randn(clean.shape, generator=gen)
        clean, noisy, sig = clean.to(device), noisy.to(device), sig.to(device)
        loss = (net(noisy, sig) - clean).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = loss.item()  # training loop, not a method hook: host sync is fine here
        avg = lv if avg is None else 0.98 * avg + 0.02 * lv
        if args.log_every and (step % args.log_every == 0 or step == 1):
            rmse = math.sqrt(max(avg, 0.0)) * 255
            print(f"step {step}/{args.steps}  loss {avg:.3e}  (RMSE {rmse:.2f}/255)  "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            save(step, avg, time.perf_counter() - t0)
    wall = time.perf_counter() - t0
    net.cpu()
    if getattr(args, "evaluate", True):
        record["eval_held_out_psnr"] = evaluate_held_out(net)
    save(args.steps, avg, wall)
    return record


def run(args) -> int:
    record = train(args)
    print(f"wrote {args.out} ({record['steps']} steps, {record['wall_time_s']:.0f} s)")
    return 0


def main(argv=None) -> int:  # pragma: no cover - convenience: python -m dipkit.priors.train
    p = argparse.ArgumentParser(prog="dipkit train-denoiser", description=DESCRIPTION)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
