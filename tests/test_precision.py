"""precision=auto: bf16 autocast of the network only where the hardware does bf16 natively."""

import pytest
import torch

from dipkit import precision as prec
from dipkit.run.config import RunConfig
from dipkit.errors import DipkitError
from dipkit.run import reconstruct


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend the CPU has the given /proc/cpuinfo flags."""

    def set_flags(*flags):
        monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset(flags))

    return set_flags


def test_auto_is_the_default_and_resolves_by_cpu_flags(cpu_flags):
    assert RunConfig().precision == "auto"
    cpu_flags("avx2", "fma")
    assert prec.resolve_precision("auto", "cpu") == "fp32"
    cpu_flags("avx2", "avx512f", "avx512_bf16")
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    cpu_flags("avx2", "amx_bf16", "amx_tile")
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    assert prec.resolve_precision("fp32", "cpu") == "fp32"
    cpu_flags()
    assert prec.resolve_precision("bf16", "cpu") == "bf16"  # explicit: kept (emulated)


def test_auto_respects_method_opt_out_and_baselines(cpu_flags):
    from dipkit.methods import make_method

    cpu_flags("avx512_bf16")
    assert prec.resolve_precision("auto", "cpu", make_method("dip")) == "bf16"
    assert prec.resolve_precision("auto", "cpu", make_method("linearised-dip")) == "fp32"
    assert prec.resolve_precision("auto", "cpu", make_method("tv")) == "fp32"


def test_cuda_detection(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prec.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert prec.resolve_precision("auto", "cuda") == "fp32"


@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None, 32])
def test_bad_precision_is_one_line_error(bad):
    cfg = RunConfig(precision=bad)
    with pytest.raises(DipkitError, match="precision must be auto, fp32 or bf16") as info:
        cfg.validate()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("flags, want", [((), "fp32"), (("avx512_bf16",), "bf16")])
def test_run_records_resolved_precision(tmp_path, ct_problem, tiny_cfg, cpu_flags, flags, want):
    from dipkit.run.config import load_config

    cpu_flags(*flags)
    cfg = tiny_cfg("dip", iterations=3)
    res = reconstruct(ct_problem, cfg, tmp_path / "run", quiet=True)
    assert res["precision"] == want and res.config["precision"] == want
    assert res["request"]["precision"] == "auto"
    assert load_config(tmp_path / "run" / "config.yaml")["precision"] == want
    assert res.reconstruction.dtype == torch.float32


def test_linearised_dip_runs_fp32_under_auto(ct_problem, tiny_cfg, cpu_flags):
    cpu_flags("amx_bf16")
    res = reconstruct(ct_problem, tiny_cfg("linearised-dip", iterations=2), quiet=True)
    assert res["precision"] == "fp32"
