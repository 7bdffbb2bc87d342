"""Executors: where the runs of a bench grid run.

Every executor calls :func:`execute_job` on a picklable job — one run (problem file, run config,
run dir: :func:`execute_run`) or a group of seeds run as one batch (:func:`execute_group`) — and
hands each run's small result record (``key, status, error, wall_s``) to a callback as runs finish. The
run writes its own run dir (``metrics.json`` last); the report is built from the run dirs, so
results do not depend on the executor.

* :class:`LocalExecutor` — in this process, one run at a time (``workers=1``, default), or
  ``workers=N`` processes (:class:`concurrent.futures.ProcessPoolExecutor`, *spawn* context), each
  calling ``torch.set_num_threads(max(1, cpu_count // N))``. ``threads`` overrides the thread count
  (in-process too: on a busy machine, more intra-op threads than free cores can make a DIP run many
  times slower, so ``--threads 1`` is then the faster choice).
* :class:`RayExecutor` — each run is a Ray remote task (``pip install ray``). It connects with
  ``ray.init(address=ADDRESS or None)`` (``None``: start a local cluster), or uses the session
  already initialised in this process. A run requests ``num_gpus=1`` when its device resolves to
  CUDA (``cuda``/``cuda:N``, or ``auto`` on a cluster with GPUs), else ``num_cpus=1`` (threads: 1).
  **Assumption:** every node sees the bench directory and the problem files at the same absolute
  paths (a shared filesystem) and has dipkit installed; the runs write their run dirs there.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable

from ..errors import DipkitError

__all__ = ["execute_run", "execute_group", "execute_job", "LocalExecutor", "RayExecutor", "make_executor",
           "cpu_count", "ray_resources"]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def execute_run(job: dict) -> dict:
    """Run one job (see :meth:`dipkit.bench.grid.RunSpec.job`); never raises for a failed run.

    A failure writes ``error.txt`` (the traceback) into the run dir and returns
    ``status="failed"`` with a one-line ``error``; a success removes a stale ``error.txt``. The run
    dir is the bench's: a fresh run replaces whatever an earlier one left there; with
    ``job["resume"]`` a run interrupted after a checkpoint (``checkpoint.pt`` of the same
    configuration and problem) continues from it (:func:`dipkit.run.reconstruct`'s
    ``resume="auto"``), else it starts afresh.
    """
    import torch

    from ..run.config import RunConfig
    from ..problem import Problem
    from ..run.rundir import clear_status, write_error
    from ..run import reconstruct

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    out = Path(job["out"])
    t0 = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
        clear_status(out)
        problem = Problem.load(job["problem"])
        cfg = RunConfig.from_dict(job["cfg"])
        res = reconstruct(problem, cfg, out, quiet=True, overwrite=True,
                          resume="auto" if job.get("resume") else False)
        return {"key": job["key"], "status": "ok", "error": None, "wall_s": time.perf_counter() - t0,
                "psnr": res.get("psnr"), "resumed": bool(res.get("resumed_at"))}
    except Exception as exc:  # noqa: BLE001  (a failed run is recorded, the grid goes on)
        try:
            write_error(out, traceback.format_exc())
        except Exception:  # noqa: BLE001
            pass
        return {"key": job["key"], "status": "failed", "error": _one_line(exc),
                "wall_s": time.perf_counter() - t0, "psnr": None}


def execute_group(job: dict) -> list[dict]:
    """Run a group job (``{"group": [job, …]}``: the seeds of one case instance and method, see
    :func:`dipkit.bench.grid.group_runs`) as one batched engine run (:func:`dipkit.run.batched.reconstruct_seeds`),
    writing each seed's own run dir; one record per seed. When the batch cannot be run — a
    self-healing rollback, an error, or a member with a checkpoint to resume — the seeds run one by
    one (:func:`execute_run`), so a batched group never fails where single runs would succeed."""
    import torch

    from ..run.batched import reconstruct_seeds
    from ..run.config import RunConfig
    from ..problem import Problem
    from ..run.rundir import CHECKPOINT, clear_status

    jobs = job["group"]
    if jobs[0].get("threads"):
        torch.set_num_threads(int(jobs[0]["threads"]))
    t0 = time.perf_counter()
    results = None
    if not any(j.get("resume") and (Path(j["out"]) / CHECKPOINT).is_file() for j in jobs):
        try:
            for j in jobs:
                Path(j["out"]).mkdir(parents=True, exist_ok=True)
                clear_status(j["out"])
            problem = Problem.load(jobs[0]["problem"])
            cfg = RunConfig.from_dict(jobs[0]["cfg"])
            results = reconstruct_seeds(problem, cfg, [int(j["cfg"]["seed"]) for j in jobs],
                                        [j["out"] for j in jobs])
        except Exception:  # noqa: BLE001  (redone one by one, where each failure is recorded)
            results = None
    if results is None:
        return [execute_run(j) for j in jobs]
    wall = (time.perf_counter() - t0) / len(jobs)
    return [{"key": j["key"], "status": "ok", "error": None, "wall_s": wall, "psnr": r.get("psnr"),
             "resumed": False, "batched": len(jobs)} for j, r in zip(jobs, results)]


def execute_job(job: dict) -> list[dict]:
    """The records of a job: a single run (:func:`execute_run`) or a group (:func:`execute_group`)."""
    return execute_group(job) if "group" in job else [execute_run(job)]


def _job_keys(job: dict) -> list[dict]:
    return job["group"] if "group" in job else [job]


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(threads)))


class LocalExecutor:
    """Runs in this process (``workers=1``) or in ``workers`` spawned processes."""

    name = "local"

    def __init__(self, workers: int = 1, threads: int | None = None):
        if int(workers) < 1:
            raise DipkitError(f"--workers must be ≥ 1, got {workers}")
        if threads is not None and int(threads) < 1:
            raise DipkitError(f"--threads must be ≥ 1, got {threads}")
        self.workers = int(workers)
        self.threads = None if threads is None else int(threads)

    def map(self, jobs: Iterable[dict], callback: Callable[[dict], None]) -> None:
        jobs = list(jobs)
        if self.workers == 1 or len(jobs) <= 1:
            if self.threads is not None:
                import torch

                torch.set_num_threads(self.threads)
            for job in jobs:
                for rec in execute_job(job):
                    callback(rec)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = self.threads or max(1, cpu_count() // self.workers)
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(execute_job, job): job for job in jobs}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    recs = fut.result()
                except Exception as exc:  # noqa: BLE001  (a worker died)
                    recs = [_lost(j, exc) for j in _job_keys(job)]
                for rec in recs:
                    callback(rec)


def _lost(job: dict, exc: BaseException) -> dict:
    """Record for a run whose worker failed outside :func:`execute_run` (killed, OOM, …)."""
    from ..run.rundir import write_error

    msg = _one_line(exc)
    try:
        write_error(job["out"], f"the worker running this job failed: {msg}\n")
    except Exception:  # noqa: BLE001
        pass
    return {"key": job["key"], "status": "failed", "error": msg, "wall_s": None, "psnr": None}


def ray_resources(job: dict, cluster_gpus: float) -> dict:
    """Ray task options of a job: one GPU when its device resolves to CUDA, else one CPU.

    ``cuda``/``cuda:N`` always asks for a GPU; ``auto`` does when the cluster has GPUs (the task
    then sees one GPU, so ``auto`` resolves to it there).
    """
    device = str(job["cfg"].get("device", "auto"))
    use_gpu = device.startswith("cuda") or (device == "auto" and cluster_gpus > 0)
    return {"num_gpus": 1 if use_gpu else 0, "num_cpus": 1}


class RayExecutor:
    """Runs each job as a Ray remote task (see the module docs for the assumptions)."""

    name = "ray"

    def __init__(self, address: str | None = None, **init_kwargs):
        self.address = address or None
        self.init_kwargs = init_kwargs

    def map(self, jobs: Iterable[dict], callback: Callable[[dict], None]) -> None:
        try:
            import ray
        except ImportError:
            raise DipkitError("the ray executor needs Ray: pip install 'ray' (or dipkit[ray])") from None
        jobs = list(jobs)
        started = False
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, **self.init_kwargs)
            except Exception as exc:  # noqa: BLE001
                raise DipkitError(f"cannot start/connect to Ray (address {self.address!r}): {_one_line(exc)}") from None
            started = True
        try:
            gpus = float(ray.cluster_resources().get("GPU", 0))
            remote = ray.remote(execute_job)
            refs = {}
            for job in jobs:
                if "group" in job:
                    job = {"group": [dict(j, threads=j.get("threads") or 1) for j in job["group"]]}
                else:
                    job = dict(job, threads=job.get("threads") or 1)
                refs[remote.options(**ray_resources(_job_keys(job)[0], gpus)).remote(job)] = job
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        recs = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001  (worker crash, lost node …)
                        recs = [_lost(j, exc) for j in _job_keys(refs[ref])]
                    for rec in recs:
                        callback(rec)
        finally:
            if started:
                ray.shutdown()


def make_executor(name: str = "local", *, workers: int = 1, threads: int | None = None,
                  ray_address: str | None = None):
    if name == "local":
        return LocalExecutor(workers, threads)
    if name == "ray":
        return RayExecutor(ray_address)
    raise DipkitError(f"unknown executor {name!r} (choose local or ray)")
