r"""Independent networks run as one batched network: the engine's batch dimension for ensembles.

An ensemble of ``N`` reconstructions is one engine run with batch ``B = N``: member ``b`` has its
own parameters and its own input and sees only sample ``b`` of the batch, so the summed loss of the
engine gives each member exactly the gradient of its own run, and Adam (elementwise) updates each
member as its own run would. Two networks hold the members and split the batch among them:

* :class:`Ensemble` (the *loop*): a list of member networks run one after another;
* :class:`StackedEnsemble` (*stacked*): one parameter tensor per parameter name with a leading
  member dimension ``N``; the members run as one vectorised call
  (``torch.func.vmap(functional_call(template, θ_b, z_b))``: PyTorch turns the members'
  convolutions into grouped convolutions), and the optimiser updates ``N`` times fewer tensors.

Both give member ``b`` the inputs ``z.chunk(N)[b]`` (sample-major: a method may pass ``k`` inputs
per member) and concatenate the outputs in member order, so the engine, the methods and the
stopping rules see the same batch either way; the members' results agree to float rounding (the
vectorised convolutions sum in another order).

**Per-member learning rates with shared tensors.** A schedule lowers one member's rate while
the others keep theirs (:mod:`dipkit.engine.schedule`). The loop gives each member its own
parameter groups (:func:`split_member_groups`, tag ``"member": b``). A stacked group holds all
members, so it carries the members' rates ``η_b`` in ``group["member_lr"]`` and steps at
``η = max_b η_b`` (``group["lr"]``); after the optimiser's step the engine rescales each member's
slice of the update (:func:`rescale_member_updates`),

.. math:: \theta_b \leftarrow \theta_b^{old} + s_b\,(\theta_b - \theta_b^{old}),\qquad s_b = \eta_b/\eta ,

only while some :math:`s_b \ne 1`. This is exact (up to rounding) for every optimiser whose update
is linear in the rate and elementwise — SGD (with or without momentum, weight decay, Nesterov),
Adam, AdamW: their update is :math:`-\eta\,u` with a direction :math:`u` (Adam:
:math:`\hat m/(\sqrt{\hat v}+\epsilon)`, AdamW: :math:`\hat m/(\sqrt{\hat v}+\epsilon) + \lambda\theta`,
SGD: the momentum buffer) that its state builds from the gradients alone, never from the rate;
so rescaling the step by :math:`s_b` is the step at rate :math:`s_b\eta`, and the optimiser's state
(moments, step count) is what member ``b``'s own run would hold. Other optimisers (L-BFGS's line
search couples all parameters) are refused (:data:`ELEMENTWISE_OPTIMIZERS`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import DipkitError

__all__ = ["Ensemble", "StackedEnsemble", "split_member_groups", "stack_reason", "ELEMENTWISE_OPTIMIZERS",
           "check_stacked_optimizer", "member_rate_groups", "rescale_member_updates"]

#: optimisers whose update is elementwise and linear in the rate: valid on stacked members (module docs)
ELEMENTWISE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


class Ensemble(nn.Module):
    """``N`` member networks; ``forward(z)`` gives chunk ``b`` of the batch (``z.chunk(N)``) to
    member ``b`` and concatenates the outputs (methods that evaluate several inputs per sample, such
    as Self-Guided DIP, order them sample-major, so each member gets its own)."""

    #: how the members run (``metrics.json``: ``ensemble.mode``)
    mode = "loop"

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


def stack_reason(members) -> str | None:
    """Why ``members`` cannot run stacked (:class:`StackedEnsemble`), or None when they can: they
    must share one architecture (class, parameter and buffer names, shapes, dtypes) and hold no
    per-member state outside their tensors (``get_extra_state``, e.g. the deep decoder's own seed),
    draw no random numbers in ``forward`` (dropout) and recompute no activations
    (``checkpointing``), which ``vmap`` does not support."""
    members = list(members)
    if len(members) < 2:
        return "one member"
    first = members[0]

    def signature(net):
        return (type(net), [(n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in net.named_parameters()],
                [(n, tuple(b.shape), b.dtype) for n, b in net.named_buffers()])

    sig = signature(first)
    if any(signature(m) != sig for m in members[1:]):
        return "the members' architectures differ"
    for mod in first.modules():
        if type(mod).get_extra_state is not nn.Module.get_extra_state:
            return f"{type(mod).__name__} keeps per-member state outside its tensors"
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            return "dropout draws random numbers in the forward pass"
        if getattr(mod, "checkpointing", False):
            return "activation checkpointing (net.checkpointing) does not run vectorised"
    if not any(True for _ in first.parameters()):
        return "the network has no parameters"
    return None


class StackedEnsemble(nn.Module):
    r"""``N`` members of one architecture as stacked tensors, run with ``vmap`` (module docs).

    Built from ``N`` member networks (each built, seeded and given its weights as for its own run:
    :func:`dipkit.run.runner.build_state`); their parameters and buffers are copied into one tensor
    per name with a leading member dimension (``stack.<name>``, shape ``[N, …]``). ``forward(z)``
    has :class:`Ensemble`'s contract: ``z.chunk(N)[b]`` goes to member ``b``, outputs concatenated
    in member order. Buffers (e.g. batch-norm running statistics) are updated per member in place.

    Differences from :class:`Ensemble`: :meth:`member_parameters` yields *views* (slices
    ``θ[b]``) of the stacked tensors — in-place changes reach the member, but the views have no
    ``.grad`` of their own (it is the slice ``θ.grad[b]``) and are not optimiser leaves; the state
    dict holds ``stack.<name>`` (``[N, …]``) instead of ``members.<b>.<name>``, so a checkpoint of
    one kind does not load into the other. :meth:`member_state_dict` and :meth:`unstack` give a
    member's own state dict and plain networks.
    """

    mode = "stacked"

    def __init__(self, members):
        super().__init__()
        members = list(members)
        why = stack_reason(members)
        if why is not None:
            raise DipkitError(f"the ensemble members cannot be stacked: {why}")
        self.n = len(members)
        template = copy.deepcopy(members[0]).to("meta")
        # the architecture, run by functional_call with the stacked tensors; not a submodule (it holds
        # no state: its tensors live on the meta device and .to()/state_dict() pass it by)
        object.__setattr__(self, "_template", template)
        stack = copy.deepcopy(template)
        named = [dict(m.named_parameters()) for m in members]
        for name, p in members[0].named_parameters():
            owner, leaf = _locate(stack, name)
            data = torch.stack([nm[name].detach() for nm in named]).clone()
            owner._parameters[leaf] = nn.Parameter(data, requires_grad=p.requires_grad)
        named_b = [dict(m.named_buffers()) for m in members]
        for name, _ in members[0].named_buffers():
            owner, leaf = _locate(stack, name)
            owner._buffers[leaf] = torch.stack([nb[name].detach() for nb in named_b]).clone()
        #: the stacked tensors, in a copy of the architecture (never called itself: its shapes are [N, …])
        self.stack = stack
        self.train(members[0].training)

    def __len__(self) -> int:
        return self.n

    def train(self, mode: bool = True):
        super().train(mode)
        self._template.train(mode)
        return self

    def _member_forward(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self._template, (params, buffers), (x,))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = self.n
        if z.shape[0] % n:
            raise ValueError(f"a batch of {z.shape[0]} cannot be split among {n} ensemble members")
        params = dict(self.stack.named_parameters())
        buffers = dict(self.stack.named_buffers())
        x = z.reshape(n, z.shape[0] // n, *z.shape[1:])  # row b*k + j → [b, j]: z.chunk(n)[b] is x[b]
        out = torch.func.vmap(self._member_forward, randomness="error")(params, buffers, x)
        return out.reshape(z.shape[0], *out.shape[2:])

    def member_parameters(self, b: int):
        """Views ``θ[b]`` of the stacked parameters: member ``b``'s (see the class docs)."""
        return (p[b] for p in self.stack.parameters())

    def member_state_dict(self, b: int) -> dict[str, torch.Tensor]:
        """Member ``b``'s state dict (copies), as its own network's ``state_dict()``."""
        return {k: v[b].detach().clone() for k, v in self.stack.state_dict().items()}

    def unstack(self) -> list[nn.Module]:
        """The members as ``N`` plain networks (copies, on the stacked tensors' device)."""
        device = next(self.stack.parameters()).device
        out = []
        for b in range(self.n):
            net = copy.deepcopy(self._template).to_empty(device=device)
            net.load_state_dict(self.member_state_dict(b))
            out.append(net.train(self.training))
        return out


def _locate(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The submodule that owns the tensor ``name`` (dotted) and the tensor's own name."""
    prefix, _, leaf = name.rpartition(".")
    return (module.get_submodule(prefix) if prefix else module), leaf


# ---------------------------------------------------------------------- optimiser groups and rates
def split_member_groups(groups: list[dict], net: nn.Module) -> list[dict]:
    """Optimiser parameter groups with each member's parameters in groups of their own (tag
    ``"member": b``), so that a schedule can change one member's learning rate
    (:mod:`dipkit.engine.schedule`); parameters that belong to no member (e.g. a shared input) keep
    a group without the tag. Adam's update is elementwise, so the split changes no step.

    For a :class:`StackedEnsemble` the stacked tensors stay in one group, tagged ``"stacked": N``
    with the members' rates ``"member_lr"`` (all the group's rate to start with; module docs)."""
    if isinstance(net, StackedEnsemble):
        mine = {id(p) for p in net.parameters()}
        out = []
        for g in groups:
            params = list(g["params"])
            opts = {k: v for k, v in g.items() if k != "params"}
            stacked = [p for p in params if id(p) in mine]
            if stacked:
                extra = {"member_lr": [float(opts["lr"])] * len(net)} if opts.get("lr") is not None else {}
                out.append({**opts, "params": stacked, "stacked": len(net), **extra})
            rest = [p for p in params if id(p) not in mine]
            if rest:
                out.append({**opts, "params": rest})
        return out
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


def check_stacked_optimizer(optimizer, net) -> None:
    """A one-line :class:`DipkitError` when ``optimizer`` cannot update stacked members independently."""
    if isinstance(net, StackedEnsemble) and not isinstance(optimizer, ELEMENTWISE_OPTIMIZERS):
        raise DipkitError(f"{type(optimizer).__name__} couples the stacked ensemble members (only Adam, AdamW and "
                          "SGD update them independently); use ensemble_mode=loop")


def member_rate_groups(optimizer) -> list[dict]:
    """The stacked groups whose members' rates are not all the group's rate (the engine rescales
    their updates, :func:`rescale_member_updates`); empty in the common case (a host-side check)."""
    out = []
    for g in optimizer.param_groups:
        rates = g.get("member_lr")
        if rates and any(r != g["lr"] for r in rates):
            out.append(g)
    return out


@torch.no_grad()
def rescale_member_updates(groups: list[dict], before: list[list[torch.Tensor]]) -> None:
    r"""After ``optimizer.step()``: :math:`\theta_b \leftarrow \theta_b^{old} + s_b(\theta_b - \theta_b^{old})`,
    :math:`s_b = \eta_b/\eta`, for every stacked tensor of ``groups`` (``before``: their values
    before the step; module docs). ``torch.lerp`` returns the new value itself where ``s_b = 1``.
    The factors are host values (the rates): one small upload per group, no read-back."""
    for g, olds in zip(groups, before):
        lr = float(g["lr"])
        s = [0.0 if lr == 0 else float(r) / lr for r in g["member_lr"]]
        weights: dict = {}
        for p, old in zip(g["params"], olds):
            key = (p.dtype, p.device)
            if key not in weights:
                weights[key] = torch.tensor(s, dtype=p.dtype).to(p.device, non_blocking=True)
            if p.shape[0] != len(s):
                raise DipkitError(f"a stacked parameter of {p.shape[0]} members has {len(s)} member rates")
            p.copy_(old.lerp_(p, weights[key].view(-1, *[1] * (p.ndim - 1))))
