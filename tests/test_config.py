import pytest

from dipkit.run.config import RunConfig, parse_overrides
from dipkit.errors import DipkitError


def test_overrides_route_to_sections():
    cfg = RunConfig()
    for k, v in parse_overrides(["lr=1e-3", "net.channels=16", "net.name=skip", "input.kind=fbp",
                                 "es.window=50", "iterations=10", "precision=bf16"]):
        cfg.set(k, v)
    assert cfg.params == {"lr": 1e-3}
    assert cfg.net.name == "skip" and cfg.net.options == {"channels": 16}
    assert cfg.input.kind == "fbp" and cfg.early_stop.window == 50
    assert cfg.iterations == 10 and cfg.precision == "bf16"


def test_round_trip_through_dict():
    cfg = RunConfig(method="tv", iterations=7)
    cfg.params["alpha"] = 0.3
    cfg.early_stop.rule = "wmv:record"
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize("bad", ["input.nope=1", "early_stop.foo=2", "noequals"])
def test_unknown_keys_raise(bad):
    cfg = RunConfig()
    with pytest.raises(DipkitError):
        for k, v in parse_overrides([bad]):
            cfg.set(k, v)


def test_dotted_method_params_become_mappings():
    from dipkit.methods import make_method

    cfg = RunConfig(method="dip-denoiser-admm")
    for k, v in parse_overrides(["denoiser=drunet", "denoiser_options.weights=w.pth", "denoiser_options.x=2"]):
        cfg.set(k, v)
    assert cfg.params == {"denoiser": "drunet", "denoiser_options": {"weights": "w.pth", "x": 2}}
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    cfg = RunConfig(method="dip")
    cfg.set("bogus.key", 1)
    with pytest.raises(DipkitError, match="unknown parameter"):
        make_method("dip", **cfg.params)
    cfg.set("lr", 1e-3)
    with pytest.raises(DipkitError, match="not a mapping"):
        cfg.set("lr.x", 1)


def test_unknown_method_param_raises_when_built():
    from dipkit.methods import make_method

    with pytest.raises(DipkitError, match="unknown parameter"):
        make_method("dip", alpha=1.0)


@pytest.mark.parametrize("field,value", [("iterations", 0), ("log_every", 0), ("device", "tpu"),
                                         ("precision", "fp8"), ("method", "nope")])
def test_validate(field, value):
    cfg = RunConfig()
    setattr(cfg, field, value)
    with pytest.raises(DipkitError):
        cfg.validate()
