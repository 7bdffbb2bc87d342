r"""Bench configuration: a YAML grid of cases × methods × seeds, validated (unknown keys raise).

Schema (every key optional unless marked *required*)::

    description: one line, shown by ``dipkit bench --list``
    seeds: [0, 1, 2]            # run seeds (network init, input, per-step noise); default [0]
    batch_seeds: true           # the seeds of one (case instance, method) run as one batched engine
                                # run (dipkit.run.batched) where the method allows it: true (default) |
                                # false | N (at most N seeds per batch); same run dirs and results
    defaults:                   # RunConfig settings for every method (a method entry overrides them)
      device: auto              # auto | cpu | cuda | cuda:N
      precision: auto           # auto (bf16 where native, else fp32) | fp32 | bf16
      log_every: 10             # history / PSNR sampling period (steps)
      fov_mask: false           # CT: measure PSNR/SSIM inside the inscribed disc only
      iterations: 2000          # steps (a method's own default when absent)
      net: {name: unet, channels: [16, 16, 32, 32, 64]}   # preset + options (dipkit nets)
      input: {kind: noise, std: 0.1, channels: null, perturb: 0.0}
      early_stop: {rule: wmv:record, window: 100, patience: 1000, delta: 0.99}
    cases:                      # *required*, a list
      - name: ct30              # directory/table name; default: the task name
        task: ct                # *required*: a task of 'dipkit simulate' (ct, ct-fan, mri, …)
        sample: ct              # one image: a bundled sample (dipkit samples) …
        image: slice.png        # … or a file (relative paths: relative to the YAML file)
        samples: [ct, shepp-logan]   # several images (each is an "instance" of the case)
        images: [a.png, b.png]
        size: 128               # centre-crop + resize to size × size (default: keep)
        channels: gray          # auto | gray | rgb (default: what the task wants)
        options: {views: [18, 30], noise_level: 0.02}   # task options (the simulate flags);
                                # a list expands into one case per value: ct30-views18, ct30-views30
        noise_seeds: [0]        # simulation seeds; each is an instance of the case (default [0])
    methods:                    # *required*, a list
      - method: dip             # *required*: a registered method (dipkit methods)
        label: dip-fbp-input    # row name (unique; default: the method name)
        iterations: 2000
        params: {lr: 1.0e-3}    # the method's hyper-parameters (checked against its signature)
        net: {…}  input: {…}  early_stop: {…}   # as in defaults (a different net name
                                # drops the default net's options)
        device: …  precision: …  log_every: …  fov_mask: …
        seeds: [0]              # overrides the top-level seeds for this method
        batch_seeds: false      # overrides the top-level batch_seeds for this method
        cases: [ct30-views18]   # only these cases (names or fnmatch patterns; default all)

A *case* is one task with one setting of its options; it has one or more *instances* (image ×
noise seed), each simulated once into ``problem.npz``. A *run* is (case instance, method label,
seed). Tables aggregate a row per (case, method label) over instances and seeds.

YAML numbers such as ``1e-4`` are read as floats (YAML 1.1 would read them as strings).
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..run.config import load_yaml, yaml_loads
from ..errors import DipkitError

__all__ = ["BenchConfig", "CaseSpec", "Instance", "MethodSpec", "load_bench_config", "parse_bench_config",
           "list_presets", "preset_path"]

TOP_KEYS = ("description", "seeds", "batch_seeds", "defaults", "cases", "methods")
RUN_KEYS = ("iterations", "device", "precision", "log_every", "fov_mask", "net", "input", "early_stop")
DEFAULT_KEYS = RUN_KEYS
CASE_KEYS = ("name", "task", "sample", "samples", "image", "images", "size", "channels", "options",
             "noise_seeds")
METHOD_KEYS = ("method", "label") + RUN_KEYS + ("params", "seeds", "cases", "batch_seeds")

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


# ---------------------------------------------------------------------- presets
def _presets_dir():
    from importlib.resources import files

    return files("dipkit.bench") / "presets"


def list_presets() -> dict[str, str]:
    """``{preset name: one-line description}`` of the presets shipped in ``dipkit/bench/presets``."""
    out = {}
    for entry in sorted(_presets_dir().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            try:
                data = yaml_loads(entry.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                data = {}
            desc = data.get("description", "") if isinstance(data, dict) else ""
            out[entry.name[: -len(".yaml")]] = " ".join(str(desc).split())
    return out


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; unknown names raise :class:`DipkitError`."""
    presets = list_presets()
    if name not in presets:
        raise DipkitError(f"unknown bench preset {name!r} (known: {', '.join(presets)}; see 'dipkit bench --list')")
    return Path(str(_presets_dir() / f"{name}.yaml"))


