"""The fused backend: the update both backends run, compiled, over the params where they lie.

The fused backend keeps no storage of its own. Params, gradients and state are the tensors
the eager backend steps (state in ``optimizer.state``, created by the rule); each step reads
them where they are, so anything a training script does to them (``model.to(...)``,
``p.data = ...``, a loaded or edited state, shared memory) is seen at the next step as the
eager backend sees it.

Per group, the params that step share their numbers (the rule's scalars) where their step
counts and scalar state agree; those numbers reach the compiled kernel as 0-dim tensors, so
that no value a user can change is ever part of a compiled graph. Then:

* a large param whose param, gradient and state tensors are laid out alike steps in one
  kernel call over them as flat (memory-order) tensors;
* small params of one dtype whose tensors are contiguous are packed: their params,
  gradients and state are concatenated, stepped by one kernel call, and written back (for a
  model of many small tensors the cost of a call, not the bytes, bounds the step);
* anything else (vectors of ND-Adam along other axes, mixed layouts after a change of
  memory format, compact state, DTensor shards) steps through the eager backend's loop,
  with the compiled kernel where its layout allows it.

Kernels are compiled with dynamic sizes, one per rule, options, dtype and device: a new
param, a new size or a different set of params with gradients compiles nothing.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from adamkit.backends.eager import (
    DTensor,
    States,
    apply_update,
    real_view,
    start_step,
)
from adamkit.backends.eager import step_group as eager_step_group
from adamkit.precision import storage
from adamkit.rule import Group, Rule, Scalars, Sums

# params with fewer elements are packed: below it one kernel call per param costs more than
# copying the param's tensors in and out (2 CPU cores: a call costs ≈ 50 µs, copying 64 k
# float32 elements ≈ 30 µs)
PACK_BELOW = 1 << 16


def compiled(rule: Rule, options: Any, dtype: torch.dtype, device: torch.device) -> Callable:
    """:func:`apply_update` for ``rule`` under ``options``, compiled for tensors of ``dtype``
    on ``device`` with dynamic sizes; called with the arguments of :func:`apply_update`
    after ``options``. The rule and its options are constants of the kernel (they choose
    code); each kernel is a code object of its own, since dynamo counts recompiles per
    code object."""
    key = (type(rule), options, dtype, device)
    if key not in _KERNELS:

        def update(*arguments: Any) -> Sums | None:
            return apply_update(rule, options, *arguments)

        name = f"{type(rule).__name__}_update"
        code = update.__code__.replace(co_name=name, co_qualname=name)
        function = types.FunctionType(code, update.__globals__, name, None, update.__closure__)
        _KERNELS[key] = torch.compile(function, fullgraph=True)
    return _KERNELS[key]


def run_kernel(kernel: Callable, maximize: bool, stacked: Sequence[Tensor], *rest: Any) -> Any:
    """``kernel`` on the stacked param, gradient and state, their first dim (elements, or
    rows) dynamic: one graph serves every size. Only tensor sizes are dynamic; the rule's
    integers (ND-Adam's axes) stay constants of the graph, which dynamic=True would make
    symbols of."""
    if stacked[0].shape[0] > 1:  # a size-1 dim is specialised, and marking it would raise
        for tensor in stacked:
            torch._dynamo.mark_dynamic(tensor, 0)
    return kernel(maximize, stacked[0], stacked[1], rest[0], stacked[2:], *rest[1:])


_KERNELS: dict[Any, Callable] = {}


def kernel_numbers(scalars: Scalars, device: torch.device) -> dict[str, Any]:
    """The rule's numbers as 0-dim float64 tensors on ``device``: a changed value is then an
    input of the kernel, never a recompile or a constant of its graph, and what the update
    computes from them (1 − β) is computed in double precision, as from the Python floats
    of the eager backend. Booleans choose code and pass through."""
    return {
        name: value
        if isinstance(value, bool)
        else torch.as_tensor(value, dtype=torch.float64, device=device).reshape(())
        for name, value in scalars.items()
    }


def signature(state: dict[str, Any]) -> tuple[Any, ...]:
    """What a rule's scalars may read of a param's state besides its tensors: which entries
    it holds, and the values of its 0-dim and plain ones (step, ``mu_product``, SWATS'
    switch). Params with equal signatures share their numbers."""
    values = [
        (value.item() if value.dim() == 0 else None) if isinstance(value, Tensor) else value
        for value in state.values()
    ]
    return tuple(state), tuple(values)


class FusedBackend:
    """Runs a rule's compiled update over the params where they lie; holds nothing but
    the compiled kernels (shared by every optimizer of the process)."""

    def step_group(
        self,
        rule: Rule,
        group: Group,
        params: Sequence[Tensor],
        states: States,
        grad_scale: Tensor | None = None,
    ) -> list[Sums | None]:
        options = rule.options(group)
        state_dtype = group.get("state_dtype")
        if any(
            isinstance(p, DTensor) or storage(state_dtype, p.dtype, p.numel()) is not None
            for p in params
        ):
            # sharded params (FSDP2) and compact state step as on the eager backend, each
            # param through the compiled kernel where its layout allows
            return eager_step_group(rule, group, params, states, grad_scale, self.per_tensor)
        start_step(rule, options, params, states)
        names = tuple(rule.state_names(options))
        maximize = bool(group["maximize"])
        sums: dict[int, Sums | None] = {}
        buckets: dict[tuple[Any, ...], list[Tensor]] = {}
        for param in params:
            buckets.setdefault(signature(states[param]), []).append(param)
        for bucket in buckets.values():
            first = states[bucket[0]]
            scalars = rule.scalars(group, first, options)
            for param in bucket[1:]:  # scalar state the rule advanced (NAdam's mu_product)
                for name in rule.scalar_state_names:
                    states[param][name].copy_(first[name])
            packs: dict[tuple[Any, ...], list[tuple[Tensor, ...]]] = {}
            numbers: dict[tuple[Any, ...], dict] = {}
            for param in bucket:
                state = states[param]
                for name in names:
                    if name not in state:
                        state[name] = rule.init_state(name, param, options)
                target, grad = real_view(param), real_view(param.grad)
                tensors = [real_view(state[name]) for name in names]
                where = (target.dtype, target.device)
                if where not in numbers:
                    numbers[where] = kernel_numbers(scalars, target.device)
                form = rule.fused_form(target, options)
                stacked = stack(form, target, grad, tensors)
                if stacked is None:
                    arguments = (maximize, target, grad, names, tensors, scalars, grad_scale)
                    sums[id(param)] = apply_update(rule, options, *arguments)
                elif target.numel() < PACK_BELOW and not rule.per_tensor(group):
                    key = (*where, form, tuple(t.dtype for t in tensors))
                    packs.setdefault(key, []).append((param, *stacked))
                else:
                    update = compiled(rule, form.options, *where)
                    arguments = (names, numbers[where], grad_scale)
                    sums[id(param)] = run_kernel(update, maximize, stacked, *arguments)
            for (dtype, device, form, _), members in packs.items():
                update = compiled(rule, form.options, dtype, device)
                arguments = (maximize, names, members, grad_scale, numbers[dtype, device])
                result = step_pack(update, *arguments)
                # the pack's sums go to its first param, zeros to the others: the same totals
                for index, (param, *_) in enumerate(members):
                    sums[id(param)] = (
                        result
                        if result is None or index == 0
                        else {name: torch.zeros_like(value) for name, value in result.items()}
                    )
        # the kernels wrote the params in place: their autograd versions move, as in eager
        torch.autograd.graph.increment_version(list(params))
        return [sums[id(param)] for param in params]

    @staticmethod
    def per_tensor(
        rule: Rule,
        options: Any,
        maximize: bool,
        param: Tensor,
        grad: Tensor,
        names: Sequence[str],
        tensors: Sequence[Tensor],
        scalars: Scalars,
        grad_scale: Tensor | None,
    ) -> Sums | None:
        """One param as the eager backend steps it (same arguments as :func:`apply_update`),
        through the compiled kernel where its tensors stack (see :func:`stack`)."""
        form = rule.fused_form(param, options)
        stacked = stack(form, param, grad, tensors)
        arguments = (maximize, param, grad, names, tensors, scalars, grad_scale)
        if stacked is None or not param.numel():
            return apply_update(rule, options, *arguments)
        update = compiled(rule, form.options, param.dtype, param.device)
        numbers = kernel_numbers(scalars, param.device)
        return run_kernel(update, maximize, stacked, names, numbers, grad_scale)


def stack(form: Any, param: Tensor, grad: Tensor, tensors: Sequence[Tensor]) -> list | None:
    """``param``, ``grad`` and the state ``tensors`` as the kernel steps them: 1-D in memory
    order for an element-wise rule (``form.width`` 0), (rows, width) for ND-Adam's vectors
    (each state as (rows, its elements per row)). None where they are not laid out alike
    (a state in another memory order or of another shape, a strided view): the param then
    steps as on the eager backend."""
    if form is None:
        return None
    every = (param, grad, *tensors)
    if form.width:
        rows = param.shape[:1]
        for tensor in every:
            if not tensor.is_contiguous() or tensor.dim() != param.dim():
                return None
            if tensor.shape[:1] != rows:
                return None
        return [tensor.view(rows[0], -1) for tensor in every]
    if any(tensor.shape != param.shape for tensor in every):
        return None
    if all(tensor.is_contiguous() for tensor in every):
        return [tensor.view(-1) for tensor in every]
    dense = param.is_contiguous(memory_format=torch.channels_last) or param.is_contiguous(
        memory_format=torch.channels_last_3d
    )
    if not dense or any(tensor.stride() != param.stride() for tensor in every):
        return None
    return [tensor.as_strided((tensor.numel(),), (1,)) for tensor in every]


def step_pack(
    update: Callable,
    maximize: bool,
    names: Sequence[str],
    members: Sequence[Sequence[Tensor]],
    grad_scale: Tensor | None,
    numbers: dict,
) -> Sums | None:
    """Step small params in one kernel call: their stacked params, gradients and state
    concatenated, stepped, and the params and state written back."""
    params = [member[1] for member in members]  # each: param, its stacked param, grad, state
    grads = [member[2] for member in members]
    states = [member[3:] for member in members]
    flat_param, flat_grad = torch.cat(params), torch.cat(grads)
    flat_states = [torch.cat([tensors[i] for tensors in states]) for i in range(len(names))]
    if not flat_param.numel():
        return None
    stacked = [flat_param, flat_grad, *flat_states]
    result = run_kernel(update, maximize, stacked, names, numbers, grad_scale)
    targets = params + [tensors[i] for i in range(len(names)) for tensors in states]
    sources = list(flat_param.split([p.shape[0] for p in params]))
    for i, flat in enumerate(flat_states):
        sources += flat.split([tensors[i].shape[0] for tensors in states])
    torch._foreach_copy_(targets, sources)
    return result
