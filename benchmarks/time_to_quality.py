"""Time to quality: how long five ways of running DIP take to reach their quality, side by side.

Problems (simulated with :func:`dipkit.simulate` from bundled samples, seeded by ``--seed``):
parallel-beam CT, 30 views, 2 % noise, at each ``--ct-sizes`` (sample ``ct-head``, the 512² head
slice the CT paper preset uses, so every size is a down-sampling); single-coil Cartesian MRI, 4×
(sample ``mr``); denoising, σ = 25/255 (sample ``astronaut``, RGB); the last two at ``--size``.

Variants, each started from scratch on the same problem:

* ``paper``    — the CT paper's protocol as dipkit runs it (presets ``ct-paper-gpu``/``ct-paper``):
  vanilla DIP, the 6×128 U-Net ``unet-paper``, Adam lr 1e-4 with no schedule, fp32, 10 000
  iterations, ES-WMV (window 100, patience 1000) stopping the run and picking the iterate
  (``--early-stop wmv``). Input: fixed noise (``--paper-input``, default ``noise``): the
  preset's ``dip`` row dates from before ``input.kind=auto`` became the FBP on CT, and it has a
  separate ``dip-fbp-input`` row, so its plain row is the paper's uninformative input;
* ``deepinv``  — deepinv's own :class:`deepinv.models.DeepImagePrior` with the generator of
  deepinv's DIP example (``ConvDecoder(img_size, in_size=[2, 2], channels=64)``, 7 layers) and the
  class's defaults (lr 1e-2, 2500 iterations, no early stopping: it returns the last iterate).
  Its ``forward(y, physics)`` draws a fresh ``z`` and a fresh Adam at every call and has no
  per-step hook, so it cannot be run in chunks; :func:`deepinv_fit` replays its loop exactly (the
  same ``z = randn(img_size)`` from the global generator, Adam on the generator's parameters,
  its ``MCLoss`` — the MSE of ``A G(z)`` against ``y`` — and the final ``generator(z)``) and looks
  at the output every k steps (``tests/test_time_to_quality.py`` checks it against ``forward``).
  It runs on the problem's own operator (the same as every other variant's);
* ``dipkit``   — ``dipkit reconstruct --method dip`` with every default (the val rule picks the
  iterate and ends the run), through :func:`dipkit.run.reconstruct`;
* ``auto``     — ``--method auto`` with its defaults;
* ``ensemble4``— ``--ensemble 4`` with the defaults (4 seeded members as one batch; the result is
  the mean of the members' val picks).

TV with its ground-truth-free α (method ``tv``, α = auto) is run first on every problem; its PSNR
is the common target.

**Traces.** Every variant records, every k = 10 steps, (wall seconds and process CPU seconds since
the variant's start, steps so far, PSNR of the image the variant would return if stopped now, PSNR
of the raw iterate). For the dipkit runs the hook is :func:`dipkit.engine.observe`: an observer
added to every engine run started inside the variant (the candidates of ``auto`` included), called
after the run's own callbacks. "Would return now" is the run's first stopping rule's selection so
far — the val pick (dipkit, ensemble4: the mean of the members' picks), the ES-WMV pick (paper;
the current iterate until the variance window has filled) — and for ``auto`` the val pick of the
candidate with the least held-out misfit so far; a classical candidate (TV) enters with the
held-out misfit and PSNR of its fit-view solve (auto returns its refit on all data, which the last
trace point shows). An engine run started inside another (TV's search for its weight, in its
set-up) is part of the outer run, not a candidate of its own. The raw iterate is the current estimate of that run (ensemble: the members'
mean). deepinv returns its last iterate, so both are the same. The observer reads the PSNR every
k steps, never every step (on a GPU it synchronises before reading the clock, every k steps).
Each trace ends with the variant's actual result at its total time.

**Reported** per (problem, variant): best PSNR on the trace, the PSNR returned, wall/CPU seconds
to come within 0.5 dB of the trace's own best and to reach TV's PSNR ("not reached"), total
wall/CPU seconds, steps (engine steps; ``auto``: the network steps of all its candidates; an
ensemble step advances all members), for ``auto`` and ``ensemble4`` their total wall time over
``dipkit``'s, and the process CPU share CPU / (threads × wall) of each run (1 on an idle machine;
lower means another job took the cores, as in ``benchmarks/speed.py``). A variant whose wall
time reached ``--budget-s`` (a time limit on every dipkit run, a clock check every k steps for
deepinv) is marked "cut at budget".

**Interleaving.** The variants of a problem run one after another, then the next problem; the
whole set is repeated ``--repeats`` times, each repeat starting the variant order one later
(rotation), so slow drifts of the machine's load hit every variant alike. With several repeats
the table shows medians (a time reached in only some repeats shows in how many).

Writes ``time_to_quality.json`` (every run with its trace) and ``time_to_quality.md`` (the table,
the command line, git commit, date, machine) to ``--out`` after every run (atomically). Run::

    python benchmarks/time_to_quality.py --threads 2 --budget-s 600 --repeats 2 --out ttq
    # a short configuration (a few minutes): small sizes, a small budget
    python benchmarks/time_to_quality.py --ct-sizes 32 --size 32 --budget-s 20 --out /tmp/ttq
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

VARIANTS = ("paper", "deepinv", "dipkit", "auto", "ensemble4")
PROBLEMS = ("ct", "mri", "denoise")
MARGIN_DB = 0.5  # "within 0.5 dB of its own best"
EVERY = 10  # steps between trace points (dipkit's log_every)

#: a trace point: (wall s, CPU s, steps, PSNR of what the variant would return, PSNR of the raw iterate)
Point = tuple


# ---------------------------------------------------------------------- pure helpers (tested)
def best_psnr(trace: list[Point]) -> float | None:
    """The highest returned-image PSNR on ``trace`` (None when it has none)."""
    vals = [p[3] for p in trace if p[3] is not None and math.isfinite(p[3])]
    return max(vals) if vals else None


def time_to(trace: list[Point], target: float | None) -> tuple[float, float] | None:
    """(wall s, CPU s) of the first point whose returned-image PSNR is ≥ ``target``; None if none is."""
    if target is None:
        return None
    for p in trace:
        if p[3] is not None and p[3] >= target:
            return p[0], p[1]
    return None


def time_to_within(trace: list[Point], margin: float = MARGIN_DB) -> tuple[float, float] | None:
    """(wall s, CPU s) at which the returned image first comes within ``margin`` dB of the trace's best."""
    best = best_psnr(trace)
    return None if best is None else time_to(trace, best - margin)


