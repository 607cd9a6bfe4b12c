"""The fused backend: a rule's update compiled once and run over flat storage.

Per param group, (device, dtype) and :class:`~adamkit.rule.FusedForm`, the params, their
gradients and every state tensor live in flat buffers, and each param's ``.data`` and each
state entry is a view into them. The rule's :meth:`~adamkit.rule.Rule.update`, the same
function the eager backend calls, then runs once over the whole buffer (1-D, or as rows for
ND-Adam's vectors) as one ``torch.compile``d kernel: one kernel per rule, options, dtype and
buffer shape, the per-step numbers passed as 0-dim tensors so that changing them never
recompiles.

Gradients are copied into the flat gradient buffer at each step (``p.grad`` is never
replaced), unless they already are its views (:meth:`FusedBackend.adopt_grads`).
"""

from __future__ import annotations

import types
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from adamkit.backends.eager import LOW_PRECISION, DTensor, real_view
from adamkit.backends.eager import step_group as eager_step_group
from adamkit.precision import (
    ABSMAX,
    BLOCK,
    EIGHT_BIT,
    blocks_of,
    decode,
    encode,
    salt,
    storage,
    unpack,
)
from adamkit.rule import FusedForm, Group, Rule, Sums, scalar_dtype

States = MutableMapping[Tensor, dict[str, Any]]
ALIGN = 16  # elements: each param's slice of a flat buffer starts on a multiple of it
# elements of one block of rows (width > 0): 2 MB of float32 per buffer, which measured
# fastest for ND-Adam on 2 CPU cores (0.29 Gparam/s unblocked, 0.6–0.77 in blocks of 0.25–2 M)
ROW_BLOCK = 1 << 19
# elements of one block of a layout with compact state on the CPU (a multiple of the 8-bit
# code's block). Adam, 20 M params, 2 CPU cores, 8-bit / bfloat16 state in Gparam/s:
# 2^16 0.12 / 0.26, 2^18 0.15 / 0.38, 2^20 0.16 / 0.44, unblocked 0.08 / 0.46
COMPACT_BLOCK = 1 << 20


def _kernel(rule, options, maximize, param, grad, names, tensors, scalars, grad_scale, codecs=()):
    if grad_scale is not None:
        grad = grad / grad_scale
    if maximize:
        grad = -grad
    if not codecs:
        return rule.update(param, grad, dict(zip(names, tensors, strict=True)), scalars, options)
    # compact state (adamkit.precision): decoded to float32, stepped, encoded back in place
    stored, state, position = {}, {}, 0
    for name, (kept, signed) in zip(names, codecs, strict=True):
        count = 2 if kept == EIGHT_BIT else 1
        stored[name] = tensors[position : position + count]
        position += count
        state[name] = decode(stored[name], signed)
    # a low-precision param steps in float32 with its decoded state, rounded once
    work = param.float() if param.dtype in LOW_PRECISION else param
    sums = rule.update(work, grad.to(work.dtype), state, scalars, options)
    if work is not param:
        param.copy_(work)
    for name, (kept, signed) in zip(names, codecs, strict=True):
        key = scalars.get(name + "_key", 0)
        for target, new in zip(stored[name], encode(state[name], kept, signed, key), strict=True):
            target.copy_(new)
    return sums


def compiled_update(rule: Rule, dynamic: bool) -> Callable[..., Any]:
    """``_kernel`` compiled as a code object of its own (dynamo counts recompiles per code
    object, so every cached kernel below gets its own budget)."""
    name = f"{type(rule).__name__}_{'tensor' if dynamic else 'fused'}_update"
    code = _kernel.__code__.replace(co_name=name, co_qualname=name)
    function = types.FunctionType(code, _kernel.__globals__, name, _kernel.__defaults__)
    return torch.compile(function, dynamic=dynamic, fullgraph=True)


_KERNELS: dict[Any, Callable[..., Any]] = {}


