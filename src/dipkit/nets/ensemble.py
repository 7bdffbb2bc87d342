"""Independent networks run as one batched network: the engine's batch dimension for ensembles.

An ensemble of ``N`` reconstructions is one engine run with batch ``B = N``: member ``b`` has its
own parameters and its own input and sees only sample ``b`` of the batch, so the summed loss of the
engine gives each member exactly the gradient of its own run, and Adam (elementwise) updates each
member as its own run would. :class:`Ensemble` holds the members and splits the batch among them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["Ensemble", "split_member_groups"]


class Ensemble(nn.Module):
    """``N`` member networks; ``forward(z)`` gives chunk ``b`` of the batch (``z.chunk(N)``) to
    member ``b`` and concatenates the outputs (methods that evaluate several inputs per sample, such
    as Self-Guided DIP, order them sample-major, so each member gets its own)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = len(self.members)
        if z.shape[0] % n:
            raise ValueError(f"a batch of {z.shape[0]} cannot be split among {n} ensemble members")
        return torch.cat([m(c) for m, c in zip(self.members, z.chunk(n, dim=0))], dim=0)

    def member_parameters(self, b: int):
        """The parameters of member ``b``."""
        return self.members[b].parameters()


def split_member_groups(groups: list[dict], net: nn.Module) -> list[dict]:
    """Optimiser parameter groups with each member's parameters in groups of their own (tag
    ``"member": b``), so that a schedule can change one member's learning rate
    (:mod:`dipkit.engine.schedule`); parameters that belong to no member (e.g. a shared input) keep
    a group without the tag. Adam's update is elementwise, so the split changes no step."""
    if not isinstance(net, Ensemble):
        return groups
    owner = {id(p): b for b, m in enumerate(net.members) for p in m.parameters()}
    out = []
    for g in groups:
        params = list(g["params"])
        opts = {k: v for k, v in g.items() if k != "params"}
        for b in range(len(net.members)):
            mine = [p for p in params if owner.get(id(p)) == b]
            if mine:
                out.append({**opts, "params": mine, "member": b})
        rest = [p for p in params if id(p) not in owner]
        if rest:
            out.append({**opts, "params": rest})
    return out