# ---------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class Instance:
    """One simulated problem of a case: an image and a noise seed."""

    name: str  # directory name, unique within the case
    sample: str | None
    image: str | None  # absolute path
    noise_seed: int


@dataclass
class CaseSpec:
    name: str
    task: str
    options: dict
    size: int | None
    channels: str | None
    instances: list[Instance]

    def instance_spec(self, inst: Instance) -> dict:
        """What the problem of ``inst`` is simulated from (stored as ``case.json``; resume compares it)."""
        spec = {"case": self.name, "task": self.task, "options": dict(self.options), "size": self.size,
                "channels": self.channels, "sample": inst.sample, "image": inst.image,
                "noise_seed": inst.noise_seed}
        if inst.image is not None:
            try:
                spec["image_sha1"] = hashlib.sha1(Path(inst.image).read_bytes()).hexdigest()
            except OSError as exc:
                raise DipkitError(f"case {self.name!r}: cannot read image {inst.image}: {exc.strerror}") from None
        return spec


@dataclass
class MethodSpec:
    label: str
    method: str
    run: dict  # RunConfig.update() input (without seed)
    seeds: list[int]
    cases: list[str] | None  # patterns
    batch_seeds: int = 0  # seeds per batched run: 0 all (default), 1 one by one, N at most N

    def applies_to(self, case: str) -> bool:
        return self.cases is None or any(fnmatch.fnmatchcase(case, p) for p in self.cases)

    def run_config(self, seed: int):
        """The :class:`~dipkit.run.config.RunConfig` of this method for ``seed``."""
        from ..run.config import RunConfig

        cfg = RunConfig()
        cfg.update(self.run, source=f"bench method {self.label!r}")
        cfg.seed = int(seed)
        return cfg


@dataclass
class BenchConfig:
    description: str
    cases: list[CaseSpec]
    methods: list[MethodSpec]
    source: str = "bench config"
    raw: dict = field(default_factory=dict)

    def validate_names(self) -> None:
        """Check what needs the registries: tasks and their options, and every method's run
        configuration (:meth:`dipkit.run.config.RunConfig.validate`: method and parameters, network,
        input, early stopping).

        Done when a bench starts (not when a preset is listed), so presets may name methods and
        tasks that a given install does not have yet.
        """
        from ..tasks import get_task

        for case in self.cases:
            task = get_task(case.task)
            wrong = sorted(set(case.options) - set(task.options))
            if wrong:
                raise DipkitError(f"{self.source}: case {case.name!r}: task {task.name!r} does not take option(s) "
                                  f"{', '.join(wrong)} (it takes: {', '.join(task.options) or 'none'})")
        for m in self.methods:
            try:
                m.run_config(m.seeds[0]).validate()
            except DipkitError as exc:
                raise DipkitError(f"{self.source}: method {m.label!r}: {exc}") from None


# ---------------------------------------------------------------------- parsing
def load_bench_config(path: str | Path) -> BenchConfig:
    """Read and check a bench YAML file (see the module docs for the schema)."""
    path = Path(path)
    return parse_bench_config(load_yaml(path, what="bench config"), base_dir=path.resolve().parent,
                              source=str(path))


