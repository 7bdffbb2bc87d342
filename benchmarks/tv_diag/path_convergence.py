"""Diagnostic (issue 16): how fast the held-out misfit of TV's PDHG settles after a change of weight
a0 -> a1 (1500 steps at a0 first), for fixed step ratios sigma/tau (e.g. 3) or residual balancing
from a ratio (suffix "a", e.g. 1a). Prints steps:misfit.

Usage: python benchmarks/tv_diag/path_convergence.py ct 1a,10 10 3.162
"""
import os
import sys, time, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
torch.set_num_threads(1)
from tv_choice import all_cases, make_problem
from dipkit.baselines.tv_alpha import _Path, _HoldOut
name = sys.argv[1]; ratios = sys.argv[2].split(","); a0, a1 = float(sys.argv[3]), float(sys.argv[4])
task, sample, opts = all_cases()[name]
p = make_problem(task, sample, opts)
nonneg = not task.startswith("mri")
crit = _HoldOut(p.physics, p.y, folds=1, fraction=0.05, seed=0)
for r in ratios:
    path = _Path(crit.path_physics, crit.path_y, nonneg=nonneg, value=crit.value, rtol=0)
    path.method.step_ratio = float(r.rstrip("a")); path.method.adaptive = r.endswith("a")
    t = time.process_time()
    path.solve(torch.tensor([a0]), 1500, settle=False)
    vs = []
    for k in range(8):
        x, _ = path.solve(torch.tensor([a1]), 25 * 2 ** k if k < 1 else 25 * 2 ** (k - 1), settle=False)
        vs.append((path.state.step - 1500, float(crit.value(x))))
    print(f"ratio {r}: " + " ".join(f"{s}:{v:.5f}" for s, v in vs), f"cpu {time.process_time()-t:.1f}", flush=True)
