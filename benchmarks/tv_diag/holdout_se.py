"""Diagnostic (issue 16): the held-out misfit V (fold 0) of converged fit-view TV solves on quarter
decades around the oracle α, and each weight's difference to the least V in units of its paired
standard error over the held-out entries (needs the oracle JSON of benchmarks/tv_choice.py in
$TV_ORACLE).

Usage: python benchmarks/tv_diag/holdout_se.py ct,mri-multicoil/heldout
"""
import os
import sys, json, math, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
torch.set_num_threads(1)
from tv_choice import all_cases, make_problem
from dipkit.baselines.tv_alpha import _Path, _HoldOut

oracles = json.load(open(os.environ.get("TV_ORACLE", "tv_oracle128.json")))
for name in sys.argv[1].split(","):
    task, sample, opts = all_cases()[name]
    p = make_problem(task, sample, opts)
    nonneg = not task.startswith("mri")
    crit = _HoldOut(p.physics, p.y, folds=1, fraction=0.05, seed=0)
    path = _Path(crit.path_physics, crit.path_y, nonneg=nonneg, value=crit.value, rtol=2e-4)
    q = round(math.log10(oracles[name]["alpha"]) * 4)
    res = {}
    for j in range(q + 5, q - 5, -1):
        a = 10 ** (j / 4)
        x, v = path.solve(torch.tensor([a]), 500)
        r = ((p.physics.A(x) - p.y) * crit.held).abs().pow(2)
        per = r.sum(dim=tuple(range(1, r.ndim - 2)))[0][crit.held.reshape(r.shape[-2:]) > 0].double() if r.ndim > 3 else r[0, 0][crit.held[0, 0] > 0].double()
        res[a] = (float(v), per)
    amin = min(res, key=lambda a: res[a][0])
    line = []
    for a, (v, per) in res.items():
        d = per - res[amin][1]
        se = float(d.std() / math.sqrt(d.numel()))
        line.append(f"{a:.3g}:{v:.5g}(Δ/SE {(v-res[amin][0])/max(se,1e-30):+.2f})")
    print(name, "oracle", f"{oracles[name]['alpha']:.3g}", "Vmin at", f"{amin:.3g}", "\n  " + " ".join(line), flush=True)
