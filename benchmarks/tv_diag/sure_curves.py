"""Diagnostic (issue 16): Monte-Carlo SURE of TV on all data vs its PSNR, on quarter decades around
the oracle α (needs benchmarks/tv_choice.py's oracle JSON in $TV_ORACLE).

Usage: python benchmarks/tv_diag/sure_curves.py denoise,denoise/heldout [steps=600] [eps/σ=0.1]
"""
import sys, json, math, time, torch, os
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
torch.set_num_threads(1)
from tv_choice import all_cases, make_problem
from dipkit.baselines.tv_alpha import _Path
from dipkit.metrics import psnr

oracles = json.load(open(os.environ.get("TV_ORACLE", "tv_oracle128.json")))
names = sys.argv[1].split(",")
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 600
rel_eps = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
f = os.environ.get("TV_DIAG_OUT", "tv_sure_curves.json")
out = json.load(open(f)) if os.path.exists(f) else {}
for name in names:
    task, sample, opts = all_cases()[name]
    p = make_problem(task, sample, opts)
    y, A = p.y, p.physics
    sigma = float(p.meta["noise_sigma"])
    nonneg = not task.startswith("mri")
    lo = math.log10(oracles[name]["alpha"])
    q = round(lo * 4)
    grid = [10 ** (j / 4) for j in range(q + 6, q - 6, -1)]
    g = torch.Generator().manual_seed(1)
    b = torch.randn(y.shape, generator=g, dtype=y.dtype)
    if hasattr(A, "mask") and isinstance(A.mask, torch.Tensor) and A.mask.shape[-2:] == y.shape[-2:]:
        b = b * (A.mask != 0)
    eps = rel_eps * sigma
    m = (b != 0).sum().item()
    full = _Path(A, torch.cat([y, y + eps * b]), nonneg=nonneg, value=lambda x: x.new_zeros(2), rtol=0,
                 adaptive=False)
    t0 = time.process_time()
    rows = []
    for a in grid:
        x, _ = full.solve(torch.full((2,), a), steps, settle=False)
        ax = A.A(x)
        res = (ax[:1] - y).abs().pow(2).sum().item()
        div = (b * (ax[1:] - ax[:1])).sum().item() / eps
        sure = (res - m * sigma ** 2 + 2 * sigma ** 2 * div) / m
        rows.append({"alpha": a, "psnr": float(psnr(x[:1], p.x_true)), "sure": sure, "res": res / m, "div": div})
        print(f"{name} {a:.4g} psnr {rows[-1]['psnr']:.2f} sure {sure:.5g} res {res/m:.5g} div/m {div/m:.4g}", flush=True)
    out[name] = {"sigma": sigma, "rows": rows}
    print(name, "cpu", time.process_time() - t0)
    json.dump(out, open(f, "w"), indent=1)
