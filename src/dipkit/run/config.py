"""Run configuration: typed, validated, YAML + ``key=value`` overrides; unknown keys raise.

A run is described by :class:`RunConfig`; ``config.yaml`` in every run directory is its
:meth:`RunConfig.to_dict`, and ``dipkit reconstruct PROBLEM --config run/config.yaml`` reruns it.

Override keys (``--set key=value``, values parsed as YAML scalars):

* top-level settings: ``method``, ``iterations`` (a fixed step budget), ``max_iterations`` (the cap
  of a run that decides its own length), ``time_limit`` (seconds), ``seed``, ``device``,
  ``precision``, ``log_every``, ``fov_mask``, ``ensemble``, ``ensemble_mode`` (``auto``/``stacked``/
  ``loop``: how an ensemble's members run, :mod:`dipkit.run.ensembles`), ``ensemble_memory_gb``
  (the memory an ensemble may use; default half of what is available), ``memory_format``
  (``contiguous``, default, or ``channels_last``: the network's tensor layout, :mod:`dipkit.nets.layout`),
  ``data_consistency`` (``auto``/``shrink``/``on``/``off``: a step towards the data, :mod:`dipkit.run.consistency`);
* ``net.name`` and ``net.<option>`` (network options, see ``dipkit nets``); ``net.weights=PATH`` starts
  the network from a weights file (``dipkit pretrain``) instead of its random initialisation;
* ``input.kind``, ``input.channels``, ``input.std``, ``input.perturb``;
* ``early_stop.rule``, ``early_stop.window``, ``early_stop.patience``, ``early_stop.patience_scale``,
  ``early_stop.delta`` (``es.`` is accepted as a short prefix);
* ``schedule.kind``, ``schedule.window``, ``schedule.factor``, ``schedule.floor`` (the learning-rate
  schedule, :mod:`dipkit.engine.schedule`);
* ``auto.candidates``, ``auto.min_steps``, ``auto.eta``, ``auto.combine`` (``method: auto``, the
  method chosen by held-out misfit: :mod:`dipkit.run.auto`);
* ``validation.fraction``, ``validation.seed``, ``validation.refit``, ``validation.split``
  (``entries``/``views``/``auto``), ``validation.score`` (``raw``/``ramp``/``auto``) (the held-out
  split of the ``val`` rule);
* ``checkpoint.every``, ``checkpoint.keep`` (resumable runs, :mod:`dipkit.engine.checkpoint`);
* ``healing.enabled``, ``healing.max_rollbacks``, ``healing.jump_factor``, ``healing.window``
  (rollback on a non-finite loss or a loss jump, :mod:`dipkit.engine.healing`);
* ``data.subset`` (stochastic DIP: the data term over a random share of the measurement blocks per
  step, scaled to be unbiased; 1 = full data term; :mod:`dipkit.physics.subsets`);
* anything else is a hyper-parameter of the method (e.g. ``lr``, ``alpha``, ``ema``), checked
  against the method's signature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import DipkitError
from ..io.guard import read_yaml, yaml_loads

__all__ = ["RunConfig", "NetConfig", "InputConfig", "EarlyStopConfig", "ValidationConfig", "CheckpointConfig",
           "HealingConfig", "DataConfig", "ScheduleConfig", "AutoConfig", "parse_overrides",
           "load_config",
           "load_yaml", "yaml_loads"]


# ---------------------------------------------------------------------- YAML
def load_yaml(path: str | Path, *, what: str = "config") -> Any:
    """Read a YAML file with :func:`yaml_loads` (:func:`dipkit.io.guard.read_yaml`: a missing,
    unreadable or malformed file is a one-line :class:`DipkitError` naming it)."""
    return read_yaml(path, what)


@dataclass
class NetConfig:
    name: str = "unet"
    options: dict = field(default_factory=dict)


@dataclass
class InputConfig:
    kind: str = "auto"  # auto: per task (dipkit.inputs.resolve_input_kind)
    channels: int | None = None
    std: float = 0.1
    perturb: float = 0.0


@dataclass
class EarlyStopConfig:
    rule: str | None = "auto"  # auto (val for network methods), "wmv", "val", "val,wmv:record", … (dipkit.stopping)
    window: int = 100
    patience: int | None = None  # steps without a new selection before a rule stops the run; None: val 500, wmv 1000
    patience_scale: float = 0.5  # val: the patience grows to max(patience, scale · the best step so far)
    delta: float = 0.99
    smooth: int = 5  # val: its minimum is of the trailing mean of this many evaluations (1: the raw misfit)
    source: str = "estimate"  # wmv: the variance of the method's estimate, or of the raw network "output"


@dataclass
class ValidationConfig:
    """The held-out split of the ``val`` rule (:mod:`dipkit.physics.split`)."""

    fraction: float = 0.05  # share of the measured entries (split=views: of the views; lines: of the lines) held out
    seed: int = 0  # seed of the split (the same split for every run seed)
    refit: bool = False  # after the val pick at step k*, rerun on all data for k* steps
    split: str = "auto"  # entries | views (sinograms) | lines (Cartesian MRI) | auto (resolve.resolve_validation)
    score: str = "auto"  # raw | ramp (ramp-filtered held-out views) | auto: raw


@dataclass
class CheckpointConfig:
    """Resumable runs (:mod:`dipkit.engine.checkpoint`): ``RUN_DIR/checkpoint.pt`` every ``every`` steps."""

    every: int | None = None  # None: auto (on when the run is expected to last > 60 s), 0: off, N: every N steps
    keep: bool = False  # keep checkpoint.pt once the run is complete


@dataclass
class HealingConfig:
    """Self-healing (:mod:`dipkit.engine.healing`): roll back on a non-finite loss or a loss jump."""

    enabled: bool = True
    max_rollbacks: int = 3  # then the run fails with a DipkitError
    jump_factor: float = 1e3  # a loss above jump_factor × the running median is a jump
    window: int = 50  # steps in the running median


@dataclass
class DataConfig:
    """How the data term is formed (:mod:`dipkit.physics.subsets`)."""

    subset: float = 1.0  # share of the measurement blocks (CT views, MRI lines, image rows) per step


@dataclass
class ScheduleConfig:
    """The learning-rate schedule of network methods (:mod:`dipkit.engine.schedule`)."""

    kind: str = "auto"  # auto | constant | plateau | cosine
    window: int | None = None  # plateau: steps without a new held-out minimum; None: half the val patience
    factor: float = 0.5  # plateau: what each reduction multiplies the rate by
    floor: float = 0.01  # the rate never goes below floor × the initial rate (plateau and cosine)
    warmup: int | None = None  # linear warm-up steps; None (auto): 100 after init.kind=tv, else 0


@dataclass
class AutoConfig:
    """``method: auto`` (:mod:`dipkit.run.auto`): the portfolio and its successive halving."""

    candidates: Any = None  # comma-separated labels (or a list); None: the task's portfolio
    min_steps: int = 500  # first rung's steps per network candidate
    eta: int = 2  # keep the better 1/eta after each rung; the budget grows eta-fold
    combine: Any = "stack"  # stack: convex weights of least held-out misfit (if it beats the choice by se SEs); K: mean of the K best
    refit: Any = "mean"  # a network candidate returned alone reruns on all the data for its pick's steps: mean (of pick and refit) | replace | none
    se: float = 1.0  # one-standard-error rule: a network candidate must beat the baseline by > se paired SEs


@dataclass
class InitConfig:
    """How a network method's network starts (:mod:`dipkit.run.netinit`)."""

    kind: str = "random"  # random (the DIP's) | tv: fitted to the classical TV image before the method runs
    steps: int = 500  # tv: Adam steps fitting f_θ(z) to the TV image
    lr: float | None = None  # tv: the fit's Adam rate; None: the method's


