"""Expand a bench config into case instances (simulated problems) and runs, honouring ``--resume``.

Output layout under the bench directory ``DIR``::

    DIR/bench.yaml                                  the bench config as given
    DIR/cases/<case>/<instance>/problem.npz         the simulated problem (dipkit problem file)
    DIR/cases/<case>/<instance>/case.json           what it was simulated from (resume compares it)
    DIR/cases/<case>/<instance>/naive.npy           the naive reconstruction (method 'naive', else A†y)
    DIR/cases/<case>/<instance>/<label>/seed<k>/    one run dir, as 'dipkit reconstruct' writes it;
                                                    error.txt instead of metrics.json when it failed;
                                                    checkpoint.pt while it runs (or was interrupted)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..baselines.naive import naive_reconstruction
from ..errors import DipkitError
from ..io import save_json, save_npy
from ..io.guard import read_json, read_npy
from ..run.rundir import is_complete
from .config import BenchConfig, CaseSpec, Instance, MethodSpec

__all__ = ["RunSpec", "prepare_case", "plan_runs", "group_runs", "run_is_complete", "load_naive"]


@dataclass
class RunSpec:
    """One run of the grid: (case instance, method label, seed)."""

    case: str
    task: str
    instance: str
    label: str
    method: str
    seed: int
    problem: str  # absolute path of problem.npz
    out: str  # absolute path of the run dir
    cfg: dict  # RunConfig.to_dict()
    batch_seeds: int = 0  # the method entry's batch_seeds (0: all seeds in one batch, 1: one by one)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.case, self.instance, self.label, self.seed)

    def job(self, threads: int | None = None, resume: bool = False) -> dict:
        """A picklable description for :func:`dipkit.bench.executors.execute_run` (``resume``: continue
        an interrupted run from its checkpoint)."""
        return {"key": list(self.key), "problem": self.problem, "out": self.out, "cfg": self.cfg,
                "threads": threads, "resume": bool(resume)}


def instance_dir(out: Path, case: CaseSpec, inst: Instance) -> Path:
    return out / "cases" / case.name / inst.name


def _read_json(path: Path):
    try:
        return read_json(path, "case description")
    except DipkitError:
        return None


def prepare_case(out: Path, case: CaseSpec, inst: Instance, *, resume: bool) -> bool:
    """Simulate ``inst`` into its directory unless ``resume`` finds a matching problem there.

    Returns ``True`` when the problem was (re)simulated — its runs must then be (re)done.
    """
    from ..io import load_image_source
    from ..problem import Problem
    from ..tasks import get_task

    d = instance_dir(out, case, inst)
    spec = case.instance_spec(inst)
    problem_file, spec_file, naive_file = d / "problem.npz", d / "case.json", d / "naive.npy"
    if resume and problem_file.is_file() and naive_file.is_file() and _read_json(spec_file) == json.loads(
            json.dumps(spec)):
        try:
            Problem.load(problem_file)
            return False
        except DipkitError:
            pass  # corrupt: simulate again
    task = get_task(case.task)
    channels = case.channels or task.channels
    try:
        image, info = load_image_source(inst.image, inst.sample, size=case.size, channels=channels)
        problem = task.simulate(image, seed=inst.noise_seed, **case.options)
    except DipkitError as exc:
        raise DipkitError(f"case {case.name}/{inst.name}: {exc}") from None
    problem.meta["source"] = info
    problem.meta["bench_case"] = case.name
    d.mkdir(parents=True, exist_ok=True)
    problem.save(problem_file)
    save_npy(naive_file, naive_reconstruction(problem)[0].to(torch.float32).cpu().numpy())
    save_json(spec_file, spec)
    return True


def run_is_complete(spec: RunSpec) -> bool:
    """``metrics.json`` exists and the run's ``config.yaml`` is the planned configuration."""
    return is_complete(spec.out, spec.cfg)


def plan_runs(bench: BenchConfig, out: Path) -> list[RunSpec]:
    """Every run of the grid, in order: case, instance, method, seed."""
    runs = []
    for case in bench.cases:
        for inst in case.instances:
            d = instance_dir(out, case, inst).resolve()
            for m in bench.methods:
                if not m.applies_to(case.name):
                    continue
                for seed in m.seeds:
                    runs.append(_run_spec(case, inst, m, seed, d))
    if not runs:
        raise DipkitError("the bench grid is empty (no method applies to any case)")
    return runs


def _run_spec(case: CaseSpec, inst: Instance, m: MethodSpec, seed: int, d: Path) -> RunSpec:
    cfg = m.run_config(seed)
    return RunSpec(case=case.name, task=case.task, instance=inst.name, label=m.label, method=m.method,
                   seed=int(seed), problem=str(d / "problem.npz"), out=str(d / m.label / f"seed{seed}"),
                   cfg=cfg.to_dict(), batch_seeds=m.batch_seeds)


def group_runs(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """``specs`` in groups that run as one batched engine run each (:mod:`dipkit.run.batched`): the
    seeds of one (case instance, method label) when its ``batch_seeds`` allows and the method can
    be batched (:func:`dipkit.run.batched.why_not_batched`), at most ``batch_seeds`` per group;
    every other run is a group of one. Order is kept (a group sits where its first run was)."""
    from ..run.batched import why_not_batched
    from ..run.config import RunConfig

    groups: list[list[RunSpec]] = []
    open_: dict[tuple, list[RunSpec]] = {}
    ok: dict[str, bool] = {}
    for spec in specs:
        if spec.batch_seeds == 1:
            groups.append([spec])
            continue
        if spec.label not in ok:
            try:
                cfg = RunConfig.from_dict(spec.cfg)
                ok[spec.label] = why_not_batched(cfg.validate(), cfg) is None
            except DipkitError:
                ok[spec.label] = False
        if not ok[spec.label]:
            groups.append([spec])
            continue
        key = (spec.case, spec.instance, spec.label)
        group = open_.get(key)
        if group is None or (spec.batch_seeds and len(group) >= spec.batch_seeds):
            group = open_[key] = []
            groups.append(group)
        group.append(spec)
    return groups


def load_naive(problem_path: str | Path) -> np.ndarray | None:
    p = Path(problem_path).with_name("naive.npy")
    try:
        return read_npy(p, "naive reconstruction")
    except DipkitError:
        return None
