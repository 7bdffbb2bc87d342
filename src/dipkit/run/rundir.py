"""The run directory: what one run writes, how it is read back, and when it is complete.

Used by ``dipkit reconstruct`` (:mod:`dipkit.run.runner`) and ``dipkit bench`` (:mod:`dipkit.bench`).
Every file is written atomically (temporary file + rename); ``metrics.json`` is written last, so its
presence marks a complete run.

A run directory holds one run: :func:`prepare_run_dir` refuses a non-empty directory unless asked to
overwrite, which first removes the old run's files (only the names below, so nothing else is
touched; a directory that holds other files is refused even then). ``checkpoint.pt`` exists while a
run is in progress (or was interrupted) and is removed once it is complete, unless kept.

=========================  =====================================================================
file                       content
=========================  =====================================================================
``reconstruction.npy``     the result ``[C, H, W]`` float32: the early-stopped estimate when a
                           stopping rule selected one, else the final one
``reconstruction.png``     the same as an image (the magnitude for a 2-channel complex image)
``reconstruction.tif``     the same as a float32 TIFF (:func:`dipkit.io.export.save_tiff`)
``reconstruction_hu.npy``  CT from a DICOM source: the result in Hounsfield units ``[1, H, W]``
                           (the source's window inverted, :mod:`dipkit.io.export`)
``reconstruction.dcm``     with ``--dicom``: the HU slice as a DICOM file (new UIDs, the source's
                           geometry where known)
``reconstruction_magnitude.npy``, ``.png``, ``reconstruction_phase.npy``  complex (MRI) results:
                           magnitude and phase (radians) ``[1, H, W]``
``estimates.npz``          ``final``, and when available ``early_stop`` and ``peak`` (oracle)
``config.yaml``            the run's configuration with every default resolved (rerun with
                           ``--config``)
``history.csv``            ``step, loss, <terms…>[, psnr, ssim]`` every ``log_every`` steps; the
                           last row is the final step
``psnr_curve.png``         PSNR vs iteration with the peak and early-stop marks (ground truth known)
``progress.png``           loss and held-out misfit vs iteration (log axes) with the picks, the stop
                           and the rollbacks marked; PSNR too when known (:mod:`dipkit.run.pictures`);
                           every run with a history of two rows or more
``overview.png``           the direct reconstruction (FBP, zero-filled, the degraded input), the
                           reconstruction, the uncertainty map when there is one and the difference,
                           with colour bars (:mod:`dipkit.run.pictures`); every run
``direct.npy``             the problem's direct reconstruction ``[C, H, W]`` (the ``naive`` baseline's:
                           FBP, zero-filled magnitude, the degraded input, least squares) for
                           ``overview.png``
``show.html``              written by ``dipkit show``: one self-contained page with the pictures and
                           the summary
``uncertainty.npy``, ``.png``  the per-pixel standard deviation ``[C, H, W]`` (ensembles: over the
                           members; SGLD: the posterior's), when there is one
``calibration.png``        binned RMSE against the predicted std (uncertainty and ground truth known)
``members.npz``            each ensemble member's reconstruction ``[N, C, H, W]`` (``--ensemble N``)
``metrics.json``           the run's summary (:class:`RunResult`), written last
``checkpoint.pt``          while the run is in progress: its state, to resume it
                           (:mod:`dipkit.engine.checkpoint`); removed when the run is complete
``error.txt``              only for a failed bench run: the traceback
=========================  =====================================================================
"""

from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DipkitError
from ..io import atomic_write, save_figure, save_json, save_npy, save_png, save_text, save_yaml
from ..io.guard import read_json, read_npz, read_yaml
from ..io.write import _jsonable
from ..metrics import magnitude

__all__ = ["RunResult", "RECONSTRUCTION", "RECONSTRUCTION_PNG", "ESTIMATES", "CONFIG", "HISTORY", "PSNR_CURVE",
           "UNCERTAINTY", "UNCERTAINTY_PNG", "CALIBRATION", "MEMBERS",
           "METRICS", "ERROR", "PROGRESS", "OVERVIEW", "DIRECT", "SHOW_HTML", "RECONSTRUCTION_TIFF", "RECONSTRUCTION_HU", "RECONSTRUCTION_DICOM", "MAGNITUDE",
           "MAGNITUDE_PNG", "PHASE", "CHECKPOINT", "SELECTION_CSV", "SELECTION_MD", "CANDIDATES", "RUN_FILES", "write_run_dir", "read_metrics", "read_history",
           "read_estimates", "read_config", "read_error", "write_error", "clear_status", "is_complete",
           "prepare_run_dir", "remove_checkpoint", "can_write_dicom", "write_pictures", "direct_from_problem"]