def _entries(data: dict, key: str, source: str):
    """``(where, entry)`` for each entry of the non-empty list ``data[key]``."""
    raw = data.get(key)
    if not isinstance(raw, list) or not raw:
        raise DipkitError(f"{source}: '{key}' must be a non-empty list")
    return [(f"{source}: {key}[{i}]", entry) for i, entry in enumerate(raw)]


def _check_keys(obj: Any, allowed: tuple[str, ...], where: str) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise DipkitError(f"{where}: expected a mapping, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise DipkitError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (known: {', '.join(allowed)})")
    return obj


def _int_list(value: Any, where: str) -> list[int]:
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int):
            raise DipkitError(f"{where}: expected an integer or a list of integers, got {v!r}")
        out.append(int(v))
    if not out:
        raise DipkitError(f"{where}: empty list")
    if len(set(out)) != len(out):
        raise DipkitError(f"{where}: repeated values {out}")
    return out


def _str_list(value: Any, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise DipkitError(f"{where}: expected a name or a list of names, got {value!r}")
    return [str(v) for v in items]


def safe_name(text: str) -> str:
    return _SAFE_NAME.sub("_", str(text)).strip("_") or "x"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e15 else repr(v)
    return str(v)


def _run_section(entry: dict, where: str) -> dict:
    run: dict = {}
    for key in RUN_KEYS:
        if key not in entry:
            continue
        value = entry[key]
        if key in ("net", "input", "early_stop"):
            if key == "early_stop" and (value is None or isinstance(value, (str, bool))):
                value = {"rule": None if value in (None, False, "none", "off") else value}
            if not isinstance(value, dict):
                raise DipkitError(f"{where}.{key}: expected a mapping, got {value!r}")
            value = dict(value)
        run[key] = value
    return run


def _merge_run(defaults: dict, own: dict) -> dict:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()}
    for key, value in own.items():
        if key in ("input", "early_stop") and key in merged:
            merged[key] = {**merged[key], **value}
        elif key == "net" and key in merged:
            base = merged["net"]
            same = value.get("name", base.get("name", "unet")) == base.get("name", "unet")
            merged["net"] = {**base, **value} if same else dict(value)
        else:
            merged[key] = value
    return merged


def _batch_seeds(value: Any, where: str) -> int:
    """``batch_seeds``: true → 0 (all seeds in one batch), false → 1 (one by one), N ≥ 1 → N."""
    if value is True:
        return 0
    if value is False:
        return 1
    if isinstance(value, int) and value >= 1:
        return value
    raise DipkitError(f"{where}: expected true, false or a positive integer, got {value!r}")


