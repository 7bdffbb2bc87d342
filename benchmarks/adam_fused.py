"""Adam per-tensor loop vs ``foreach`` vs ``fused`` in a DIP training step on this CPU (issue 17).

``torch.optim.Adam`` on the CPU defaults to its per-tensor loop (a handful of small kernels per
parameter tensor each step); ``dipkit.core.optim.adam`` asks for the fused kernel. This script times
one training step (the network's forward and backward on a mean-square loss, then the optimiser's
step) of a network preset at a given size, the three variants side by side: identical networks and
inputs, 50-step blocks interleaved (one block of each variant per round, ``--rounds`` rounds), the
best block per variant, and the ratio per-tensor ÷ variant (> 1: faster than the default).

Run::

    OMP_NUM_THREADS=2 python benchmarks/adam_fused.py --out benchmarks/results/adam-fused.md
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _provenance import git_commit  # noqa: E402

VARIANTS = {"per-tensor (default)": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def measure(net_name: str, size: int, rounds: int, steps: int) -> dict[str, float]:
    from dipkit.nets import build_net

    z = torch.rand(1, 32, size, size, generator=torch.Generator().manual_seed(1)) * 0.1
    target = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(2))
    runs = {}
    for name, opts in VARIANTS.items():
        torch.manual_seed(0)
        net = build_net(net_name, 32, 1)
        runs[name] = (net, torch.optim.Adam(net.parameters(), lr=1e-3, **opts))

    def block(name: str, n: int) -> float:
        net, opt = runs[name]
        t = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            ((net(z) - target) ** 2).mean().backward()
            opt.step()
        return (time.perf_counter() - t) / n

    for name in VARIANTS:  # warm-up
        block(name, 5)
    best = {name: float("inf") for name in VARIANTS}
    for _ in range(rounds):
        for name in VARIANTS:
            best[name] = min(best[name], block(name, steps))
    n_params = sum(p.numel() for p in runs[next(iter(VARIANTS))][0].parameters())
    return {"params": n_params, **best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="unet:64,unet:128,deep-decoder:64,deep-decoder:128",
                    help="net:size pairs, comma-separated")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lines = [f"# Adam in a DIP training step: per-tensor vs foreach vs fused (issue 17)", "",
             f"Made with `python benchmarks/adam_fused.py --cases {a.cases} --rounds {a.rounds} --steps {a.steps} "
             f"--threads {a.threads}` at commit {git_commit()} on {datetime.date.today()}, torch {torch.__version__}, "
             f"this 2-core CPU. Best {a.steps}-step block of {a.rounds} interleaved rounds; ratio = per-tensor ÷ variant.",
             "", "| net | size | parameters | " + " | ".join(f"{v} ms/step" for v in VARIANTS)
             + " | foreach speed-up | fused speed-up |", "|---|---:|---:|" + "---:|" * (len(VARIANTS) + 2)]
    for case in a.cases.split(","):
        net_name, size = case.split(":")
        r = measure(net_name, int(size), a.rounds, a.steps)
        base = r["per-tensor (default)"]
        lines.append(f"| {net_name} | {size}² | {r['params']} | "
                     + " | ".join(f"{1e3 * r[v]:.2f}" for v in VARIANTS)
                     + f" | {base / r['foreach']:.2f}× | {base / r['fused']:.2f}× |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
