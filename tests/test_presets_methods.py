"""The bench presets configure the guided / Bayesian methods as their docs say: every SGLD row
leaves samples after its burn-in for the posterior mean, every Self-Guided DIP row on a CT case
starts from the FBP, and every case gets exactly one Self-Guided DIP row."""

import pytest

from dipkit.bench.config import list_presets, load_bench_config, preset_path
from dipkit.methods import make_method


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_preset_sgld_rows_form_a_posterior_mean(name):
    cfg = load_bench_config(preset_path(name))
    for m in cfg.methods:
        if m.method != "sgld":
            continue
        run = m.run_config(m.seeds[0])
        method = make_method("sgld", **run.params)
        steps = int(run.iterations or method.default_iterations)
        burn_in = method.burn_in_for(steps)          # raises when no step is left
        assert steps - burn_in >= steps // 4, (name, m.label, burn_in, steps)


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_preset_self_guided_rows_start_from_fbp_on_ct(name):
    cfg = load_bench_config(preset_path(name))
    rows = [m for m in cfg.methods if m.method == "self-guided"]
    for case in cfg.cases:
        mine = [m for m in rows if m.applies_to(case.name)]
        if not rows:
            continue
        assert len(mine) == 1, (name, case.name, [m.label for m in mine])
        kind = mine[0].run_config(0).input.kind
        if case.task.startswith("ct"):
            from dipkit.inputs import AUTO_INPUT

            assert kind == "fbp" or (kind == "auto" and AUTO_INPUT["ct"] == "fbp"), (name, case.name)
