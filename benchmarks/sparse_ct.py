"""Side-by-side timing of dipkit's CT backends: deepinv's grid_sample projector vs the sparse matrix.

Run (not part of the tests)::

    PYTHONPATH=src python benchmarks/sparse_ct.py [--sizes 64 128 256] [--views 60] [--repeats 15]

For each geometry (parallel and fan beam, ``--views`` views) and image size it prints

* the matrix build time, cold (vectorised build + cache write, in a fresh temporary cache
  directory) and cached (verified load from that file), and the number of stored entries;
* ``A x`` + its backward (``x.requires_grad``, ``(A x * w).sum().backward()``), batch 1: median
  milliseconds per call of each backend and the ratio deepinv / sparse, the two backends timed
  in interleaved repeats (the machine may be shared; ratios are more telling than ms);
* with ``--columns K``: the sparse product for ``K`` columns (``x`` of shape ``[K, 1, N, N]``),
  one ``torch.sparse.mm`` vs ``K`` ``torch.mv`` calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def a_and_backward(op, x, w):
    def run():
        xr = x.detach().requires_grad_()
        (op.A(xr) * w).sum().backward()
        return xr.grad

    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--views", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--columns", type=int, default=4, help="K for the mm-vs-mv comparison (0: skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = tempfile.TemporaryDirectory(prefix="dipkit-bench-cache-")
    os.environ["DIPKIT_CACHE_DIR"] = tmp.name  # before any build: never touch the user's cache

    from dipkit.physics import sparse
    from dipkit.physics.ct import fan_beam, parallel_beam

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"views={args.views}, repeats={args.repeats} (interleaved)")
    head = (f"{'geometry':9} {'N':>4} {'nnz':>10} {'build cold':>11} {'cached':>8} "
            f"{'deepinv ms':>11} {'sparse ms':>10} {'ratio':>6}")
    print(head)
    print("-" * len(head))
    make = {"parallel": parallel_beam, "fan": fan_beam}
    mm_rows = []
    for n in args.sizes:
        for geometry in ("parallel", "fan"):
            ref = make[geometry](n, args.views, backend="deepinv")
            sp_op = make[geometry](n, args.views, backend="sparse")  # builds + caches the matrix
            geom = sp_op.ray_geometry
            sparse.clear_memory_cache()
            sparse.matrix_path(geom).unlink()  # time a cold build again, then a cached load
            cold = sparse.system_matrix(geom, memory=False)
            assert cold.source == "built", cold.source
            cached = sparse.system_matrix(geom, memory=False)
            assert cached.source == "disk", cached.source
            nnz = int(cold.A_parts.val.numel())

            torch.manual_seed(0)
            x = torch.rand(1, 1, n, n)
            w = torch.randn(1, 1, *sp_op.measurement_shape)
            f_ref, f_sp = a_and_backward(ref, x, w), a_and_backward(sp_op, x, w)
            f_ref(), f_sp()
            t_ref, t_sp = [], []
            for _ in range(args.repeats):  # interleaved
                t_ref += _time(f_ref, 1)
                t_sp += _time(f_sp, 1)
            m_ref, m_sp = statistics.median(t_ref) * 1e3, statistics.median(t_sp) * 1e3
            print(f"{geometry:9} {n:>4} {nnz:>10} {cold.seconds:>10.2f}s {cached.seconds:>7.2f}s "
                  f"{m_ref:>11.2f} {m_sp:>10.2f} {m_ref / m_sp:>6.1f}")

            if args.columns > 1 and geometry == "parallel":
                k = args.columns
                a = sp_op._sparse_matrices()[0]
                xs = torch.rand(k, n * n)
                mm = lambda: torch.sparse.mm(a, xs.t()).t().contiguous()  # noqa: E731
                mv = lambda: torch.stack([torch.mv(a, xs[i]) for i in range(k)])  # noqa: E731
                t_mm, t_mv = [], []
                for _ in range(args.repeats):
                    t_mm += _time(mm, 1)
                    t_mv += _time(mv, 1)
                mm_rows.append((n, k, statistics.median(t_mm) * 1e3, statistics.median(t_mv) * 1e3))
    if mm_rows:
        print(f"\nsparse A x for K columns (parallel, {args.views} views): one sparse.mm vs K mv's")
        for n, k, t_mm, t_mv in mm_rows:
            print(f"  N={n:>4} K={k}: mm {t_mm:.2f} ms, {k} x mv {t_mv:.2f} ms (ratio {t_mv / t_mm:.1f})")
    tmp.cleanup()


if __name__ == "__main__":
    main()
