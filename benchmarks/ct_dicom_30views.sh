#!/usr/bin/env bash
# Issue 2's acceptance run: a real CT slice (a DICOM file that ships with pydicom), 30 parallel
# views, 2 % relative noise, 128². Compares fbp, tv and dip (early stopping by ES-WMV: one run that
# stops, one that only records the rule's choice and runs to the end).
# Usage: benchmarks/ct_dicom_30views.sh [OUT_DIR]   (about 15 minutes on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/ct_dicom_30views}
DIPKIT=.venv/bin/dipkit
DCM=$(.venv/bin/python -c "from dipkit.io import sample_path; print(sample_path('ct'))")
mkdir -p "$OUT"
$DIPKIT simulate --task ct --image "$DCM" --size 128 --views 30 --noise-level 0.02 --seed 0 --out "$OUT/ct30.npz"
$DIPKIT reconstruct "$OUT/ct30.npz" --method fbp --out "$OUT/fbp" --quiet
for a in 1 3 10; do
  $DIPKIT reconstruct "$OUT/ct30.npz" --method tv --set alpha=$a --out "$OUT/tv-alpha$a" --quiet
done
$DIPKIT reconstruct "$OUT/ct30.npz" --method dip --iterations 3000 --set lr=1e-3 --early-stop wmv --out "$OUT/dip-wmv" --quiet
$DIPKIT reconstruct "$OUT/ct30.npz" --method dip --iterations 3000 --set lr=1e-3 --early-stop wmv:record --out "$OUT/dip-record" --quiet
.venv/bin/python - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("| run | PSNR | SSIM | peak PSNR (iter) | early stop PSNR (iter) | final PSNR | it/s |")
print("|---|---|---|---|---|---|---|")
for d in sorted(p for p in out.iterdir() if (p / "metrics.json").exists()):
    m = json.loads((d / "metrics.json").read_text())
    es = m["early_stop"] or {}
    pk = m["peak"]
    f = lambda v, fmt="{:.2f}": "–" if v is None else fmt.format(v)
    print(f"| {d.name} | {f(m['psnr'])} | {f(m['ssim'], '{:.3f}')} | {f(pk['psnr'])} ({pk['iteration']}) | "
          f"{f(es.get('psnr'))} ({es.get('iteration')}) | {f(m['final']['psnr'])} | {f(m['iterations_per_s'], '{:.1f}')} |")
PY
