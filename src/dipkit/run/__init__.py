"""Building and running one reconstruction: from a :class:`~dipkit.run.config.RunConfig` and a
:class:`~dipkit.problem.Problem` to a run directory.

=================  ==============================================================================
module             what it holds
=================  ==============================================================================
``config``         :class:`RunConfig`: the one place a run's settings are parsed and validated
``portfolio``      what ``--method auto`` chooses from; the selection ``RunConfig.validate`` returns
``resolve``        the defaults that depend on the problem or the network; the validation split
``runner``         one method's run on the engine: State, callbacks, resume, refit, the result
``auto``           ``--method auto``: a portfolio of candidates ranked by held-out misfit
``combine``        what ``auto`` returns beyond one pick: stacking weights, the refit on all data
``batched``        the seeds of one method as one batched engine run (``dipkit bench``)
``summary``        a finished run's summary records (selections, ensemble, uncertainty)
``rundir``         the run directory: file names, writing, reading back, completeness
``pictures``       ``progress.png`` and ``overview.png``
``tune``           ground-truth-free grid search (``dipkit tune``)
``warmstart``      pre-training a network for warm starts (``dipkit pretrain``)
=================  ==============================================================================

:func:`reconstruct` (``dipkit.reconstruct``) is the entry: ``dipkit reconstruct``, ``dipkit bench``,
``dipkit tune`` and :func:`dipkit.solve` run through it. It sends ``method: auto`` to
:mod:`~dipkit.run.auto` and every other method to :mod:`~dipkit.run.runner`, which ``auto`` itself uses
for its candidates — so the two never import each other. The package imports nothing at module
level, so ``import dipkit.run.config`` stays light (no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import RunConfig
    from .rundir import RunResult

__all__ = ["reconstruct"]


def reconstruct(problem, cfg: RunConfig, out_dir: str | Path | None = None, *, quiet: bool = False,
                console=None, method=None, overwrite: bool = True, resume: bool | str = False, dicom: bool = False,
                net=None) -> RunResult:
    """Run ``cfg.method`` on ``problem``; write the run directory if ``out_dir`` is given.

    A named method is one run (:func:`dipkit.run.runner.run_method`); ``method: auto`` is a
    selection over runs of other methods (:func:`dipkit.run.auto.reconstruct_auto`; ``resume`` does
    not apply: an interrupted ``auto`` run starts over).

    ``method``: the method built by ``cfg.validate()`` when the caller already has it (it is built
    once per run). ``overwrite``: with ``True`` (the library default, used by bench, tune and the
    demo, which manage their run directories) the old run's files in ``out_dir`` are removed before
    the run; with ``False`` (``dipkit reconstruct`` without ``--overwrite``) a non-empty ``out_dir``
    is refused (:func:`dipkit.run.rundir.prepare_run_dir`). ``resume``: ``True`` continues the run
    whose ``checkpoint.pt`` is in ``out_dir`` (same configuration and problem, else a DipkitError);
    ``"auto"`` does so when a matching checkpoint exists and otherwise starts afresh (``dipkit bench
    --resume``). ``dicom``: also write ``reconstruction.dcm`` (CT from a DICOM source; checked before
    the run). ``net``: a user's ``nn.Module`` as f_θ (:func:`dipkit.run.runner.build_state`).

    ``metrics.json`` holds ``method, task, iterations`` (steps run; null for a
    direct method such as FBP), ``wall_time_s, iterations_per_s, psnr, ssim`` (of the saved
    reconstruction), ``peak: {psnr, iteration}`` (the best PSNR in the history: an oracle; with an ensemble
    the history holds the members' mean PSNR, while ``psnr`` and ``final`` are those of the members'
    mean image, which is usually higher),
    ``final: {psnr, ssim, iteration}``, ``early_stop: {rule, mode, iteration, psnr, ssim[, misfit]}``
    (the first stopping rule's selection, which is the reconstruction) or null, ``selections``
    (every rule's selection, by rule; with an ensemble, the mean over members), ``ensemble``
    (``{members, member_metrics}`` for ``ensemble > 1``; the reconstruction is the mean of the
    members' selections), ``uncertainty`` (``{mean_std, calibration}`` when an uncertainty map is
    written: ensembles and SGLD), ``validation`` (the held-out split and, with
    ``validation.refit``, the refit: ``{fraction, seed, held_out, fill, iteration, misfit, psnr,
    refit: {iterations, psnr, ssim} | null}``) or null, ``stop_reason``, ``device``, ``precision``
    (as resolved: ``fp32`` or ``bf16``), ``fov_mask``,
    ``params`` (the method's hyper-parameters as used), ``request`` (the configuration as asked,
    before defaults were resolved), ``dipkit_version``, ``problem_file`` and ``problem_sha256``
    (when the problem was loaded from a file; else null), ``rollbacks`` (self-healing:
    ``[{step, reason, lr}]``), ``resumed_at`` (the steps at which the run was resumed from a
    checkpoint) and ``checkpoint`` (``{every, written}``; ``every`` null: none was written).
    ``config.yaml`` holds the resolved configuration. PSNR/SSIM are null without a ground truth.
    """
    if cfg.method == "auto":  # the method chosen by held-out misfit: a selection over runs
        from ..errors import DipkitError
        from .auto import reconstruct_auto
        from .rundir import can_write_dicom

        if net is not None:
            raise DipkitError("--method auto chooses among dipkit's methods; a user network needs a named method")
        if dicom and not can_write_dicom(problem.meta.get("source"), problem.spec.get("kind")):
            raise DipkitError("--dicom needs a CT problem simulated from (or imported as) a DICOM CT slice")
        return reconstruct_auto(problem, cfg, out_dir, quiet=quiet, console=console, overwrite=overwrite, dicom=dicom)
    from .runner import run_method

    return run_method(problem, cfg, out_dir, quiet=quiet, console=console, method=method, overwrite=overwrite,
                      resume=resume, dicom=dicom, net=net)