RECONSTRUCTION = "reconstruction.npy"
RECONSTRUCTION_PNG = "reconstruction.png"
ESTIMATES = "estimates.npz"
CONFIG = "config.yaml"
HISTORY = "history.csv"
PSNR_CURVE = "psnr_curve.png"
PROGRESS = "progress.png"
OVERVIEW = "overview.png"
DIRECT = "direct.npy"
SHOW_HTML = "show.html"
UNCERTAINTY = "uncertainty.npy"
UNCERTAINTY_PNG = "uncertainty.png"
CALIBRATION = "calibration.png"
MEMBERS = "members.npz"
METRICS = "metrics.json"
ERROR = "error.txt"
RECONSTRUCTION_TIFF = "reconstruction.tif"
RECONSTRUCTION_HU = "reconstruction_hu.npy"
RECONSTRUCTION_DICOM = "reconstruction.dcm"
MAGNITUDE = "reconstruction_magnitude.npy"
MAGNITUDE_PNG = "reconstruction_magnitude.png"
PHASE = "reconstruction_phase.npy"
CHECKPOINT = "checkpoint.pt"
SELECTION_CSV = "selection.csv"
SELECTION_MD = "selection.md"
REFIT = "refit.npy"  # an auto candidate's refit on all data (dipkit.run.auto)
#: ``--method auto``: one run directory per candidate below this folder
CANDIDATES = "candidates"
#: every file a run writes (what --overwrite removes)
RUN_FILES = (RECONSTRUCTION, RECONSTRUCTION_PNG, RECONSTRUCTION_TIFF, RECONSTRUCTION_HU, RECONSTRUCTION_DICOM,
             MAGNITUDE, MAGNITUDE_PNG, PHASE, ESTIMATES, CONFIG, HISTORY, PSNR_CURVE, UNCERTAINTY, UNCERTAINTY_PNG,
             CALIBRATION, MEMBERS, METRICS, CHECKPOINT, ERROR, SELECTION_CSV, SELECTION_MD, PROGRESS, OVERVIEW,
             DIRECT, SHOW_HTML, REFIT)


class RunResult(dict):
    """The ``metrics.json`` dictionary, with the tensors of the run as attributes.

    ``reconstruction`` (``[1, C, H, W]``), ``estimates`` (``{"final", "early_stop"?, "peak"?,
    "refit"?}``), ``history`` (``{column: list}``), ``config`` (the resolved run configuration as a
    dict), ``uncertainty`` (``[1, C, H, W]`` std map or None), ``members`` (an ensemble's
    member reconstructions ``[N, C, H, W]`` or None), ``direct`` (the problem's direct reconstruction
    ``[1, C, H, W]``, :func:`dipkit.baselines.naive.naive_reconstruction`, or None), ``source`` (the problem's ``meta["source"]``:
    what the image came from, for the HU and DICOM outputs) and ``operator_kind`` (the problem's
    operator kind, None for an outside operator).
    """

    reconstruction: torch.Tensor
    estimates: dict
    history: dict
    config: dict
    uncertainty: torch.Tensor | None = None
    members: torch.Tensor | None = None
    direct: torch.Tensor | None = None
    source: dict | None = None
    operator_kind: str | None = None

    @property
    def is_complex(self) -> bool:
        """Whether the image is complex, stored as (real, imaginary) channels (MRI)."""
        return str(self.operator_kind or self.get("task") or "").startswith("mri") and \
            self.reconstruction.shape[-3] == 2


# ---------------------------------------------------------------------- the directory
def _run_file(name: str) -> bool:
    """A file a run writes, or one of the atomic writer's temporary files (``.NAME.xxxx.tmp``)."""
    if name in RUN_FILES:
        return True
    return name.startswith(".") and name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in RUN_FILES)