def cpu_share(cpu_s: float, wall_s: float, threads: int) -> float | None:
    """CPU time / (threads × wall): 1 when the process had its threads' cores all the time."""
    return cpu_s / (threads * wall_s) if wall_s > 0 and threads > 0 else None


def summarise(trace: list[Point], target: float | None) -> dict:
    """The reported numbers of one run's trace (its last point is the variant's result)."""
    within, reach = time_to_within(trace), time_to(trace, target)
    last = trace[-1] if trace else (None,) * 5
    return {"best_psnr": best_psnr(trace), "psnr": last[3],
            "within_wall_s": within and within[0], "within_cpu_s": within and within[1],
            "target_wall_s": reach and reach[0], "target_cpu_s": reach and reach[1],
            "wall_s": last[0], "cpu_s": last[1]}


def median_over(runs: list[dict], key: str) -> tuple[float | None, int]:
    """(median of ``key`` over the runs where it is not None, how many those are)."""
    vals = [r[key] for r in runs if r.get(key) is not None]
    return (statistics.median(vals) if vals else None), len(vals)


# ---------------------------------------------------------------------- tracing
@dataclass
class _Candidate:
    """One engine run (state) seen by a :class:`Tracer`: its pick so far and how good it is."""

    state: object
    fit_view: bool  # runs on the validation split's fit view (auto's candidates, the val rule)
    rule: object = None
    image: torch.Tensor | None = None
    score: float | None = None  # held-out misfit of the pick (lower is better)
    psnr: float | None = None
    raw: float | None = None
    done: bool = False


