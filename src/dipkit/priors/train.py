r"""Training of the small noise-conditional DnCNN behind the ``learned`` denoiser
(the command line is ``dipkit train-denoiser``, :mod:`dipkit.cli.train`).

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

import math
import shlex
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import DipkitError

__all__ = ["train_denoiser", "command_line", "evaluate_held_out", "TRAIN_IMAGES", "HELD_OUT"]

#: images never used for training (the denoiser benchmark and tests evaluate on them)
HELD_OUT = ("camera", "shepp-logan", "ct")

#: images kept apart to evaluate dipkit's calibrated defaults: never training images either
EVALUATION_ONLY = ("head-ct", "abdomen-mr", "motorcycle")

#: default training images (all load offline through :func:`dipkit.io.load_sample`)
TRAIN_IMAGES = ("astronaut", "coffee", "cat", "rocket", "coins", "moon", "clock", "text", "page",
                "brick", "grass", "gravel", "cell", "microaneurysms", "immunohistochemistry",
                "retina", "hubble", "ct-head", "mr")


def _load_images(names, scales, patch: int) -> list[torch.Tensor]:
    from skimage.transform import rescale

    from ..io import load_sample

    out = []
    for name in names:
        key = str(name).strip().lower().replace("_", "-")
        if key in HELD_OUT + EVALUATION_ONLY:
            raise DipkitError(f"{name!r} is held apart for evaluation and cannot be a training image "
                              f"(held apart: {', '.join(HELD_OUT + EVALUATION_ONLY)})")
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


def command_line(out, *, steps, patch_size, batch_size, sigma_range, lr, depth, features, seed, images, scales,
                 threads=None, **_ignored) -> str:
    """The ``dipkit train-denoiser`` command that reproduces a :func:`train_denoiser` call."""
    parts = ["dipkit", "train-denoiser", "--out", str(out), "--steps", str(steps),
             "--patch-size", str(patch_size), "--batch-size", str(batch_size),
             "--sigma-range", *(f"{v:g}" for v in sigma_range), "--lr", f"{lr:g}",
             "--depth", str(depth), "--features", str(features), "--seed", str(seed),
             "--images", *images, "--scales", *(f"{v:g}" for v in scales)]
    if threads:
        parts += ["--threads", str(threads)]
    return shlex.join(parts)


def train_denoiser(out, *, steps: int = 2000, patch_size: int = 32, batch_size: int = 16,
                   sigma_range=(0.0, 55.0), lr: float = 1e-3, depth: int = 8, features: int = 24, seed: int = 0,
                   images=TRAIN_IMAGES, scales=(1.0, 0.5), threads: int | None = None, save_every: int = 500,
                   log_every: int = 100, device: str = "cpu", evaluate: bool = True) -> dict:
    """Train the DnCNN (see the module docs) and write ``out`` and ``<out stem>.json``; returns the
    JSON record. Noise levels ``sigma_range`` are in /255 units."""
    from ..io import atomic_write, save_json
    from .learned import SmallDnCNN

    if steps < 1 or patch_size < 8 or batch_size < 1:
        raise DipkitError("need --steps ≥ 1, --patch-size ≥ 8 and --batch-size ≥ 1")
    lo, hi = sorted(sigma_range)
    if lo < 0:
        raise DipkitError("--sigma-range must be ≥ 0")
    if threads:
        torch.set_num_threads(threads)
    images = list(images)
    out = Path(out)
    meta_path = out.with_suffix(".json")
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    patches = _load_images(images, scales, patch_size)
    weights = torch.tensor([float((im.shape[0] - patch_size + 1) * (im.shape[1] - patch_size + 1))
                            for im in patches])
    net = SmallDnCNN(depth=depth, features=features).to(device)
    from ..core.optim import adam

    opt = adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr / 100)
    record = {"arch": net.arch,
              "command": command_line(out, steps=steps, patch_size=patch_size, batch_size=batch_size,
                                      sigma_range=sigma_range, lr=lr, depth=depth, features=features, seed=seed,
                                      images=images, scales=scales, threads=threads),
              "seed": seed, "steps": 0,
              "patch_size": patch_size, "batch_size": batch_size, "sigma_range_255": [lo, hi],
              "lr": lr, "images": images, "scales": list(scales),
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
    for step in range(1, steps + 1):
        clean = _sample_batch(patches, weights, batch_size, patch_size, gen)
        sig = (lo + (hi - lo) * torch.rand(batch_size, 1, 1, 1, generator=gen)) / 255
        noisy = clean + sig * torch.randn(clean.shape, generator=gen)
        clean, noisy, sig = clean.to(device), noisy.to(device), sig.to(device)
        loss = (net(noisy, sig) - clean).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = loss.item()  # training loop, not a method hook: host sync is fine here
        avg = lv if avg is None else 0.98 * avg + 0.02 * lv
        if log_every and (step % log_every == 0 or step == 1):
            rmse = math.sqrt(max(avg, 0.0)) * 255
            print(f"step {step}/{steps}  loss {avg:.3e}  (RMSE {rmse:.2f}/255)  "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
        if save_every and step % save_every == 0 and step < steps:
            save(step, avg, time.perf_counter() - t0)
    wall = time.perf_counter() - t0
    net.cpu()
    if evaluate:
        record["eval_held_out_psnr"] = evaluate_held_out(net)
    save(steps, avg, wall)
    return record