def prepare_run_dir(out: str | Path, *, overwrite: bool) -> Path:
    """Make ``out`` ready for a new run: a missing or empty directory is fine; a non-empty one is
    refused unless ``overwrite``, which removes the old run's files first (and refuses a directory
    that holds anything a run does not write, so nothing else is ever deleted)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DipkitError(f"--out {out} exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return out
    if not overwrite:
        hint = " or --resume to continue it" if CHECKPOINT in entries and METRICS not in entries else ""
        raise DipkitError(f"run directory {out} is not empty: use --overwrite to replace the run in it{hint}, "
                          "or another --out")
    foreign = [n for n in entries if not (_run_file(n) and (out / n).is_file()) and not _candidates_dir(out / n)]
    if foreign:
        raise DipkitError(f"refusing to overwrite {out}: it holds files a dipkit run does not write "
                          f"({', '.join(foreign[:3])}{', …' if len(foreign) > 3 else ''})")
    for name in entries:
        if (out / name).is_dir():  # an auto run's candidates: each a run directory
            for sub in sorted((out / name).iterdir()):
                prepare_run_dir(sub, overwrite=True)
                sub.rmdir()
            (out / name).rmdir()
        else:
            (out / name).unlink(missing_ok=True)
    return out


def _candidates_dir(path: Path) -> bool:
    """An ``auto`` run's ``candidates/`` folder holding only run directories (of run files)."""
    if path.name != CANDIDATES or not path.is_dir():
        return False
    for sub in path.iterdir():
        if not sub.is_dir() or any(not (_run_file(f.name) and f.is_file()) for f in sub.iterdir()):
            return False
    return True


def remove_checkpoint(out: str | Path) -> None:
    """Remove ``checkpoint.pt`` (the run is complete)."""
    (Path(out) / CHECKPOINT).unlink(missing_ok=True)


def can_write_dicom(source: dict | None, operator_kind: str | None) -> bool:
    """Whether HU and DICOM outputs are possible: a CT problem whose source is a DICOM CT slice."""
    from ..io.export import hu_window

    return operator_kind == "ct" and hu_window(source) is not None


# ---------------------------------------------------------------------- writing
def _to_image(x: torch.Tensor) -> np.ndarray:
    return x.detach()[0].to(torch.float32).cpu().numpy()


def write_run_dir(out: str | Path, result: RunResult, *, dicom: bool = False, pictures: bool = True) -> Path:
    """Write ``result`` into the run directory ``out`` (created if missing); ``metrics.json`` last.

    ``dicom``: also write ``reconstruction.dcm`` (a CT problem from a DICOM source, else a DipkitError).
    ``pictures=False`` leaves out the figures (``psnr_curve.png``, ``progress.png``, ``overview.png``;
    :func:`draw_pictures` draws them later): ``--method auto`` draws them only for the candidates in
    what it returns.
    """
    from ..io.export import complex_parts, hu_window, save_tiff, to_hu, write_dicom

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DipkitError(f"cannot create output directory {out}: {exc.strerror}") from None
    recon = _to_image(result.reconstruction)
    source = getattr(result, "source", None)
    kind = getattr(result, "operator_kind", None)
    if dicom and not can_write_dicom(source, kind):
        raise DipkitError("--dicom needs a CT problem simulated from (or imported as) a DICOM CT slice")
    save_npy(out / RECONSTRUCTION, recon)
    save_png(out / RECONSTRUCTION_PNG, magnitude(recon) if recon.shape[0] == 2 else recon)
    save_tiff(out / RECONSTRUCTION_TIFF, recon)
    if can_write_dicom(source, kind):
        hu = to_hu(recon, hu_window(source))
        save_npy(out / RECONSTRUCTION_HU, hu)
        if dicom:
            from .. import __version__

            write_dicom(out / RECONSTRUCTION_DICOM, hu, source, description=f"dipkit {result['method']}",
                        version=__version__)
    if result.is_complex:
        mag, phase = complex_parts(recon)
        save_npy(out / MAGNITUDE, mag)
        save_png(out / MAGNITUDE_PNG, mag, vmin=0.0, vmax=max(float(mag.max()), 1e-12))
        save_npy(out / PHASE, phase)
    with atomic_write(out / ESTIMATES, "wb") as fh:
        np.savez(fh, **{k: _to_image(v) for k, v in result.estimates.items() if v is not None})
    save_yaml(out / CONFIG, result.config)
    hist = result.history
    cols = ["step"] + [c for c in hist if c != "step"]
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for i in range(len(hist["step"])):
        w.writerow([hist["step"][i]] + [f"{hist[c][i]:.8g}" for c in cols[1:]])
    save_text(out / HISTORY, buf.getvalue())
    if hist.get("psnr") and pictures:
        _plot_psnr(out / PSNR_CURVE, result)
    if result.uncertainty is not None:
        std = _to_image(result.uncertainty)
        save_npy(out / UNCERTAINTY, std)
        shown = magnitude(std) if std.shape[0] == 2 else std
        save_png(out / UNCERTAINTY_PNG, shown, vmin=0.0, vmax=max(float(shown.max()), 1e-12))
        calib = (result.get("uncertainty") or {}).get("calibration")
        if calib and calib.get("bins"):
            from ..uncertainty import plot_calibration

            plot_calibration(out / CALIBRATION, calib, title=f"{result['method']}: uncertainty calibration")
    if result.members is not None:
        with atomic_write(out / MEMBERS, "wb") as fh:
            np.savez(fh, members=result.members.detach().to(torch.float32).cpu().numpy())
    direct = None if getattr(result, "direct", None) is None else _to_image(result.direct)
    if direct is not None:
        save_npy(out / DIRECT, direct)
    if pictures:
        _draw_pictures(out, result, recon, direct)
    save_json(out / METRICS, dict(result))
    return out