@dataclass
class Tracer:
    """The trace of one variant (module docs): an observer factory for :func:`dipkit.engine.observe`
    and :meth:`add` for loops outside the engine."""

    x_true: torch.Tensor
    points: list = field(default_factory=list)
    cut: bool = False
    _t0: float = 0.0
    _c0: float = 0.0
    _cands: dict = field(default_factory=dict)
    _split: object = None
    _depth: int = 0  # traced runs under way (a run started inside one is not traced on its own)

    def start(self) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def clock(self) -> tuple[float, float]:
        if self.x_true.is_cuda:
            torch.cuda.synchronize(self.x_true.device)
        return time.perf_counter() - self._t0, time.process_time() - self._c0

    @torch.no_grad()
    def psnr(self, image: torch.Tensor) -> float:
        """PSNR of ``image`` — the mean over its batch (an ensemble's members) — as dipkit reports it."""
        from dipkit.metrics import psnr

        return float(psnr(image.mean(0, keepdim=True), self.x_true).mean())

    def add(self, steps: int, psnr: float | None, raw: float | None) -> None:
        wall, cpu = self.clock()
        self.points.append((wall, cpu, int(steps), psnr, raw))

    # -------------------------------------------------------------- engine observer
    def __call__(self, state, callbacks):
        from dipkit.engine import Callback
        from dipkit.physics.split import MaskedPhysics

        if self._depth:  # a run inside a run (TV's weight search in its set-up): part of the outer run
            return None
        self._depth += 1
        rules = [c for c in getattr(callbacks, "callbacks", callbacks) if getattr(c, "rule", None) in ("val", "wmv")]
        key = id(state)
        if key not in self._cands:
            self._cands[key] = _Candidate(state, isinstance(state.physics, MaskedPhysics))
        cand = self._cands[key]
        cand.rule, cand.done = (rules[0] if rules else None), False  # the first rule's selection is the result
        tracer = self

        class _Observer(Callback):
            def on_step_end(self, st):
                if st.step % EVERY == 0:
                    tracer._sample(cand)

            def on_end(self, st):
                tracer._depth -= 1
                cand.done = True
                tracer._sample(cand)
                if st.stop_kind == "time_limit":
                    tracer.cut = True

        return _Observer()

    @torch.no_grad()
    def _sample(self, cand: _Candidate) -> None:
        st, rule = cand.state, cand.rule
        pick = None
        if rule is not None and rule.rule == "val" and rule.best_estimate is not None:
            pick, cand.score, self._split = rule.best_estimate, float(rule.best.mean()), rule.split
        elif rule is not None and rule.rule == "wmv" and rule.k_min is not None and bool((rule.k_min >= 0).all()):
            pick = rule.best
        if st.estimate is None:
            return
        cand.image = (pick if pick is not None else st.estimate).clone()
        cand.psnr, cand.raw = self.psnr(cand.image), self.psnr(st.estimate)
        chosen = self._chosen()
        self.add(sum(c.state.step for c in self._cands.values()), chosen.psnr, chosen.raw)

    def _chosen(self) -> _Candidate:
        """What the variant would return now: the candidate with the least held-out misfit (one run:
        that run); runs on all data (auto's refit of a classical candidate) only when no run fitted
        a split."""
        seen = [c for c in self._cands.values() if c.image is not None]
        pool = [c for c in seen if c.fit_view] or seen
        for c in pool:  # a classical candidate: scored once its solve is done and the split is known
            if c.score is None and c.rule is None and c.done and self._split is not None:
                c.score = float(self._split.misfit(c.image).mean())
        return min(pool, key=lambda c: math.inf if c.score is None else c.score)


# ---------------------------------------------------------------------- deepinv's DIP, step by step
def deepinv_model(img_shape, *, channels: int = 64, in_size=(2, 2), **kwargs):
    """deepinv's ``DeepImagePrior`` with the ``ConvDecoder`` of deepinv's DIP example (its default
    learning rate and iterations unless ``kwargs`` say otherwise)."""
    import deepinv as dinv

    gen = dinv.models.ConvDecoder(img_size=tuple(img_shape), in_size=list(in_size), channels=channels)
    return dinv.models.DeepImagePrior(gen, img_size=[channels, *in_size], **kwargs)


def deepinv_fit(dip, y: torch.Tensor, physics, *, every: int = EVERY, on_output=None, out_of_time=None):
    """``dip.forward(y, physics)`` (deepinv 0.5, ``re_init=False``), replayed: the same input, optimiser,
    loss and final output, with ``on_output(step, x)`` called every ``every`` steps with the output
    ``x = G(z)`` after ``step`` updates (what ``iterations=step`` would return) and
    ``out_of_time()`` asked every ``every`` steps (True: stop early). Returns (output, updates done)."""
    with torch.enable_grad():
        dip.generator.requires_grad_(True)
        z = torch.randn(dip.img_size, device=y.device).unsqueeze(0)
        optimizer = torch.optim.Adam(dip.generator.parameters(), lr=dip.lr)
        it = 0
        while it < dip.max_iter:
            x = dip.generator(z)
            if on_output is not None and it % every == 0:
                on_output(it, x.detach())
            error = dip.loss(y=y, x_net=x, physics=physics)
            optimizer.zero_grad()
            error.backward()
            optimizer.step()
            it += 1
            if out_of_time is not None and it % every == 0 and out_of_time():
                break
        return dip.generator(z), it


