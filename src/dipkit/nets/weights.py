r"""Network weights files: save a state dict atomically, load one safely into a network.

A weights file is a plain ``torch.save`` of a network's ``state_dict()`` (tensors on the CPU), as
``dipkit pretrain`` writes it (:mod:`dipkit.run.warmstart`). ``net.weights=PATH`` (a network option of
every run: ``--set net.weights=PATH``, ``dipkit.solve(..., net={"name": …, "weights": PATH})``)
starts the network from such a file instead of its random initialisation (the CT paper's warm
start, §5.1). Files are read with ``torch.load(weights_only=True)`` (no pickled code runs), and
the file must fit the network exactly: a missing, extra or differently shaped tensor is a
one-line :class:`~dipkit.errors.DipkitError` naming the tensor.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DipkitError

__all__ = ["save_weights", "read_weights", "load_weights", "check_weights"]


def save_weights(path: str | Path, net: torch.nn.Module) -> Path:
    """Write ``net.state_dict()`` (detached CPU copies) to ``path`` atomically."""
    from ..io import atomic_write

    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)
    return Path(path)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (:func:`dipkit.io.guard.read_torch`: ``torch.load(weights_only=True)``,
    on the CPU); a file that is not one is a one-line :class:`DipkitError` naming it."""
    from ..io.guard import holds, read_torch

    path = Path(path)
    sd = read_torch(path, "network weights")
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise DipkitError(f"{path} is not a network weights file (expected a state dict of tensors, the file holds "
                          f"{holds(sd)}; 'dipkit pretrain' writes them)")
    bad = next(((k, v) for k, v in sd.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))), None)
    if bad is not None:
        raise DipkitError(f"{path} is not a network weights file (expected a state dict of tensors; its entry "
                          f"{bad[0]!r} is {holds(bad[1])})")
    return sd


def check_weights(net: torch.nn.Module, sd: dict[str, torch.Tensor], source: str = "the weights") -> None:
    """Raise a one-line :class:`DipkitError` unless ``sd`` has exactly ``net``'s tensors and shapes."""
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    if missing:
        raise DipkitError(f"{source} do not fit the network: tensor {missing[0]!r} is missing "
                          f"({len(missing)} missing, {len(extra)} unexpected; same net.name and net options as "
                          "when they were trained?)")
    if extra:
        raise DipkitError(f"{source} do not fit the network: unexpected tensor {extra[0]!r} "
                          f"({len(extra)} unexpected; same net.name and net options as when they were trained?)")
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise DipkitError(f"{source} do not fit the network: tensor {k!r} has shape {tuple(sd[k].shape)} in the "
                              f"file but {tuple(v.shape)} in the network (same net options and channels?)")


def load_weights(net: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load the weights file ``path`` into ``net`` (checked by :func:`check_weights`); returns ``net``."""
    sd = read_weights(path)
    check_weights(net, sd, source=f"weights {Path(path).name}")
    with torch.no_grad():
        net.load_state_dict(sd)
    return net