def parse_bench_config(data: Any, *, base_dir: str | Path = ".", source: str = "bench config") -> BenchConfig:
    """Build a :class:`BenchConfig` from the YAML document ``data`` (schema: module docs)."""
    if not isinstance(data, dict):
        raise DipkitError(f"{source}: expected a mapping at the top level")
    _check_keys(data, TOP_KEYS, source)
    base_dir = Path(base_dir)
    description = " ".join(str(data.get("description") or "").split())
    seeds = _int_list(data.get("seeds", [0]), f"{source}: seeds")
    batch_seeds = _batch_seeds(data.get("batch_seeds", True), f"{source}: batch_seeds")
    defaults = _run_section(_check_keys(data.get("defaults"), DEFAULT_KEYS, f"{source}: defaults"),
                            f"{source}: defaults")

    # ---- cases
    cases: list[CaseSpec] = []
    for where, entry in _entries(data, "cases", source):
        _check_keys(entry, CASE_KEYS, where)
        if not entry:
            raise DipkitError(f"{where}: empty case")
        task = entry.get("task")
        if not isinstance(task, str) or not task:
            raise DipkitError(f"{where}: 'task' is required (e.g. task: ct)")
        name = safe_name(entry.get("name") or task)
        sources: list[tuple[str | None, str | None]] = []
        for key in ("sample", "samples"):
            if key in entry:
                sources += [(s, None) for s in _str_list(entry[key], f"{where}.{key}")]
        for key in ("image", "images"):
            if key in entry:
                for p in _str_list(entry[key], f"{where}.{key}"):
                    path = Path(p).expanduser()
                    sources.append((None, str((base_dir / path).resolve() if not path.is_absolute() else path)))
        if not sources:
            raise DipkitError(f"{where}: give an image source (sample, samples, image or images)")
        size = entry.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise DipkitError(f"{where}.size: expected a positive integer, got {size!r}")
        channels = entry.get("channels")
        if channels is not None and channels not in ("auto", "gray", "rgb"):
            raise DipkitError(f"{where}.channels: expected auto, gray or rgb, got {channels!r}")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise DipkitError(f"{where}.options: expected a mapping of task options")
        noise_seeds = _int_list(entry.get("noise_seeds", [0]), f"{where}.noise_seeds")
        # instances: images × noise seeds
        stems = [s if s is not None else Path(p).stem for s, p in sources]
        if len(set(stems)) != len(stems):
            stems = [f"{k}-{st}" for k, st in enumerate(stems)]
        instances = [Instance(name=safe_name(f"{st}_sim{ns}"), sample=s, image=p, noise_seed=ns)
                     for (s, p), st in zip(sources, stems) for ns in noise_seeds]
        # expand list-valued options
        grid_keys = [k for k, v in options.items() if isinstance(v, list)]
        for k in grid_keys:
            if not options[k]:
                raise DipkitError(f"{where}.options.{k}: empty list")
        for combo in itertools.product(*(options[k] for k in grid_keys)):
            opts = dict(options)
            opts.update(zip(grid_keys, combo))
            suffix = "".join(f"-{safe_name(k)}{safe_name(_fmt_value(v))}" for k, v in zip(grid_keys, combo))
            cases.append(CaseSpec(name=name + suffix, task=task, options=opts, size=size, channels=channels,
                                  instances=list(instances)))
    names = [c.name for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DipkitError(f"{source}: repeated case name(s) {', '.join(dup)} (give each case a distinct 'name')")

    # ---- methods
    methods: list[MethodSpec] = []
    for where, entry in _entries(data, "methods", source):
        if isinstance(entry, str):
            entry = {"method": entry}
        _check_keys(entry, METHOD_KEYS, where)
        method = entry.get("method")
        if not isinstance(method, str) or not method:
            raise DipkitError(f"{where}: 'method' is required (e.g. method: dip)")
        label = safe_name(entry.get("label") or method)
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise DipkitError(f"{where}.params: expected a mapping of hyper-parameters")
        run = _merge_run(defaults, _run_section(entry, where))
        run["method"] = method
        run["params"] = dict(params)
        m_seeds = _int_list(entry["seeds"], f"{where}.seeds") if "seeds" in entry else list(seeds)
        pats = _str_list(entry["cases"], f"{where}.cases") if "cases" in entry else None
        if pats is not None:
            for p in pats:
                if not any(fnmatch.fnmatchcase(n, p) for n in names):
                    raise DipkitError(f"{where}.cases: {p!r} matches no case (cases: {', '.join(names)})")
        m_batch = (_batch_seeds(entry["batch_seeds"], f"{where}.batch_seeds") if "batch_seeds" in entry
                   else batch_seeds)
        spec = MethodSpec(label=label, method=method, run=run, seeds=m_seeds, cases=pats, batch_seeds=m_batch)
        spec.run_config(m_seeds[0])  # parse errors (bad keys/values) now
        methods.append(spec)
    labels = [m.label for m in methods]
    dup = sorted({n for n in labels if labels.count(n) > 1})
    if dup:
        raise DipkitError(f"{source}: repeated method label(s) {', '.join(dup)} (give each entry a distinct 'label')")
    return BenchConfig(description=description, cases=cases, methods=methods, source=source, raw=data)