# ---------------------------------------------------------------------- problems and variants
def make_problems(args) -> list[tuple[str, object]]:
    """(name, problem) of every problem asked for (module docs)."""
    import dipkit

    out = []
    if "ct" in args.problems:
        for n in args.ct_sizes:
            img, _ = dipkit.load_image_source(None, args.ct_sample, size=n, channels="gray")
            out.append((f"ct{n}", dipkit.simulate("ct", img, views=30, noise_level=0.02, seed=args.seed)))
    if "mri" in args.problems:
        img, _ = dipkit.load_image_source(None, args.mri_sample, size=args.size, channels="gray")
        out.append((f"mri{args.size}", dipkit.simulate("mri", img, acceleration=4, seed=args.seed)))
    if "denoise" in args.problems:
        img, _ = dipkit.load_image_source(None, args.denoise_sample, size=args.size)
        out.append((f"denoise{args.size}", dipkit.simulate("denoise", img, noise_std=25 / 255, seed=args.seed)))
    return out


def variant_config(name: str, args):
    """The :class:`~dipkit.run.config.RunConfig` of a dipkit variant (``tv``: the target)."""
    from dipkit.run.config import RunConfig

    cfg = RunConfig(method="dip", seed=args.seed, device=args.device, log_every=EVERY, time_limit=args.budget_s)
    if name == "tv":  # the target: not capped
        cfg.method, cfg.time_limit = "tv", None
    elif name == "auto":
        cfg.method = "auto"
    elif name == "ensemble4":
        cfg.ensemble = 4
    elif name == "paper":
        cfg.net.name, cfg.params = "unet-paper", {"lr": 1e-4}
        cfg.iterations, cfg.precision, cfg.schedule.kind = 10_000, "fp32", "constant"
        cfg.input.kind = args.paper_input
        cfg.early_stop.rule, cfg.early_stop.window, cfg.early_stop.patience = "wmv", 100, 1000
    elif name != "dipkit":
        raise ValueError(name)
    return cfg


def run_variant(name: str, problem, args) -> tuple[Tracer, int]:
    """Run one variant on ``problem`` with its trace; returns (tracer, steps)."""
    from dipkit.engine import observe
    from dipkit.run import reconstruct
    from dipkit.run.resolve import resolve_device

    device = resolve_device(args.device)
    problem = problem.to(device)
    tracer = Tracer(problem.x_true)
    if name == "deepinv":
        torch.manual_seed(args.seed)
        tracer.start()
        dip = deepinv_model(problem.img_shape).to(device)

        def out_of_time():
            tracer.cut = tracer.clock()[0] >= args.budget_s
            return tracer.cut

        def on_output(step, x):
            p = tracer.psnr(x)
            tracer.add(step, p, p)

        x, steps = deepinv_fit(dip, problem.y, problem.physics, on_output=on_output, out_of_time=out_of_time)
        p = tracer.psnr(x.detach())
        tracer.add(steps, p, p)
        return tracer, steps
    cfg = variant_config(name, args)
    tracer.start()
    with observe(tracer):
        res = reconstruct(problem, cfg, quiet=True)
    steps = (res.get("auto") or {}).get("total_steps", res.get("iterations")) or 0
    tracer.add(steps, res.get("psnr"), (res.get("final") or {}).get("psnr"))
    if name != "tv" and tracer.points[-1][0] >= args.budget_s:
        tracer.cut = True
    return tracer, int(steps)


