"""aSeqDIP's initial input on CT: z0 = FBP vs the max-normalised adjoint (issue 16, task B).

For parallel-beam CT (30 views) and fan-beam CT (60 views), 2 % noise, on the bundled CT slice
(``ct``) and the held-out head CT (``head-ct``), ``aseqdip`` with its defaults (4000 steps, N = 2,
λ = 0.1, the network preset's learning rate; the val rule recording, not stopping, as in the
``defaults`` bench) from each start; the FBP beside. PSNR of the final iterate z_K, of the
ground-truth-free val pick (the reconstruction) and the oracle peak. One torch thread; runs one after another.

Usage::

    python benchmarks/aseqdip_z0.py --size 64 [--z0 fbp,adjoint] [--cases ct/ct,ct-fan/ct] --out aseqdip_z0.json
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

CASES = {"ct/ct": ("ct", "ct", 30), "ct-fan/ct": ("ct-fan", "ct", 60),
         "ct/head-ct": ("ct", "head-ct", 30), "ct-fan/head-ct": ("ct-fan", "head-ct", 60)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--z0", default="fbp,adjoint")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", required=True, help="JSON of the results (resumed: runs in it are skipped)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from dipkit.run.config import RunConfig
    from dipkit.io import load_image_source
    from dipkit.run import reconstruct
    from dipkit.tasks import get_task

    res = json.load(open(args.out)) if os.path.exists(args.out) else {}
    for case in args.cases.split(","):
        task, sample, views = CASES[case]
        t = get_task(task)
        image, _ = load_image_source(None, sample, size=args.size, channels=t.channels)
        problem = t.simulate(image, seed=0, views=views, noise_level=0.02)
        key = f"{case}@{args.size}"
        row = res.setdefault(key, {})
        if "FBP" not in row:  # the baseline's PSNR (the key "fbp" is aseqdip's z0 = fbp)
            fbp = RunConfig.from_dict({"method": "fbp", "device": "cpu"})
            row["FBP"] = reconstruct(problem, fbp, quiet=True)["psnr"]
        for z0 in args.z0.split(","):
            if z0 in row:
                continue
            cfg = RunConfig.from_dict({"method": "aseqdip", "device": "cpu", "params": {"z0": z0},
                                       "early_stop": {"rule": "val:record"}})  # full budget, as the defaults bench
            t0 = time.process_time()
            r = reconstruct(problem, cfg, quiet=True)
            row[z0] = {"final": r["final"]["psnr"], "pick": r["psnr"], "peak": r["peak"]["psnr"],
                       "peak_it": r["peak"]["iteration"], "iterations": r["iterations"],
                       "cpu_s": time.process_time() - t0}
            print(f"{key} z0={z0}: final {row[z0]['final']:.2f} pick {row[z0]['pick']:.2f} peak "
                  f"{row[z0]['peak']:.2f} (FBP {row['FBP']:.2f}) {row[z0]['cpu_s']:.0f} s", flush=True)
            with open(args.out + ".tmp", "w") as f:
                json.dump(res, f, indent=1)
            os.replace(args.out + ".tmp", args.out)
    print("\n| case | FBP | z0 | final z_K | val pick | peak (it) |\n|---|---|---|---|---|---|")
    for key, row in res.items():
        for z0, r in row.items():
            if z0 != "FBP":
                print(f"| {key} | {row['FBP']:.2f} | {z0} | {r['final']:.2f} | {r['pick']:.2f} | "
                      f"{r['peak']:.2f} ({r['peak_it']}) |")


if __name__ == "__main__":
    main()