def kernel(
    rule: Rule, options: Any, maximize: bool, flat: Tensor, codecs: tuple[Any, ...] = ()
) -> Callable[..., Any]:
    """The compiled update of ``rule`` under ``options`` for buffers like ``flat``, its state
    kept as ``codecs`` says (per state: its form and whether it is signed; empty for plain
    state). Sizes are static: a kernel specialised to its length runs about 1.4× faster on
    CPU than a dynamic-size one, and a model's buffers keep their length."""
    key = (type(rule), options, maximize, flat.dtype, flat.device, flat.shape, codecs)
    if key not in _KERNELS:
        _KERNELS[key] = compiled_update(rule, dynamic=False)
    return _KERNELS[key]


_TENSOR_KERNELS: dict[Any, Callable[..., Any]] = {}


def tensor_kernel(rule: Rule, options: Any, param: Tensor) -> Callable[..., Any]:
    """The compiled update for a param that steps alone (its rule's fused form is None:
    ND-Adam's vectors along other axes than ``p[j]``): sizes dynamic, so that one kernel
    serves every shape of a dtype and number of dims."""
    key = (type(rule), options, param.dtype, param.device, param.ndim)
    if key not in _TENSOR_KERNELS:
        compiled = compiled_update(rule, dynamic=True)
        names = tuple(rule.state_names(options))

        def update(param, grad, state, scalars, options):
            numbers = {n: as_kernel_scalar(v) for n, v in scalars.items()}
            tensors = [state[n] for n in names]
            if param.ndim == 0:
                # a compiled graph takes a 0-dim float64 CPU input for a number and drops
                # its in-place updates: 1-element views keep them
                param, grad, tensors = param.view(1), grad.view(1), [t.view(1) for t in tensors]
            return compiled(rule, options, False, param, grad, names, tensors, numbers, None)

        _TENSOR_KERNELS[key] = update
    return _TENSOR_KERNELS[key]