# ---------------------------------------------------------------------- output
def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _f(v, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def _reached(runs: list[dict], wall: str, cpu: str) -> str:
    """'wall / CPU' medians over the runs that reached it; 'not reached'; or '… (k of n)'."""
    w, k = median_over(runs, wall)
    if k == 0:
        return "not reached"
    c, _ = median_over(runs, cpu)
    return f"{w:.1f} / {c:.1f}" + ("" if k == len(runs) else f" ({k} of {len(runs)})")


def markdown(record: dict) -> str:
    """The Markdown report of ``record`` (module docs)."""
    runs = record["runs"]
    lines = ["# Time to quality", "",
             f"Command: `{record['command']}`  ", f"Commit: {record['commit']}  ", f"Date: {record['date']}  ",
             f"Machine: {record['machine']}, {record['threads']} threads (torch {record['torch']}, "
             f"device {record['device']})", "",
             f"Times are wall / CPU seconds since the variant's start (medians over repeats); 'within "
             f"{MARGIN_DB} dB': of the run's own best PSNR; 'to TV': to TV's (α auto) PSNR on the problem. "
             "CPU share = CPU / (threads × wall), the lowest over repeats (1: the process had its cores).", "",
             "| problem | variant | best PSNR | returned PSNR | TV PSNR | within 0.5 dB s | to TV s | total s | "
             "steps | × dipkit wall | CPU share | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    problems = list(dict.fromkeys(r["problem"] for r in runs))
    for prob in problems:
        here = [r for r in runs if r["problem"] == prob]
        dip_wall, _ = median_over([r for r in here if r["variant"] == "dipkit"], "wall_s")
        for var in ["tv", *VARIANTS]:
            rs = [r for r in here if r["variant"] == var]
            if not rs:
                continue
            wall, _ = median_over(rs, "wall_s")
            cpu, _ = median_over(rs, "cpu_s")
            ratio = (f"{wall / dip_wall:.2f}" if var in ("auto", "ensemble4") and wall and dip_wall else "")
            shares = [r["cpu_share"] for r in rs if r.get("cpu_share") is not None]
            cut = sum(bool(r["cut"]) for r in rs)
            note = "" if not cut else ("cut at budget" if cut == len(rs) else f"cut at budget ({cut} of {len(rs)})")
            lines.append(
                f"| {prob} | {var} | {_f(median_over(rs, 'best_psnr')[0], '.2f')} | "
                f"{_f(median_over(rs, 'psnr')[0], '.2f')} | {_f(rs[0].get('target_psnr'), '.2f')} | "
                f"{_reached(rs, 'within_wall_s', 'within_cpu_s')} | {_reached(rs, 'target_wall_s', 'target_cpu_s')} | "
                f"{_f(wall)} / {_f(cpu)} | {_f(median_over(rs, 'steps')[0], '.0f')} | {ratio} | "
                f"{_f(min(shares) if shares else None, '.2f')} | {note} |")
    return "\n".join(lines) + "\n"


def _write(out: Path, record: dict) -> None:
    """Write the JSON and the Markdown report to ``out``, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("time_to_quality.json", json.dumps(record, indent=1)),
                       ("time_to_quality.md", markdown(record))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)


# ---------------------------------------------------------------------- main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS))
    p.add_argument("--ct-sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--size", type=int, default=128, help="MRI and denoising image size")
    p.add_argument("--ct-sample", default="ct-head")
    p.add_argument("--mri-sample", default="mr")
    p.add_argument("--denoise-sample", default="astronaut")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--paper-input", default="noise", choices=["noise", "fbp", "meshgrid"],
                   help="the paper variant's network input (module docs)")
    p.add_argument("--budget-s", type=float, default=600.0, help="wall-time cap of each variant")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (dipkit's choice)")
    p.add_argument("--out", default="ttq", help="directory for time_to_quality.json and .md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from dipkit.run.resolve import resolve_device

    out = Path(args.out)
    record = {"command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
              "commit": _git_commit(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": _cpu_model(), "threads": args.threads, "torch": torch.__version__,
              "device": str(resolve_device(args.device)), "budget_s": args.budget_s, "repeats": args.repeats,
              "seed": args.seed, "paper_input": args.paper_input, "runs": []}
    problems = make_problems(args)
    import deepinv.models  # noqa: F401  (imported before any clock starts)
    import dipkit.run.auto  # noqa: F401
    for rep in range(args.repeats):
        order = args.variants[rep % len(args.variants):] + args.variants[: rep % len(args.variants)]
        for prob_name, problem in problems:
            target = None
            for var in ["tv", *order]:
                tracer, steps = run_variant(var, problem, args)
                if var == "tv":
                    target = tracer.points[-1][3]
                res = {"problem": prob_name, "variant": var, "repeat": rep, "target_psnr": target, "steps": steps,
                       **summarise(tracer.points, target), "cut": tracer.cut,
                       "trace": [[round(v, 4) if isinstance(v, float) else v for v in pt] for pt in tracer.points]}
                res["cpu_share"] = cpu_share(res["cpu_s"], res["wall_s"], args.threads)
                record["runs"].append(res)
                _write(out, record)  # after every run: an interrupted benchmark keeps what it measured
                print(f"[{rep + 1}/{args.repeats}] {prob_name:<10} {var:<9} best {_f(res['best_psnr'], '.2f')} dB, "
                      f"returned {_f(res['psnr'], '.2f')} dB (TV {_f(target, '.2f')}); within {MARGIN_DB} dB at "
                      f"{_f(res['within_wall_s'])} s, TV reached at {_f(res['target_wall_s'])} s; total "
                      f"{res['wall_s']:.1f} s wall / {res['cpu_s']:.1f} s CPU, {steps} steps, CPU share "
                      f"{_f(res['cpu_share'], '.2f')}" + ("  (cut at budget)" if res["cut"] else ""), flush=True)
    print(f"wrote {out / 'time_to_quality.json'} and {out / 'time_to_quality.md'}")


if __name__ == "__main__":
    main()
