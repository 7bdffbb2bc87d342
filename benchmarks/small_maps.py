"""Small feature maps: does another convolution path make a batch-1 3×3 convolution faster on the CPU?

At batch 1 PyTorch sends a 3×3 convolution whose input is small (``ConvParams::use_mkldnn``: below
a size threshold, ``groups == 1``) to its own ``_slow_conv2d`` (im2col + GEMM) instead of oneDNN
(mkldnn). A profile of a small-net DIP step put ~12 % of it there (issue 17). This script times, for
the feature-map shapes of the default ``unet`` preset and a few neighbours, forward + backward of
one convolution (input, weight and bias need gradients, as in training) by four paths:

* ``native``        — ``F.conv2d`` as PyTorch chooses (the slow path for the small maps);
* ``mkldnn``        — ``torch.mkldnn_convolution`` forced (oneDNN, the path larger maps take);
* ``channels_last`` — ``F.conv2d`` on channels-last input and weight (a layout change: PyTorch's
  heuristic then prefers oneDNN);
* ``batch2``        — the input doubled to batch 2 with a zero sample (batch > 1 takes oneDNN), the
  first output kept: the "batching" way round the heuristic.

It also records which kernel ``native`` runs (the profiler's op names), and times one whole
training step of the default ``unet`` preset with contiguous vs channels-last tensors, and with
``--runs N`` whole default ``dip`` runs of N steps with ``memory_format`` contiguous vs channels_last. Timing is interleaved (the
paths alternate within each round; the median of ``--rounds`` rounds of ``--reps`` calls), and the
ratios path ÷ native are what to read (< 1: faster than PyTorch's choice).

Run::

    OMP_NUM_THREADS=2 python benchmarks/small_maps.py --threads 2 --out small-maps.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _provenance import git_commit  # noqa: E402

#: (channels, size, stride): the default unet preset's 3×3 convolutions at 64² (encoder 16→8 px,
#: skip/decoder maps) and 32², 16² neighbours
SHAPES = [(16, 64, 1), (16, 32, 1), (32, 32, 1), (32, 16, 1), (32, 8, 1), (64, 8, 1), (16, 64, 2),
          (32, 32, 2), (64, 16, 1), (128, 16, 1)]


def _paths(c: int, h: int, s: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, h, h, generator=g, requires_grad=True)
    w = torch.randn(c, c, 3, 3, generator=g, requires_grad=True)
    b = torch.randn(c, generator=g, requires_grad=True)
    xl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    wl = w.detach().to(memory_format=torch.channels_last).requires_grad_()

    def native():
        F.conv2d(x, w, b, stride=s, padding=1).sum().backward()

    def mkldnn():
        torch.mkldnn_convolution(x, w, b, [1, 1], [s, s], [1, 1], 1).sum().backward()

    def channels_last():
        F.conv2d(xl, wl, b, stride=s, padding=1).sum().backward()

    def batch2():
        x2 = torch.cat([x, torch.zeros_like(x)])
        F.conv2d(x2, w, b, stride=s, padding=1)[:1].sum().backward()

    ref = F.conv2d(x, w, b, stride=s, padding=1).detach()
    err = float((torch.mkldnn_convolution(x, w, b, [1, 1], [s, s], [1, 1], 1).detach() - ref).abs().max())
    return {"native": native, "mkldnn": mkldnn, "channels_last": channels_last, "batch2": batch2}, err


def _kernel(fn) -> str:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    names = {e.name for e in prof.events()}
    for key in ("slow_conv2d", "mkldnn_convolution", "_convolution"):
        hits = sorted(n for n in names if key in n)
        if hits:
            return hits[0]
    return "?"


def _unet_step(size: int, rounds: int, reps: int) -> tuple[float, float]:
    """Median ms of one training step of the default ``unet`` preset, contiguous and channels-last
    (interleaved rounds)."""
    from dipkit.nets import build_net

    steps = {}
    for cl in (False, True):
        torch.manual_seed(0)
        net, z = build_net("unet", 32, 1), torch.randn(1, 32, size, size)
        if cl:
            net, z = net.to(memory_format=torch.channels_last), z.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), 1e-3)

        def step(net=net, z=z, opt=opt):
            opt.zero_grad()
            net(z).pow(2).mean().backward()
            opt.step()

        step()
        steps[cl] = step
    times = {False: [], True: []}
    for _ in range(rounds):
        for cl, step in steps.items():
            t = time.perf_counter()
            for _ in range(reps):
                step()
            times[cl].append((time.perf_counter() - t) / reps * 1e3)
    return statistics.median(times[False]), statistics.median(times[True])


def _dip_runs(size: int, steps: int, rounds: int) -> tuple[float, float]:
    """Median engine seconds of a default ``dip`` run of ``steps`` steps, contiguous and channels-last."""
    import dipkit
    from dipkit.run import reconstruct
    from dipkit.run.config import RunConfig

    img, _ = dipkit.load_image_source(None, "ct", size=size, channels="gray")
    problem = dipkit.simulate("ct", img, views=30, noise_level=0.02, seed=0)
    times = {"contiguous": [], "channels_last": []}
    for _ in range(rounds):
        for fmt in times:
            cfg = RunConfig(method="dip", iterations=steps, device="cpu", memory_format=fmt)
            times[fmt].append(float(reconstruct(problem, cfg, quiet=True)["wall_time_s"]))
    return statistics.median(times["contiguous"]), statistics.median(times["channels_last"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--runs", type=int, default=0, help="also whole dip runs of this many steps (0: none)")
    ap.add_argument("--run-rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = [f"Made by `python benchmarks/small_maps.py {' '.join(sys.argv[1:])}` at commit {git_commit()}, "
             f"{datetime.date.today()}, torch {torch.__version__}, {args.threads} threads.", "",
             "Forward + backward of one 3×3 convolution at batch 1, µs (median of rounds); ratio = path ÷ native.", "",
             "| channels | size | stride | native kernel | native µs | mkldnn | channels_last | batch2 | max diff mkldnn |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for c, h, s in SHAPES:
        fns, err = _paths(c, h, s)
        kernel = _kernel(fns["native"])
        times = {k: [] for k in fns}
        for f in fns.values():
            f()  # warm-up
        for _ in range(args.rounds):
            for k, f in fns.items():
                t = time.perf_counter()
                for _ in range(args.reps):
                    f()
                times[k].append((time.perf_counter() - t) / args.reps * 1e6)
        med = {k: statistics.median(v) for k, v in times.items()}
        n = med["native"]
        lines.append(f"| {c} | {h} | {s} | {kernel} | {n:.0f} | " + " | ".join(
            f"{med[k]:.0f} ({med[k] / n:.2f})" for k in ("mkldnn", "channels_last", "batch2")) + f" | {err:.1e} |")
        print(lines[-1], flush=True)
    lines += ["", "One training step (forward, backward, Adam) of the default `unet` preset (32 input channels), "
              "batch 1, ms (median of rounds): contiguous vs channels-last network and input.", "",
              "| size | contiguous ms | channels_last ms | ratio |", "|---:|---:|---:|---:|"]
    for size in (64, 128):
        a, b = _unet_step(size, args.rounds, args.reps)
        lines.append(f"| {size} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
        print(lines[-1], flush=True)
    if args.runs:
        lines += ["", f"Whole `dipkit` runs (default `dip`, CT 30 views, {args.runs} steps, engine seconds, median of "
                  f"{args.run_rounds} interleaved rounds) with `memory_format` contiguous vs channels_last.", "",
                  "| size | contiguous s | channels_last s | ratio |", "|---:|---:|---:|---:|"]
        for size in (64, 128):
            a, b = _dip_runs(size, args.runs, args.run_rounds)
            lines.append(f"| {size} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)
    else:
        print(text)


if __name__ == "__main__":
    main()