def as_kernel_scalar(value: Any) -> Any:
    """Numbers as 0-dim float64 tensors (a changed value is then not a recompile); booleans,
    which choose code, and tensors pass through."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    return value


def place(param: Tensor) -> tuple[Any, ...]:
    """Where ``param``'s data lives: address, shape and strides (a new ``p.data`` that is a
    view of the same storage, such as ``p.data.t()``, changes the last two)."""
    return param.data_ptr(), param.shape, param.stride()


def dense_strides(tensor: Tensor) -> tuple[int, ...]:
    """The strides of ``tensor`` where it is dense (a permuted layout such as channels_last
    keeps them), contiguous strides otherwise."""
    return torch.empty_like(tensor, device="meta").stride()


@dataclass
class Layout:
    """Flat buffers for params of one group, device, dtype and fused form, and the views
    that the params, their gradients and their state entries are of them. Param ``i`` holds
    the rows ``starts[i]…`` of the stacked tensor (a row is one element for width 0)."""

    form: FusedForm
    kept: Any  # how its per-element state is kept (adamkit.precision.storage); None: plain
    params: list[Tensor]
    starts: list[int]
    rows: int
    flat_param: Tensor
    flat_grad: Tensor
    flat_state: dict[str, Tensor] = field(default_factory=dict)
    flat_scalar: dict[str, Tensor] = field(default_factory=dict)
    places: list[tuple[Any, ...]] = field(default_factory=list)  # per param: see `place`
    grad_views: list[Tensor] = field(default_factory=list)
    state_views: dict[str, list[Tensor]] = field(default_factory=dict)

    def stacked(self, flat: Tensor) -> Tensor:
        """``flat`` as the tensor the kernel steps: 1-D, or (rows, width)."""
        return flat.view(self.rows, -1) if self.form.width else flat

    def view(self, flat: Tensor, index: int, like: Tensor | None = None) -> Tensor:
        """Param ``index``'s part of ``flat`` (a flat param, gradient or state buffer),
        shaped and strided like ``like`` (default: the param's real view)."""
        like = real_view(self.params[index]) if like is None else like
        per_row = flat.numel() // self.rows if self.rows else 0
        return flat.as_strided(like.shape, dense_strides(like), self.starts[index] * per_row)

    def fits(self, form: FusedForm, kept: Any, params: Sequence[Tensor], states: States) -> bool:
        """This layout is of ``form`` and ``kept`` and still holds ``params``."""
        return self.form == form and self.kept == kept and self.owns(params, states)

    def owns(self, params: Sequence[Tensor], states: States) -> bool:
        """The params are still views of this layout and their state entries its views (a
        load_state_dict, ``model.to()`` or a new ``p.data`` breaks that)."""
        if len(params) != len(self.params):
            return False
        for index, param in enumerate(params):
            if param is not self.params[index] or place(param) != self.places[index]:
                return False
            state = states[param]
            for name, views in self.state_views.items():
                if state.get(name) is not views[index]:
                    return False
        return True


def buckets(rule: Rule, params: Sequence[Tensor], states: States) -> list[list[Tensor]]:
    """``params`` split so that one kernel call steps each part: the same step count and
    scalar state, and the same state tensors present (a param that started late, or one
    loaded from elsewhere, steps in a part of its own)."""
    parts: dict[tuple[Any, ...], list[Tensor]] = {}
    names = ("step", *rule.scalar_state_names)
    for param in params:
        state = states[param]
        signature = (
            tuple(sorted(state)),
            tuple(float(state[name]) for name in names if name in state),
        )
        parts.setdefault(signature, []).append(param)
    return list(parts.values())


def build(
    rule: Rule,
    options: Any,
    form: FusedForm,
    kept: Any,
    params: Sequence[Tensor],
    states: States,
) -> Layout:
    """Move ``params`` and their state into flat buffers; each param's ``.data`` and each
    state entry become views of them (the values are copied, nothing else changes)."""
    reals = [real_view(param.detach()) for param in params]
    # 8-bit state: each param starts a block, so that its blocks are those of the eager step
    align = BLOCK if kept == EIGHT_BIT else ALIGN
    starts, rows = [], 0
    for real in reals:
        starts.append(rows)
        if form.width:
            rows += real.shape[0]
        else:
            # every param starts on a multiple of ALIGN elements: a complex param's real view
            # needs an even offset, and aligned starts vectorise; the gaps stay 0
            rows += -(-real.numel() // align) * align
    like = reals[0]
    size = rows * max(form.width, 1)
    layout = Layout(
        form=form,
        kept=kept,
        params=list(params),
        starts=starts,
        rows=rows,
        flat_param=torch.zeros(size, dtype=like.dtype, device=like.device),
        flat_grad=torch.zeros(size, dtype=like.dtype, device=like.device),
    )
    for index, (param, real) in enumerate(zip(params, reals, strict=True)):
        view = layout.view(layout.flat_param, index)
        view.copy_(real)
        param.data = torch.view_as_complex(view) if param.is_complex() else view
        layout.places.append(place(param))
        layout.grad_views.append(layout.view(layout.flat_grad, index))
    for name in ("step", *rule.scalar_state_names):
        if name in states[params[0]]:
            flat = torch.stack([states[param][name] for param in params])
            layout.flat_scalar[name] = flat
            layout.state_views[name] = [flat[index] for index in range(len(params))]
            for param, view in zip(params, layout.state_views[name], strict=True):
                states[param][name] = view
    present = [name for name in rule.state_names(options) if name in states[params[0]]]
    add_state(layout, rule, options, states, present)
    return layout


def release(layout: Layout, states: States, keep: set[int]) -> None:
    """Give the params of a dropped layout that do not move with ``keep`` (and their state)
    storage of their own, so that the old flat buffers are freed."""
    for index, param in enumerate(layout.params):
        if id(param) in keep or param.data_ptr() != layout.places[index][0]:
            continue
        param.data = param.data.clone(memory_format=torch.preserve_format)
        state = states[param]
        for name, views in layout.state_views.items():
            if state.get(name) is views[index]:
                state[name] = views[index].clone()


def add_state(
    layout: Layout, rule: Rule, options: Any, states: States, names: Sequence[str]
) -> None:
    """Flat buffers for state ``names``, shaped as the rule makes them for the stacked param:
    the params' existing values, or the rule's initial ones."""
    stacked = layout.stacked(layout.flat_param)
    for name in names:
        if layout.kept is not None:
            add_compact_state(layout, rule, options, states, name)
            continue
        flat = rule.init_state(name, stacked, layout.form.options).zero_().view(-1)
        layout.state_views[name] = []
        for index, param in enumerate(layout.params):
            value = states[param].get(name)
            value = real_view(rule.init_state(name, param, options) if value is None else value)
            view = layout.view(flat, index, like=value)
            view.copy_(value)
            view = torch.view_as_complex(view) if param.is_complex() else view
            states[param][name] = view
            layout.state_views[name].append(view)
        layout.flat_state[name] = flat


def add_compact_state(layout: Layout, rule: Rule, options: Any, states: States, name: str) -> None:
    """State ``name`` kept compact (a width-0 layout): the params' values, or the rule's
    initial ones, in float32 in one flat buffer, encoded into the layout's form; each param's
    entries (codes and block maxima, or bfloat16) become views of the encoded buffers."""
    signed = name not in rule.nonnegative_states
    full = torch.zeros(layout.rows, dtype=torch.float32, device=layout.flat_param.device)
    for index, param in enumerate(layout.params):
        state = states[param]
        value = unpack(state, name, signed) if name in state else None
        value = rule.init_state(name, param, options) if value is None else value
        layout.view(full, index, like=value).copy_(value)
    parts = encode(full, layout.kept, signed, 0)
    entries = (name, name + ABSMAX) if layout.kept == EIGHT_BIT else (name,)
    for entry, flat in zip(entries, parts, strict=True):
        layout.flat_state[entry] = flat
        layout.state_views[entry] = []
    for index, param in enumerate(layout.params):
        state = states[param]
        state.pop(name + ABSMAX, None)
        state[name] = layout.view(parts[0], index)
        layout.state_views[name].append(state[name])
        if layout.kept == EIGHT_BIT:
            first = layout.starts[index] // BLOCK
            absmax = parts[1][first : first + blocks_of(param.numel())]
            state[name + ABSMAX] = absmax
            layout.state_views[name + ABSMAX].append(absmax)


class Plan(NamedTuple):
    params: tuple[int, ...]  # ids of the params stepping
    options: Any
    per_tensor: bool
    alone: list[Tensor]
    state_dtype: Any
    partitions: list[tuple[FusedForm, Any, list[Tensor]]]  # form, kept, params


def partition(rule: Rule, group: Group, options: Any, params: Sequence[Tensor]) -> Plan:
    """``params`` split by device, dtype, fused form and how their state is kept (and per
    param where the rule's sums must be per tensor); those that cannot be stacked step
    alone, as do rows (vectors) with compact state."""
    parts: dict[tuple[Any, ...], list[Tensor]] = {}
    alone: list[Tensor] = []
    per_tensor = rule.per_tensor(group)
    for param in params:
        real = real_view(param)
        form = rule.fused_form(real, options)
        kept = storage(group.get("state_dtype"), real.dtype, real.numel())
        if form is None or (form.width and (dense_strides(real)[0] != form.width or kept)):
            alone.append(param)  # its vectors are not contiguous rows of its storage
            continue
        key = (real.device, real.dtype, form, kept, id(param) if per_tensor else None)
        parts.setdefault(key, []).append(param)
    partitions = [(key[2], key[3], members) for key, members in parts.items()]
    state_dtype = group.get("state_dtype")
    return Plan(tuple(map(id, params)), options, per_tensor, alone, state_dtype, partitions)


def compact_numbers(layout: Layout, names: Sequence[str], step: int) -> dict[str, Tensor]:
    """What a kernel over bfloat16 state reads besides the rule's numbers: the stochastic
    rounding keys of this step."""
    device = layout.flat_param.device
    if layout.kept != torch.bfloat16:
        return {}
    return {
        n + "_key": torch.tensor(salt(step, n), dtype=torch.int32, device=device) for n in names
    }


class FusedBackend:
    """Runs rules over flat storage; keeps the layouts of one optimizer."""

    def __init__(self) -> None:
        self.layouts: dict[tuple[int, ...], Layout] = {}
        self.owner: dict[int, tuple[int, ...]] = {}
        # per group (by id): the last plan, reused while the same params step with the same
        # options and every partition's layout still holds its members
        self.plans: dict[int, Plan] = {}

    def step_group(
        self,
        rule: Rule,
        group: Group,
        params: Sequence[Tensor],
        states: States,
        grad_scale: Tensor | None = None,
    ) -> list[Sums | None]:
        if any(isinstance(param, DTensor) for param in params):
            # sharded params (FSDP2) keep their own storage: the eager step, on each shard
            return eager_step_group(rule, group, params, states, grad_scale)
        options = rule.options(group)
        plan = self.plans.get(id(group))
        held = (
            plan is not None
            and plan.params == tuple(map(id, params))
            and plan.options == options
            and plan.per_tensor == rule.per_tensor(group)
            and plan.state_dtype == group.get("state_dtype")
            and self.holds(plan, states)
        )
        if not held:
            plan = self.plans[id(group)] = partition(rule, group, options, params)
        sums: dict[int, Sums | None] = {}
        if plan.alone:

            def update(param: Tensor, *args: Any) -> Sums | None:
                return tensor_kernel(rule, args[-1], param)(param, *args)

            results = eager_step_group(rule, group, plan.alone, states, grad_scale, update)
            sums.update(zip(map(id, plan.alone), results, strict=True))
        for form, kept, members in plan.partitions:
            if held:
                layout = self.layouts[tuple(map(id, members))]
                totals = self.step_layout(rule, group, layout, states, grad_scale)
            else:
                totals = self.step_partition(rule, group, form, kept, members, states, grad_scale)
            # the part's sums go to its first param, zeros to the others: the same totals
            for index, param in enumerate(members):
                sums[id(param)] = (
                    totals
                    if totals is None or index == 0
                    else {name: torch.zeros_like(value) for name, value in totals.items()}
                )
        return [sums[id(param)] for param in params]

    def holds(self, plan: Plan, states: States) -> bool:
        """Every partition of ``plan`` is one layout that still holds its members (their
        shapes and storage are then those the plan was made for)."""
        for form, kept, members in plan.partitions:
            layout = self.layouts.get(tuple(map(id, members)))
            if layout is None or not layout.fits(form, kept, members, states):
                return False
        return True

    def step_partition(
        self,
        rule: Rule,
        group: Group,
        form: FusedForm,
        kept: Any,
        params: list[Tensor],
        states: States,
        grad_scale: Tensor | None,
    ) -> Sums | None:
        """Step ``params`` (one device, dtype, form and state precision ``kept``) in a layout
        per bucket, built where none holds the bucket. Returns the sums their updates
        return, added over them."""
        options = rule.options(group)
        for param in params:
            states[param].setdefault("step", torch.tensor(0.0, dtype=scalar_dtype()))
            for name in rule.scalar_state_names:
                if name not in states[param]:
                    states[param][name] = rule.init_state(name, param, options)
        totals: list[Sums] = []
        for part in buckets(rule, params, states):
            key = tuple(map(id, part))
            layout = self.layouts.get(key)
            if layout is None or not layout.fits(form, kept, part, states):
                for param in part:  # a param moves to the new layout: drop its old one
                    old = self.layouts.pop(self.owner.get(id(param)), None)
                    if old is not None:
                        release(old, states, keep={id(p) for p in part})
                    self.owner[id(param)] = key
                layout = self.layouts[key] = build(rule, options, form, kept, part, states)
            result = self.step_layout(rule, group, layout, states, grad_scale)
            if result is not None:
                totals.append(result)
        if not totals:
            return None
        return {name: sum(total[name] for total in totals) for name in totals[0]}

    def step_layout(
        self,
        rule: Rule,
        group: Group,
        layout: Layout,
        states: States,
        grad_scale: Tensor | None,
    ) -> Sums | None:
        """One kernel call: advance the step counts, compute the numbers once (they are the
        same for every param of the layout), create missing state, gather the gradients.
        Returns what the update returns (sums over the whole layout)."""
        options = rule.options(group)
        layout.flat_scalar["step"] += 1
        scalars = rule.scalars(group, states[layout.params[0]], options)
        for name in rule.scalar_state_names:
            layout.flat_scalar[name][1:] = layout.flat_scalar[name][0]
        names = tuple(rule.state_names(options))
        add_state(layout, rule, options, states, [n for n in names if n not in layout.flat_state])
        self.gather_grads(layout)
        maximize = bool(group["maximize"])
        numbers = {name: as_kernel_scalar(value) for name, value in scalars.items()}
        codecs: tuple[Any, ...] = ()
        if layout.kept is not None:
            codecs = tuple((layout.kept, n not in rule.nonnegative_states) for n in names)
            numbers.update(compact_numbers(layout, names, int(layout.flat_scalar["step"][0])))
        stored = [e for n in names for e in (n, n + ABSMAX) if e in layout.flat_state]
        flats = [layout.flat_param, layout.flat_grad, *(layout.flat_state[n] for n in stored)]
        stacked = [layout.stacked(flat) for flat in flats]
        # on the CPU rows (vectors) go in blocks: the kernel passes over a block several times
        # (the reductions first), and a block stays in cache between the passes. A GPU kernel
        # reduces each row in registers: one call over all rows
        # Compact state is decoded into float32 temporaries as large as the block: on the CPU
        # elements go in blocks too, so that they stay in cache (20 M elements at once make
        # five 80 MB temporaries per step)
        cpu = layout.flat_param.device.type == "cpu"
        block = 0
        if cpu and layout.form.width:
            block = max(ALIGN, ROW_BLOCK // layout.form.width // ALIGN * ALIGN)
        elif cpu and layout.kept is not None:
            block = COMPACT_BLOCK
        totals: list[Sums] = []
        for start in range(0, layout.rows, block) if block else [0]:
            param, grad, *tensors = (
                t[start // BLOCK : (start + block) // BLOCK]
                if block and name.endswith(ABSMAX)
                else t[start : start + block]
                if block
                else t
                for name, t in zip(["param", "grad", *stored], stacked, strict=True)
            )
            sums = kernel(rule, layout.form.options, maximize, param, codecs)(
                rule,
                layout.form.options,
                maximize,
                param,
                grad,
                names,
                tensors,
                numbers,
                grad_scale,
                codecs,
            )
            if sums is not None:
                totals.append(sums)
        # the kernel wrote the flat buffer: the params' autograd versions move, as in eager
        torch.autograd.graph.increment_version(layout.params)
        return {name: sum(t[name] for t in totals) for name in totals[0]} if totals else None

    def gather_grads(self, layout: Layout) -> None:
        """Copy each ``p.grad`` into the flat gradient buffer, unless it is its view (same
        storage, offset and strides)."""
        targets, sources = [], []
        storage = layout.flat_grad.untyped_storage().data_ptr()
        for param, view in zip(layout.params, layout.grad_views, strict=True):
            grad = real_view(param.grad)
            if (
                grad.untyped_storage().data_ptr() != storage
                or grad.storage_offset() != view.storage_offset()
                or grad.stride() != view.stride()
            ):
                targets.append(view)
                sources.append(grad)
        if targets:
            torch._foreach_copy_(targets, sources)

    def adopt_grads(self, params: Sequence[Tensor]) -> None:
        """Make the gradients of ``params`` that have a layout and a gradient (a frozen param
        keeps None) its zeroed views, so that the next backward accumulates into the flat
        gradient buffer and the step copies nothing (``zero_grad(set_to_none=False)``)."""
        wanted = {id(param) for param in params if param.grad is not None}
        for layout in self.layouts.values():
            for index, param in enumerate(layout.params):
                if id(param) in wanted:
                    # a view of its own: re-pointing p.grad.data leaves the layout's alone
                    view = layout.view(layout.flat_grad, index).zero_()
                    param.grad = torch.view_as_complex(view) if param.is_complex() else view
