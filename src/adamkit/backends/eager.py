"""The eager backend: runs a rule per tensor with plain torch operations.

The readable reference the fused backend is checked against. A bfloat16 or float16 param
steps in float32 (its gradient and state upcast, the results rounded back once per step), as
torch's fused kernels and the compiled kernel of the fused backend do: rounding after every
op instead loses the small updates and makes the backends disagree by more than an ulp.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import torch
from torch import Tensor

from adamkit.precision import pack, salt, storage, unpack
from adamkit.rule import Group, Rule, Sums, scalar_dtype

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # a torch built without distributed
    DTensor = ()  # type: ignore[assignment,misc]

LOW_PRECISION = (torch.bfloat16, torch.float16)


def real_view(value: Any) -> Any:
    """Complex tensors as their real (…, 2) views; the element-wise math is then the same.
    Other state values (plain numbers) pass through."""
    return torch.view_as_real(value) if isinstance(value, Tensor) and value.is_complex() else value


def local(value: Any) -> Any:
    """A DTensor's local shard (the tensor its in-place updates write); anything else as
    it is."""
    return value.to_local() if isinstance(value, DTensor) else value


def check_shardable(rule: Rule, param: Tensor, options: Any) -> None:
    dims = {p.dim for p in param.placements if p.is_shard()}
    if not rule.shardable(param, dims, options):
        raise NotImplementedError(
            f"{rule.name} cannot step a param of shape {tuple(param.shape)} sharded along "
            f"dims {sorted(dims)}: its update reduces along them (shard along another dim)"
        )


def reduce_sums(param: Tensor, sums: Sums | None) -> Sums | None:
    """Sums an update returned over a DTensor's local shard, added over the shards (the
    mesh dims it is sharded along): every rank then holds the param's sums."""
    if sums is None or not isinstance(param, DTensor):
        return sums
    names = list(sums)
    stacked = torch.stack([sums[name] for name in names])
    for dim, placement in enumerate(param.placements):
        if placement.is_shard():
            torch.distributed.all_reduce(stacked, group=param.device_mesh.get_group(dim))
    return dict(zip(names, stacked, strict=True))


def step_group(
    rule: Rule,
    group: Group,
    params: Sequence[Tensor],
    states: MutableMapping[Tensor, dict[str, Any]],
    grad_scale: Tensor | None = None,
    update: Callable[..., Sums | None] | None = None,
) -> list[Sums | None]:
    """One step of ``rule`` for ``params`` (all with a gradient) of ``group``; returns what
    each param's update returned, for :meth:`Rule.finish_step`. Gradients are divided by
    ``grad_scale`` (torch.amp.GradScaler's scale) where one is given. ``update`` replaces
    ``rule.update`` (the fused backend passes it compiled).

    A DTensor param (FSDP2) steps as its local shard, with its state allocated like it;
    the sums an update returns are added over the shards."""
    options = rule.options(group)
    state_names = rule.state_names(options)
    state_dtype = group.get("state_dtype")
    for param in params:
        if isinstance(param, DTensor):  # FSDP2: each rank steps its shard
            check_shardable(rule, param, options)
            if storage(state_dtype, param.dtype, param.numel()) not in (None, torch.float32):
                raise NotImplementedError(
                    f"state_dtype={state_dtype!r} for a DTensor param (FSDP2) of shape "
                    f"{tuple(param.shape)}: compact state is kept for plain tensors only"
                )
    for param in params:
        state = states[param]
        if "step" not in state:
            state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
        for name in rule.scalar_state_names:
            if name not in state:
                state[name] = rule.init_state(name, param, options)
        state["step"] += 1
    sums = []
    for param in params:
        state = states[param]
        scalars = rule.scalars(group, state, options)
        for name in state_names:
            if name not in state:
                state[name] = rule.init_state(name, param, options)
        views = {name: real_view(local(value)) for name, value in state.items()}
        target = real_view(local(param))
        low = target.dtype in LOW_PRECISION
        kept = {n: storage(state_dtype, param.dtype, state[n].numel()) for n in state_names}
        kept = {n: form for n, form in kept.items() if form is not None}
        work = {n: unpack(state, n, n not in rule.nonnegative_states) for n in kept}
        if low:
            upcast = {n: v.float() for n, v in views.items() if is_like(v, target)}
            work = {**upcast, **work}
            target = target.float()
        views = {**views, **work}
        grad = real_view(local(param.grad)).to(target.dtype)
        if grad_scale is not None:
            grad = (grad / grad_scale).to(target.dtype)  # a 0-dim grad would promote
        grad = -grad if group["maximize"] else grad
        step = rule.update if update is None else update
        sums.append(reduce_sums(param, step(target, grad, views, scalars, options)))
        if low:
            real_view(local(param)).copy_(target)
        for name, value in work.items():
            if name in kept:  # the step count is read (a host sync) only for compact state
                signed = name not in rule.nonnegative_states
                key = salt(int(state["step"]), name)
                pack(state, name, value, kept[name], signed, key)
            else:
                real_view(local(state[name])).copy_(value)
    return sums


def is_like(value: Any, param: Tensor) -> bool:
    """A state tensor in the param's (low) precision: it steps upcast with it."""
    return isinstance(value, Tensor) and value.dtype == param.dtype
