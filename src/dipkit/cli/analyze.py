"""``dipkit analyze``: analyses of a DIP network on a problem.

``dipkit analyze jacobian PROBLEM --out DIR`` — the top-k singular values and vectors of the network
Jacobian J = ∂f_θ(z)/∂θ at initialisation (or of A·J with ``--with-operator``), matrix-free
(:mod:`dipkit.analysis.jacobian`); the network and its input are built exactly as ``dipkit reconstruct``
builds them for the same ``--net``, ``--input``, ``--set`` and ``--seed`` (the analysed J is the one at the
start of that run). Writes

* ``spectrum.csv`` — ``index, sigma, ntk_eigenvalue`` (σ²) ``, residual``; ``spectrum.png`` (log scale);
* ``eigenimages.npy`` ``[k, C, H, W]`` — the left singular vectors of J as images (the NTK's eigenfunctions,
  CT paper Figure 3), or with the operator the image directions J v_i / ‖J v_i‖; ``eigenimages.png`` — the
  grid of the top ones (at most 16) with the initial output f_θ0(z) and the ground truth when known;
* ``left_vectors.npy`` — with ``--with-operator``, the left singular vectors of A·J (measurement space);
* ``initial_output.npy``, ``summary.json`` (settings, sizes n and p, values, timing).
"""

from __future__ import annotations

from ..errors import DipkitError
from .common import DEVICES, Parser, Verb, positive_int

__all__ = ["ANALYZE"]


def add_arguments(a) -> None:
    sub = a.add_subparsers(dest="analysis", metavar="ANALYSIS", parser_class=Parser)
    j = sub.add_parser("jacobian", help="top-k singular values/vectors of the network Jacobian at initialisation",
                       description="Spectrum and eigen-images of J = df_θ(z)/dθ at θ0 (or of A·J), matrix-free.")
    j.add_argument("problem", help="problem file written by 'dipkit simulate'")
    j.add_argument("--net", help="network preset (see 'dipkit nets'; default unet)")
    j.add_argument("--input", dest="input_kind", metavar="KIND",
                   help="network input: noise, meshgrid, fbp, tv, adjoint or auto (default: auto, as reconstruct)")
    j.add_argument("--k", type=positive_int, default=16, help="number of singular values/vectors (default 16)")
    j.add_argument("--seed", type=int, default=0, help="seed of the network initialisation and input (default 0)")
    j.add_argument("--with-operator", action="store_true", help="analyse A·J instead of J")
    j.add_argument("--algorithm", choices=["lanczos", "randomized"], default="lanczos",
                   help="Lanczos bidiagonalisation (default) or randomised SVD")
    j.add_argument("--iters", type=positive_int, help="Lanczos steps (default max(3k, k+20))")
    j.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="network and input options: net.channels=…, net.params=…, input.channels=…, input.std=…")
    j.add_argument("--device", choices=DEVICES, default="cpu", help="device (default cpu)")
    j.add_argument("--out", required=True, help="directory to write")


def _jacobian(args) -> int:
    from ..analysis.jacobian import jacobian_svd, network_at_init
    from ..analysis.plots import save_image_grid, save_spectrum_plot
    from ..run.config import RunConfig, parse_overrides
    from ..io.write import save_json, save_npy, save_text
    from ..nets import NETS, count_parameters
    from ..problem import Problem
    from ..run.runner import resolve_device

    cfg = RunConfig(method="dip", iterations=1, seed=int(args.seed), device=args.device)
    if args.net:
        cfg.set("net.name", args.net)
    if args.input_kind:
        cfg.set("input.kind", args.input_kind)
    for key, value in parse_overrides(args.set):
        if not key.startswith(("net.", "input.")):
            raise DipkitError(f"--set {key}: analyze jacobian takes only net.* and input.* settings")
        cfg.set(key, value)
    NETS[cfg.net.name]
    cfg.validate()
    problem = Problem.load(args.problem)
    device = resolve_device(cfg.device)
    problem = problem.to(device)
    net, z, resolved = network_at_init(problem, cfg, device)
    spec = jacobian_svd(net, z, args.k, physics=problem.physics if args.with_operator else None,
                        method=args.algorithm, iters=args.iters, seed=int(args.seed))

    out = args.out
    values = spec.values.detach().cpu().numpy()
    res = spec.residuals.detach().cpu().numpy()
    lines = ["index,sigma,ntk_eigenvalue,residual"]
    lines += [f"{i + 1},{v:.9g},{v * v:.9g},{r:.3g}" for i, (v, r) in enumerate(zip(values, res))]
    save_text(f"{out}/spectrum.csv", "\n".join(lines) + "\n")
    what = "A·J" if args.with_operator else "J"
    label = f"{cfg.net.name}, input {resolved.input.kind}"
    save_spectrum_plot(f"{out}/spectrum.png", values, title=f"singular values of {what} at θ0 ({label})")
    images = spec.images.detach().float().cpu().numpy()
    save_npy(f"{out}/eigenimages.npy", images)
    if args.with_operator:
        save_npy(f"{out}/left_vectors.npy", spec.left.detach().float().cpu().numpy())
    out0 = spec.output0.detach().float().cpu().numpy()
    save_npy(f"{out}/initial_output.npy", out0)
    shown = min(len(images), 16)
    panels = [(f"σ{i + 1} = {values[i]:.3g}", images[i], True) for i in range(shown)]
    extra = [("f_θ0(z)", out0, False)]
    if problem.x_true is not None:
        extra.append(("ground truth", problem.x_true[0].detach().float().cpu().numpy(), False))
    per_row = 6
    rows = [panels[i:i + per_row] for i in range(0, len(panels), per_row)] + [extra]
    save_image_grid(f"{out}/eigenimages.png", rows, title=f"top eigen-images of {what} ({label})")
    summary = {
        "analysis": "jacobian", "operator": what, "problem": str(args.problem), "net": cfg.net.name,
        "net_options": dict(cfg.net.options), "input": resolved.input.kind, "seed": int(args.seed),
        "parameters": count_parameters(net), "k": int(args.k), "values": values.tolist(),
        "residuals": res.tolist(), "device": str(device), **spec.info,
    }
    save_json(f"{out}/summary.json", summary)
    top = ", ".join(f"{v:.4g}" for v in values[:4])
    print(f"{what} of {cfg.net.name} ({summary['parameters']} parameters, input {resolved.input.kind}): "
          f"σ_1..{min(4, len(values))} = {top}; {spec.info['steps']} steps in {spec.info['seconds']:.1f} s")
    print(f"wrote {out}")
    return 0


def run(args) -> int:
    if getattr(args, "analysis", None) is None:
        raise DipkitError("analyze: choose an analysis: jacobian (dipkit analyze jacobian --help)")
    return {"jacobian": _jacobian}[args.analysis](args)


ANALYZE = Verb("analyse a network on a problem (jacobian: the NTK spectrum at initialisation)", run, add_arguments,
               "Analyses of a DIP network on a problem. 'dipkit analyze jacobian PROBLEM --out DIR': the top-k "
               "singular values and eigen-images of the network Jacobian at initialisation (CT paper §3.3, Fig. 3).")