@dataclass
class RunConfig:
    method: str = "dip"
    # None: network methods whose val rule stops the run decide their own length (up to
    # max_iterations); others run the method's default (dip: 3000, tv: 500). N: exactly N steps.
    iterations: int | None = None
    max_iterations: int | None = None  # cap of a self-terminating run; None: the method's (20 000)
    time_limit: float | None = None  # seconds; the run stops (and keeps its selection) when it is spent
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 where native, else fp32), fp32, bf16 (autocast of the network): dipkit.precision
    log_every: int = 10
    fov_mask: bool = False
    ensemble: int = 1  # N > 1: N independently seeded runs (seeds seed … seed+N−1) as one batch
    # how the members run: stacked (vectorised) where valid, else the loop (dipkit.run.ensembles)
    ensemble_mode: str = "auto"
    # memory (GB) the members' training may use; None: half of what is available (chunks if needed)
    ensemble_memory_gb: float | None = None
    # the network's layout: channels_last makes a training step 0.88x on this CPU but whole runs
    # measured 0.89-1.18x (noise-level; benchmarks/results/small-maps.md), so it is opt-in
    memory_format: str = "contiguous"
    data_consistency: str = "auto"  # auto | shrink | on | off: a step towards the data (dipkit.run.consistency)
    params: dict = field(default_factory=dict)
    net: NetConfig = field(default_factory=NetConfig)
    input: InputConfig = field(default_factory=InputConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    healing: HealingConfig = field(default_factory=HealingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    auto: AutoConfig = field(default_factory=AutoConfig)
    init: InitConfig = field(default_factory=InitConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config") -> "RunConfig":
        cfg = cls()
        cfg.update(data, source=source)
        return cfg

    def update(self, data: dict, *, source: str = "config") -> None:
        if not isinstance(data, dict):
            raise DipkitError(f"{source}: expected a mapping at the top level")
        for key, value in data.items():
            if not isinstance(key, str):
                raise DipkitError(f"{source}: setting names are strings, got {key!r}")
            if key in ("net", "input", "early_stop", "validation", *_EXTRA_SECTIONS) and isinstance(value, dict):
                for k, v in value.items():
                    self.set(f"{key}.{k}", v, source=source)
            elif key in ("net", "input", "validation", *_EXTRA_SECTIONS):
                if value is not None:
                    raise DipkitError(f"{source}: {key!r} must be a mapping of {key}.* settings, got {value!r}")
            elif key == "params":
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise DipkitError(f"{source}: 'params' must be a mapping")
                self.params.update(value)
            else:
                self.set(key, value, source=source)

    def update_from_file(self, path: str | Path) -> None:
        """Apply a run configuration YAML (:func:`load_config`, e.g. a run's ``config.yaml``). Its
        problems name the file: unreadable, not a mapping, an unknown key or a bad value now, and, in
        :meth:`validate`, a setting of the file that does not check (e.g. an unknown method parameter)."""
        source = f"config {path}"
        data = load_config(path)
        self.update(data, source=source)
        self.__dict__.setdefault("_files", []).append((source, data))  # not a field: not in to_dict()

    def set(self, key: str, value: Any, *, source: str = "--set") -> None:
        try:
            self._set(key, value, source)
        except DipkitError as exc:
            if source == "--set" or str(exc).startswith(f"{source}:"):
                raise
            raise DipkitError(f"{source}: {exc}") from None

    def _set(self, key: str, value: Any, source: str) -> None:
        if isinstance(value, str):
            value = _parse_scalar(value)  # YAML files write 1e-4 as a string
        section, _, sub = key.partition(".")
        if section == "es":
            section = "early_stop"
        if sub:
            if section == "net":
                if sub == "name":
                    self.net.name = str(value)
                elif sub == "options" and isinstance(value, dict):
                    self.net.options.update(value)
                else:
                    self.net.options[sub] = value
                return
            if section in ("input", "early_stop", "validation", *_EXTRA_SECTIONS):
                obj = getattr(self, section)
                names = {f.name for f in fields(obj)}
                if sub not in names:
                    raise DipkitError(f"{source}: unknown key {key!r} (known: "
                                      f"{', '.join(f'{section}.{n}' for n in sorted(names))})")
                if section == "early_stop" and sub == "rule":
                    from ..stopping import NONE

                    value = None if value in NONE else str(value)
                setattr(obj, sub, _coerce(key, value, getattr(type(obj)(), sub)))
                return
            if section == "params":
                self.params[sub] = value
                return
            # a dict-valued method parameter, e.g. denoiser_options.weights=PATH; checked against
            # the method's signature when it is built
            current = self.params.setdefault(section, {})
            if not isinstance(current, dict):
                raise DipkitError(f"{source}: {key!r}: parameter {section!r} is not a mapping")
            current[sub] = value
            return
        top = {f.name for f in fields(self)} - {"params", "net", "input", "early_stop", "validation", *_EXTRA_SECTIONS}
        if key in top:
            default = {"iterations": 0, "max_iterations": 0, "time_limit": 0.0,
                       "ensemble_memory_gb": 0.0}.get(key, getattr(RunConfig(), key))
            setattr(self, key, _coerce(key, value, default))
        elif key == "early_stop":
            self.set("early_stop.rule", value, source=source)
        else:
            # a method hyper-parameter; validated against the method when it is built
            self.params[key] = value

    def validate(self):
        """Check every setting and build the method (it is built once per run and returned).

        Checked: the method and its parameters (names and values, by building it — cheap: heavy
        resources such as a learned denoiser load when the run starts), ``iterations``,
        ``log_every``, ``device``, ``precision``, ``fov_mask``, ``data_consistency``, the network preset and its option
        names, the input kind, channels and noise levels, and the early-stopping rule (``none``
        included) with its options, ``data.subset`` (in (0, 1]; < 1 only for methods whose gradient steps fit the data term). Any
        problem raises :class:`DipkitError` with one line; one that a configuration file read by
        :meth:`update_from_file` causes names the file.
        """
        try:
            return self._validate()
        except DipkitError as exc:
            raise self._blame(exc) from None

    def _blame(self, exc: DipkitError) -> DipkitError:
        """``exc`` prefixed with the configuration file that causes it: the file's settings alone (with
        this run's method) fail the same way."""
        for source, data in getattr(self, "_files", ()):
            if str(exc).startswith(f"{source}:"):
                return exc
            probe = RunConfig()
            try:
                probe.update(data, source=source)
                if "method" not in data:
                    probe.method = self.method
                probe._validate()
            except DipkitError as again:
                if str(again) == str(exc):
                    return DipkitError(f"{source}: {exc}")
        return exc

    def _validate(self):
        from ..inputs import INPUTS
        from ..methods import make_method
        from ..nets import check_options
        from ..stopping import parse_rules
        from .consistency import check_mode

        self.data_consistency = check_mode(self.data_consistency)
        if self.method == "auto":
            from .portfolio import AutoSelection

            _check_extra_sections(self)
            return AutoSelection(self)
        method = make_method(self.method, **self.params)
        if self.iterations is not None and int(self.iterations) <= 0:
            raise DipkitError(f"iterations must be positive, got {self.iterations}")
        if self.max_iterations is not None and int(self.max_iterations) <= 0:
            raise DipkitError(f"max_iterations must be positive, got {self.max_iterations}")
        if self.time_limit is not None and not float(self.time_limit) > 0:
            raise DipkitError(f"time_limit must be a positive number of seconds, got {self.time_limit}")
        if int(self.log_every) <= 0:
            raise DipkitError(f"log_every must be positive, got {self.log_every}")
        if int(self.ensemble) < 1:
            raise DipkitError(f"ensemble must be ≥ 1, got {self.ensemble}")
        if int(self.ensemble) > 1 and not method.uses_network:
            raise DipkitError(f"--ensemble needs a network method; {self.method!r} is deterministic")
        if self.ensemble_mode not in ("auto", "stacked", "loop"):
            raise DipkitError(f"ensemble_mode must be auto, stacked or loop, got {self.ensemble_mode!r}")
        if self.memory_format not in ("contiguous", "channels_last"):
            raise DipkitError(f"memory_format must be contiguous or channels_last, got {self.memory_format!r}")
        gb = self.ensemble_memory_gb
        if gb is not None and (isinstance(gb, bool) or not isinstance(gb, (int, float)) or not float(gb) > 0):
            raise DipkitError(f"ensemble_memory_gb must be a positive number of GB (or null: half the available "
                              f"memory), got {gb!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise DipkitError(f"device must be auto, cpu or cuda, got {self.device!r}")
        from ..precision import check_precision

        check_precision(self.precision)
        if not isinstance(self.fov_mask, bool):
            raise DipkitError(f"fov_mask must be true or false, got {self.fov_mask!r}")
        check_options(self.net.name, self.net.options)
        weights = self.net.options.get("weights")
        if weights is not None and (not isinstance(weights, str) or not Path(weights).is_file()):
            raise DipkitError(f"net.weights: no such weights file {weights!r} (written by 'dipkit pretrain')")
        if getattr(method, "needs_pretrained", False) and not weights and not getattr(method, "trajectory", None):
            raise DipkitError(f"{self.method} needs a pre-trained network: --set net.weights=W.pt (from "
                              "'dipkit pretrain'), or the method's trajectory=PATH")
        if self.input.kind != "auto":
            INPUTS[self.input.kind]
        if self.input.channels is not None and int(self.input.channels) <= 0:
            raise DipkitError(f"input.channels must be positive, got {self.input.channels}")
        if self.input.std < 0 or self.input.perturb < 0:
            raise DipkitError("input.std and input.perturb must be ≥ 0")
        parse_rules(self.early_stop.rule)
        es = self.early_stop
        if (int(es.window) < 1 or (es.patience is not None and int(es.patience) < 0) or not float(es.delta) > 0
                or not float(es.patience_scale) >= 0 or int(es.smooth) < 1):
            raise DipkitError("early_stop needs window ≥ 1, patience ≥ 0, patience_scale ≥ 0, delta > 0, smooth ≥ 1")
        if es.source not in ("estimate", "output"):
            raise DipkitError(f"early_stop.source must be 'estimate' or 'output', got {es.source!r}")
        if not 0.0 < float(self.validation.fraction) <= 0.5:
            raise DipkitError(f"validation.fraction must be in (0, 0.5], got {self.validation.fraction}")
        if self.validation.split not in ("entries", "views", "lines", "auto"):
            raise DipkitError(f"validation.split must be entries, views, lines or auto, got {self.validation.split!r}")
        if self.validation.score not in ("raw", "ramp", "auto"):
            raise DipkitError(f"validation.score must be raw, ramp or auto, got {self.validation.score!r}")
        if self.validation.score == "ramp" and self.validation.split in ("entries", "lines"):
            raise DipkitError("validation.score=ramp filters whole held-out views: use validation.split=views (or auto)")
        _check_extra_sections(self)
        if float(self.data.subset) < 1.0 and not (method.uses_network and method.stochastic_data):
            raise DipkitError(f"data.subset < 1 needs a method whose gradient steps fit the data term; "
                              f"{self.method!r} has none (or, like subspace-dip with L-BFGS, needs the full term)")
        if self.init.kind != "random" and (not method.uses_network or getattr(method, "direct", False)):
            raise DipkitError(f"init.kind={self.init.kind} starts a network; {self.method!r} trains none")
        return method


#: sections added with resumable runs, self-healing, stochastic DIP and schedules (kept apart so the edits stay additive)
_EXTRA_SECTIONS = ("checkpoint", "healing", "data", "schedule", "auto", "init")


def _check_extra_sections(cfg: "RunConfig") -> None:
    """Validate ``checkpoint.*``, ``healing.*``, ``data.*`` and ``schedule.*`` (one-line DipkitErrors)."""
    every = cfg.checkpoint.every
    if every in ("auto", ""):
        cfg.checkpoint.every = every = None
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 0):
        raise DipkitError(f"checkpoint.every must be auto or an integer ≥ 0 (0: off), got {every!r}")
    if not isinstance(cfg.checkpoint.keep, bool):
        raise DipkitError(f"checkpoint.keep must be true or false, got {cfg.checkpoint.keep!r}")
    h = cfg.healing
    if not isinstance(h.enabled, bool):
        raise DipkitError(f"healing.enabled must be true or false, got {h.enabled!r}")
    if int(h.max_rollbacks) < 0 or not float(h.jump_factor) > 1 or int(h.window) < 1:
        raise DipkitError("healing needs max_rollbacks ≥ 0, jump_factor > 1 and window ≥ 1")
    subset = cfg.data.subset
    if (isinstance(subset, bool) or not isinstance(subset, (int, float))
            or not 0.0 < float(subset) <= 1.0):
        raise DipkitError(f"data.subset must be a number in (0, 1] (the share of measurement blocks "
                          f"per step; 1: full data term), got {subset!r}")
    from ..engine.schedule import SCHEDULES

    sc = cfg.schedule
    if sc.kind != "auto" and sc.kind not in SCHEDULES:
        raise DipkitError(f"unknown schedule.kind {sc.kind!r} (choose from auto, {', '.join(SCHEDULES)})")
    if sc.window is not None and int(sc.window) < 1:
        raise DipkitError(f"schedule.window must be ≥ 1 (or null: half the val patience), got {sc.window}")
    if not 0.0 < float(sc.factor) < 1.0 or not 0.0 <= float(sc.floor) <= 1.0:
        raise DipkitError("schedule needs 0 < factor < 1 and 0 ≤ floor ≤ 1")
    if sc.warmup in ("auto", ""):
        sc.warmup = None
    if sc.warmup is not None and (isinstance(sc.warmup, bool) or not isinstance(sc.warmup, int) or sc.warmup < 0):
        raise DipkitError(f"schedule.warmup must be auto or an integer ≥ 0 (steps), got {sc.warmup!r}")
    from .netinit import INIT_KINDS

    ini = cfg.init
    if ini.kind not in INIT_KINDS:
        raise DipkitError(f"unknown init.kind {ini.kind!r} (choose from {', '.join(INIT_KINDS)})")
    if isinstance(ini.steps, bool) or not isinstance(ini.steps, int) or ini.steps < 1:
        raise DipkitError(f"init.steps must be an integer ≥ 1, got {ini.steps!r}")
    if ini.lr is not None and not float(ini.lr) > 0:
        raise DipkitError(f"init.lr must be > 0 (or null: the method's rate), got {ini.lr!r}")


def _coerce(key: str, value: Any, default: Any) -> Any:
    if value is None:
        return None
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        return value
    except (TypeError, ValueError):
        raise DipkitError(f"bad value for {key!r}: {value!r}") from None


def parse_overrides(items: list[str] | None) -> list[tuple[str, Any]]:
    """``["a=1", "net.channels=32"]`` → ``[("a", 1), ("net.channels", 32)]`` (YAML scalars)."""
    out = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DipkitError(f"--set expects key=value, got {item!r}")
        value = _parse_scalar(raw)
        out.append((key, value))
    return out


def _parse_scalar(raw: str) -> Any:
    """int, then float (so ``1e-3`` is a number, unlike YAML 1.1), then a YAML value, else the string."""
    text = raw.strip()
    if not text:
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    try:
        return yaml_loads(text)
    except yaml.YAMLError:
        return raw


def load_config(path: str | Path) -> dict:
    """Read a run configuration YAML (e.g. a run's ``config.yaml``) as a mapping."""
    data = load_yaml(path, what="config")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DipkitError(f"config {path}: expected a mapping at the top level")
    return data