def draw_pictures(out: str | Path, result: RunResult) -> None:
    """The figures of a run directory that :func:`write_run_dir` wrote with ``pictures=False``."""
    out = Path(out)
    if result.history.get("psnr"):
        _plot_psnr(out / PSNR_CURVE, result)
    direct = None if getattr(result, "direct", None) is None else _to_image(result.direct)
    _draw_pictures(out, result, _to_image(result.reconstruction), direct)


def _draw_pictures(out: Path, result: RunResult, recon: np.ndarray, direct: np.ndarray | None) -> None:
    """``progress.png`` and ``overview.png`` (:mod:`dipkit.run.pictures`) from the result's history and
    summary (what ``history.csv`` and ``metrics.json`` hold). A picture that cannot be drawn is a
    warning, never a lost run."""
    import warnings

    from .pictures import plot_overview, plot_progress

    metrics = json.loads(json.dumps(_jsonable(dict(result))))
    std = None if result.uncertainty is None else _to_image(result.uncertainty)
    for name, draw in ((PROGRESS, lambda p: plot_progress(p, result.history, metrics)),
                       (OVERVIEW, lambda p: plot_overview(p, recon, direct=direct, uncertainty=std, metrics=metrics))):
        try:
            draw(out / name)
        except Exception as exc:  # noqa: BLE001 - a figure must not cost the run its results
            warnings.warn(f"dipkit: could not draw {name}: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)


def _plot_psnr(path: Path, result: RunResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = result.history
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(h["step"], h["psnr"], lw=1.2, label=result["method"])
    if result["peak"]["iteration"] is not None:
        ax.axvline(result["peak"]["iteration"], color="g", ls="--", lw=0.8,
                   label=f"peak {result['peak']['psnr']:.2f} dB")
    es = result.get("early_stop")
    if es and es.get("iteration") is not None and es.get("psnr") is not None:
        ax.axvline(es["iteration"], color="r", ls="--", lw=0.8, label=f"early stop {es['psnr']:.2f} dB")
    ax.set_xlabel("iteration")
    ax.set_ylabel("PSNR [dB]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig)
    plt.close(fig)


def write_error(run_dir: str | Path, text: str) -> None:
    """Record a failed run (``error.txt``)."""
    save_text(Path(run_dir) / ERROR, text)


def clear_status(run_dir: str | Path) -> None:
    """Remove ``metrics.json`` and ``error.txt`` before a run is (re)done, so no stale status remains."""
    for name in (METRICS, ERROR):
        (Path(run_dir) / name).unlink(missing_ok=True)


# ---------------------------------------------------------------------- reading
def read_metrics(run_dir: str | Path) -> dict | None:
    """``metrics.json`` of a complete run, or None (missing or unreadable)."""
    try:
        data = read_json(Path(run_dir) / METRICS, "run metrics")
    except DipkitError:
        return None
    return data if isinstance(data, dict) else None


def read_config(run_dir: str | Path) -> dict | None:
    """``config.yaml`` as a dict, or None."""
    try:
        data = read_yaml(Path(run_dir) / CONFIG, "run config")
    except DipkitError:
        return None
    return data if isinstance(data, dict) else None


def read_history(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """``history.csv`` as ``{column: float array}`` (empty cells and ``nan`` as NaN), or None."""
    try:
        with open(Path(run_dir) / HISTORY, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, ValueError, csv.Error):
        return None
    if len(rows) < 2:
        return None
    try:
        return {h: np.array([float(r[i]) if r[i] not in ("", "nan") else np.nan for r in rows[1:]])
                for i, h in enumerate(rows[0])}
    except (ValueError, IndexError):
        return None


def read_estimates(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of ``estimates.npz`` (``final``, ``early_stop``, ``peak`` when present); {} if unreadable."""
    try:
        return read_npz(Path(run_dir) / ESTIMATES, "estimates")
    except DipkitError:
        return {}


def read_error(run_dir: str | Path) -> str | None:
    """The last non-empty line of ``error.txt``, or None when there is none."""
    try:
        lines = [ln.strip() for ln in (Path(run_dir) / ERROR).read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError):
        return None
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else "failed"


def is_complete(run_dir: str | Path, config: dict[str, Any] | None = None) -> bool:
    """``metrics.json`` exists and, when ``config`` is given, the run was asked for with that
    configuration (``metrics.json``'s ``request``; ``config.yaml`` holds the resolved one)."""
    metrics = read_metrics(run_dir)
    if metrics is None:
        return False
    if config is None:
        return True
    import yaml

    def norm(cfg):
        """Through RunConfig, so sections added since (defaults) compare equal; the checkpoint
        settings do not change a run's result and are left out."""
        from .config import RunConfig

        data = json.loads(json.dumps(yaml.safe_load(yaml.safe_dump(cfg, sort_keys=False))))
        try:
            data = RunConfig.from_dict(data).to_dict()
        except (DipkitError, TypeError, ValueError):
            pass
        if isinstance(data, dict):
            data.pop("checkpoint", None)
        return data

    return norm(metrics.get("request")) == norm(config)


# ---------------------------------------------------------------------- pictures from a run directory
def _load(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


def direct_from_problem(metrics: dict) -> np.ndarray | None:
    """The direct reconstruction ``[C, H, W]`` of the problem file the run names (``problem_file``),
    for run directories written before ``direct.npy`` existed; None when it cannot be had."""
    file = metrics.get("problem_file")
    if not file or not Path(file).is_file():
        return None
    try:
        from ..baselines.naive import naive_reconstruction
        from ..problem import Problem

        x = naive_reconstruction(Problem.load(file))
    except (DipkitError, RuntimeError, ValueError):
        return None
    return x[0].detach().float().cpu().numpy()


def write_pictures(run_dir: str | Path, *, redraw: bool = False) -> list[Path]:
    """Draw ``progress.png`` and ``overview.png`` of a complete run directory from its files, when
    missing (all of them with ``redraw``); returns the pictures the directory now holds."""
    from .pictures import plot_overview, plot_progress

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir) or {}
    progress, overview = run_dir / PROGRESS, run_dir / OVERVIEW
    if redraw or not progress.is_file():
        history = read_history(run_dir)
        if history is not None:
            plot_progress(progress, history, metrics)
    if redraw or not overview.is_file():
        recon = _load(run_dir / RECONSTRUCTION)
        if recon is not None:
            direct = _load(run_dir / DIRECT)
            if direct is None:
                direct = direct_from_problem(metrics)
            plot_overview(overview, recon, direct=direct, uncertainty=_load(run_dir / UNCERTAINTY), metrics=metrics)
    return [p for p in (overview, progress) if p.is_file()]
