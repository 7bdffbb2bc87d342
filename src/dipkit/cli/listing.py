"""``dipkit methods``, ``dipkit samples``, ``dipkit nets``: the registries, one line each."""

from __future__ import annotations

from .common import Verb

__all__ = ["METHODS", "SAMPLES", "NETS", "FAMILY_ORDER"]

#: the method family's order in listings (CT paper Table 1); plug-ins follow alphabetically
FAMILY_ORDER = ["dip", "dip-tv", "dip-tv-hqs", "dip-wtv-admm", "dip-constrained", "deepred", "dip-denoiser-hqs",
                "dip-denoiser-admm", "dip-admm-v1", "dip-admm-v2", "self-guided", "aseqdip", "sgld",
                "linearised-dip", "subspace-dip", "naive", "fbp", "tv", "pnp-admm"]


def _methods(args) -> int:
    from ..methods import METHODS as registry

    catalogue = registry.catalogue()  # imports no method module
    names = [n for n in FAMILY_ORDER if n in catalogue] + sorted(n for n in catalogue if n not in FAMILY_ORDER)
    width = max(len(n) for n in names)
    for name in names:
        entry = catalogue[name]
        print(f"{name:<{width}}  {entry['description']}")
        ref, alg = entry.get("reference", ""), entry.get("algorithm", "")
        if alg and alg not in ref:
            ref += f" [{alg}]"
        print(f"{'':<{width}}  ref: {ref}")
    print(f"{'auto':<{width}}  the method chosen without a ground truth: a portfolio per task ranked by held-out "
          "misfit, by successive halving; returns the stack of least held-out misfit when it is clearly "
          "better, refit on all data (--combine K averages the K best)")
    print(f"{'':<{width}}  ref: Jamieson & Talwalkar, AISTATS 2016 (successive halving); Breiman, Machine "
          "Learning 1996 (stacking); dipkit.run.auto")
    return 0


def _table(entries: dict[str, str], width: int | None = None) -> int:
    width = width or max(map(len, entries))
    for name, desc in entries.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def _samples(args) -> int:
    from ..io import list_samples

    return _table(list_samples())


def _nets(args) -> int:
    from ..nets import list_nets

    _table(list_nets())
    print("\nevery preset also takes net.weights=PATH: start from pre-trained weights ('dipkit pretrain')")
    return 0


METHODS = Verb("list the methods with a one-line description and reference", _methods)
SAMPLES = Verb("list the bundled sample images", _samples)
NETS = Verb("list the network presets", _nets)
