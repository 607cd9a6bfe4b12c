"""The eager backend: runs a rule per tensor with plain torch operations.

The readable reference the fused backend is checked against. A bfloat16 or float16 param
steps in float32 (its gradient and state upcast, the results rounded back once per step), as
torch's fused kernels and the compiled kernel of the fused backend do: rounding after every
op instead loses the small updates and makes the backends disagree by more than an ulp. A
state wider than its param (the param cast after some steps) keeps its dtype, and the
update computes in it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, MutableMapping, Sequence
from itertools import repeat
from operator import attrgetter, eq, is_, itemgetter
from typing import Any

import torch
from torch import Tensor

from adamkit.backends.multi import TensorList
from adamkit.precision import pack, salt, storage, unpack
from adamkit.rule import Group, Rule, Scalars, State, Sums, scalar_dtype

LOW_PRECISION = (torch.bfloat16, torch.float16)
# params stepped in one multi-tensor call hold at most this many elements together (128 KB
# of float32 per tensor): the update's tensors then stay in a core's cache from one op to
# the next, where one op over every param would stream them all from memory each time
CHUNK = 1 << 15
States = MutableMapping[Tensor, dict[str, Any]]
# params stepped together: (numbers, dtype, device) → (numbers, [param, grad, *state])
Batches = dict[tuple[Any, ...], tuple[Scalars, list[list[Tensor]]]]


PLAIN = frozenset((Tensor, torch.nn.Parameter))  # no DTensor: a quick check of most params
GRAD, DTYPE, SHAPE, SPARSE = map(attrgetter, ("grad", "dtype", "shape", "is_sparse"))


def is_dtensor(value: Any) -> bool:
    """Whether ``value`` is a DTensor (FSDP2's shard of a param), without importing
    torch.distributed.tensor (a second of every ``import adamkit``): where nothing has
    imported it, no DTensor exists."""
    if type(value) in PLAIN:
        return False
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(value, module.DTensor)


def any_dtensor(values: Sequence[Any]) -> bool:
    """Whether any of ``values`` is a DTensor (:func:`is_dtensor`)."""
    module = sys.modules.get("torch.distributed.tensor")
    if module is None or {*map(type, values)} <= PLAIN:
        return False
    return any(isinstance(v, module.DTensor) for v in values)


def operand(tensor: Tensor) -> Tensor:
    """What an update steps for a param, its gradient or a state tensor: a DTensor's local
    shard, a complex tensor's real view."""
    if is_dtensor(tensor):
        tensor = tensor.to_local()
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def real_view(value: Any) -> Any:
    """Complex tensors as their real (…, 2) views; the element-wise math is then the same.
    Other state values (plain numbers) pass through."""
    return torch.view_as_real(value) if isinstance(value, Tensor) and value.is_complex() else value


def local(value: Any) -> Any:
    """A DTensor's local shard (the tensor its in-place updates write); anything else as
    it is."""
    return value.to_local() if is_dtensor(value) else value


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
    if sums is None or not is_dtensor(param):
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
    states: States,
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
    if any_dtensor(params):  # FSDP2: each rank steps its shard
        for param in filter(is_dtensor, params):
            check_shardable(rule, param, options)
            if storage(state_dtype, param.dtype, param.numel()) not in (None, torch.float32):
                raise NotImplementedError(
                    f"state_dtype={state_dtype!r} for a DTensor param (FSDP2) of shape "
                    f"{tuple(param.shape)}: compact state is kept for plain tensors only"
                )
    entries = [states[param] for param in params]
    start_step(rule, group, options, params, entries)
    maximize = group["maximize"]
    step = apply_update if update is None else update
    # many params in one call where each is plain: the rule's own update, without autograd
    # or a gradient scale, over params, gradients and state of one dtype, device and shape
    batch = (
        update is None and rule.multi_tensor and grad_scale is None and not torch.is_grad_enabled()
    )
    batches: Batches = {}
    sums: list[Sums | None] = []
    scalars_of = shared_scalars(rule, group, options, entries)
    grads = list(map(GRAD, params))
    columns = state_columns(entries, state_names) if batch and state_dtype is None else None
    plain = columns is not None and all_alike(params, grads, columns)
    scalars = scalars_of[0] if scalars_of else None
    if (
        plain
        and all(map(is_, scalars_of, repeat(scalars)))
        and plain_numbers(scalars)
        and (all(map(attrgetter("is_cpu"), params)) or len({p.device for p in params}) == 1)
    ):
        # one batch of every param (add_to_batch's, made in C-level passes)
        members = list(map(list, zip(params, grads, *columns, strict=True)))
        step_batches(rule, options, maximize, state_names, {0: (scalars, members)})
        return [None] * len(params)
    for param, grad, state, scalars in zip(params, grads, entries, scalars_of, strict=True):
        kept, work = {}, {}
        if not plain:
            if grad.is_sparse:  # nn.Embedding(sparse=True): the rule's sparse form
                rule.sparse_update(param, -grad if maximize else grad, state, scalars, options)
                sums.append(None)
                continue
            for name in state_names:
                if name not in state:
                    state[name] = rule.init_state(name, param, options)
            if state_dtype is not None:
                kept = {n: storage(state_dtype, param.dtype, state[n].numel()) for n in state_names}
                kept = {n: form for n, form in kept.items() if form is not None}
                work = {n: unpack(state, n, n not in rule.nonnegative_states) for n in kept}
        tensors = [work[n] if n in work else state[n] for n in state_names]
        if plain or (batch and not work and alike(param, grad, tensors)):
            if add_to_batch(batches, scalars, param, grad, tensors):
                sums.append(None)
                continue
        target, grad = operand(param), operand(grad)
        tensors = [operand(tensor) for tensor in tensors]
        result = step(
            rule, options, maximize, target, grad, state_names, tensors, scalars, grad_scale
        )
        sums.append(reduce_sums(param, result))
        for name, value in work.items():  # the step count is read (a host sync) only here
            key = salt(int(state["step"]), name)
            pack(state, name, value, kept[name], name not in rule.nonnegative_states, key)
    step_batches(rule, options, maximize, state_names, batches)
    return sums


def add_to_batch(
    batches: Batches, scalars: Scalars, target: Tensor, grad: Tensor, tensors: list[Tensor]
) -> bool:
    """Add a param's operands (:func:`alike`) to the multi-tensor batch of its numbers,
    dtype and device where it may step there (no Tensor number: a Tensor lr steps each
    param alone); returns whether it was added."""
    where = (id(scalars), target.dtype, target.device)
    batch = batches.get(where)
    if batch is None:  # the first param of these numbers: are they all plain?
        if not plain_numbers(scalars):
            return False
        batch = batches[where] = (scalars, [])
    batch[1].append([target, grad, *tensors])
    return True


def plain_numbers(scalars: Scalars) -> bool:
    """Whether no number is a Tensor (a Tensor lr steps each param alone)."""
    return not any(isinstance(value, Tensor) for value in scalars.values())


def step_batches(
    rule: Rule, options: Any, maximize: bool, names: Sequence[str], batches: Batches
) -> None:
    """Step each batch in multi-tensor calls (:class:`TensorList` operands), a chunk of
    params at a time (:func:`chunks`), in the params' order within a batch (the params
    that share numbers); a param alone in its chunk steps as a tensor. The members are
    :func:`alike`: the rule's update runs on them as :func:`apply_update` would, without
    its checks (Python work between updates that each stream megabytes through the caches
    runs slower)."""
    for scalars, members in batches.values():
        for chunk in chunks(members):
            if len(chunk) > 1:
                chunk = [[TensorList(column) for column in zip(*chunk, strict=True)]]
            target, grad, *tensors = chunk[0]
            state = dict(zip(names, tensors, strict=True))
            rule.update(target, -grad if maximize else grad, state, scalars, options)


def alike(target: Tensor, grad: Tensor, tensors: Sequence[Tensor]) -> bool:
    """Whether a param may step with others in one multi-tensor call: it and its state
    plain tensors (neither a DTensor nor complex: each its own operand, :func:`operand`),
    the state of its dtype (not one stepped in float32; the gradient's dtype and shape are
    the param's, the optimizer checks them), the gradient dense. Whatever else differs (a
    state's shape after ``p.data = ...``) meets the same per-tensor op, and its error,
    inside the call."""
    return all_alike([target], [grad], [[tensor] for tensor in tensors])


def all_alike(
    params: Sequence[Tensor], grads: Sequence[Tensor], columns: Sequence[Sequence[Tensor]]
) -> bool:
    """:func:`alike` for many params at once (``columns``: each state tensor's column over
    them), in C-level passes: a loop over the params in Python cost about 1 µs a param
    more."""
    if not params or any(map(SPARSE, grads)):
        return False
    dtype = params[0].dtype
    if dtype in LOW_PRECISION or dtype.is_complex:
        return False
    return all(
        {*map(type, column)} <= PLAIN and all(map(is_, map(DTYPE, column), repeat(dtype)))
        for column in (params, *columns)
    )


def state_columns(entries: Sequence[State], names: Sequence[str]) -> list[list[Tensor]] | None:
    """Each state tensor ``names`` of the params' states ``entries``, as a column over the
    params; None where a state is not made yet."""
    try:
        return [list(map(itemgetter(name), entries)) for name in names]
    except KeyError:
        return None


def chunks(members: list[list[Tensor]]) -> list[list[list[Tensor]]]:
    """Consecutive members of at most CHUNK elements together (one larger alone): the
    tensors of a chunk stay in the CPU's cache from one op of the update to the next. On a
    GPU, all of them: each op is then one launch of torch's multi-tensor kernel over every
    param, as torch's default (``foreach``) steps them there."""
    sizes = list(map(Tensor.numel, map(itemgetter(0), members)))
    if not members[0][0].is_cpu or sum(sizes) <= CHUNK:
        return [members]
    result: list[list[list[Tensor]]] = []
    size = 0
    for member, numel in zip(members, sizes, strict=True):
        if not result or size + numel > CHUNK:
            result.append([])
            size = 0
        result[-1].append(member)
        size += numel
    return result


def start_step(
    rule: Rule, group: Group, options: Any, params: Sequence[Tensor], entries: Sequence[State]
) -> None:
    """Create the rule's scalar state and each param's ``step`` in its state (``entries``,
    in the params' order) where missing and advance every step count by one (where the
    rule counts steps, :meth:`Rule.counts_steps`)."""
    steps = list(map(step_count, entries)) if rule.counts_steps(group) else []
    for name in rule.scalar_state_names:
        for param, state in zip(params, entries, strict=True):
            if name not in state:
                state[name] = rule.init_state(name, param, options)
    advance(steps)


def step_count(state: dict[str, Any]) -> Tensor:
    """A param's ``step``, created (0) where missing."""
    step = state.get("step")
    if step is None:
        step = state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
    return step


def advance(steps: list[Tensor]) -> None:
    """Add 1 to each 0-dim step count, in one multi-tensor add (on the CPU in torch's list
    form: for 1 000 steps, 1.3 ms against 4.5 ms adding the number 1)."""
    if steps:
        TensorList(steps).add_(1.0)


NUMBER = object()  # marks a 0-dim tensor of state in shared_scalars


def shared_scalars(
    rule: Rule, group: Group, options: Any, entries: Sequence[State]
) -> list[Scalars]:
    """The rule's numbers (``options``: the rule's for ``group``) for each param of
    ``entries`` (their states), computed once per set of params whose states agree on all
    the numbers may read: which entries they hold and the values of their 0-dim and plain
    entries (the step count, NAdam's ``mu_product``, SWATS' switch). Scalar state the rule
    advances (``mu_product``) is advanced for the first param of a set and copied to the
    others. All 0-dim values are read in one host sync."""
    agreed = agreed_scalars(rule, group, options, entries)
    if agreed is not None:
        return agreed
    numbers: list[Tensor] = []  # the 0-dim tensors of all states, read at once
    templates = []  # each state's values: NUMBER for a 0-dim tensor, None for another
    for state in entries:
        template: list[Any] = []
        for value in state.values():
            if type(value) in PLAIN and value.dim():  # param-shaped: only held
                template.append(None)
            elif not isinstance(value, Tensor):
                template.append(value)
            elif value.dim() == 0 and not is_dtensor(value):
                numbers.append(value)
                template.append(NUMBER)
            else:
                template.append(None)
        templates.append(template)
    if numbers:
        try:
            read = torch.stack(numbers).tolist()
        except RuntimeError:  # 0-dim state of several dtypes or devices
            read = [v.item() for v in numbers]
        values = iter(read)
        templates = [[next(values) if v is NUMBER else v for v in t] for t in templates]
    sets: dict[tuple[Any, ...], State] = {}  # the first state of each set
    numbers_of: dict[int, Scalars] = {}  # by id of that state
    result = []
    copies: tuple[list[Tensor], list[Tensor]] = ([], [])  # advanced scalar state: to, from
    for state, template in zip(entries, templates, strict=True):
        key = (*state, *template)
        first = sets.setdefault(key, state)
        if first is state:
            numbers_of[id(state)] = rule.scalars(group, state, options)
        else:
            for name in rule.scalar_state_names:
                copies[0].append(state[name])
                copies[1].append(first[name])
        result.append(numbers_of[id(first)])
    if copies[0]:
        torch._foreach_copy_(*copies)
    return result


def agreed_scalars(
    rule: Rule, group: Group, options: Any, entries: Sequence[State]
) -> list[Scalars] | None:
    """:func:`shared_scalars` where every state holds the same entries in the same order,
    each a plain tensor, and the 0-dim ones agree over the params (the common case): one
    set of numbers, found in C-level passes over the entries' columns; None otherwise."""
    if not entries:
        return []
    first = entries[0]
    names = tuple(first)
    if not all(map(eq, map(tuple, entries), repeat(names))):
        return None
    numbers: list[Tensor] = []
    for name in names:
        column = list(map(itemgetter(name), entries))
        if not {*map(type, column)} <= PLAIN:
            return None
        dims = {*map(Tensor.dim, column)}
        if dims == {0}:
            numbers += column
        elif 0 in dims:
            return None
    if numbers:
        try:
            read = torch.stack(numbers).tolist()
        except RuntimeError:  # of several dtypes or devices
            return None
        count = len(entries)
        if any(len({*read[at : at + count]}) > 1 for at in range(0, len(read), count)):
            return None
    scalars = rule.scalars(group, first, options)  # advances the first's scalar state
    for name in rule.scalar_state_names if len(entries) > 1 else ():
        others = list(map(itemgetter(name), entries[1:]))
        torch._foreach_copy_(others, [first[name]] * len(others))
    return [scalars] * len(entries)


def as_dtype(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """``tensor.to(dtype)``, without the call where it is one already (a call costs µs)."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def apply_update(
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
    """One param's update: ``grad`` divided by ``grad_scale`` where given and negated for
    ``maximize``, then ``rule.update`` on ``param`` and its state tensors ``names`` (real
    views; float32 ones for compact state). The update computes in the widest dtype of the
    param (float32 for a bfloat16 or float16 one) and its state: a state kept wider than
    the param (float32 state of a param cast to bfloat16 after some steps, float64 state
    of one cast to float32) stays so, and the param and narrower tensors are rounded back
    once. The function both backends run: the fused one compiles it."""
    dtype = torch.float32 if param.dtype in LOW_PRECISION else param.dtype
    same = param.dtype is dtype and grad.dtype is dtype and grad_scale is None
    for tensor in tensors:
        if tensor.dtype != dtype:
            dtype = torch.promote_types(dtype, tensor.dtype)
            same = False
    if same:
        # every tensor of the update's dtype: nothing to cast (the common case, and where a
        # large param's step pays for each µs here: see docs/performance.md)
        state = dict(zip(names, tensors, strict=True))
        return rule.update(param, -grad if maximize else grad, state, scalars, options)
    work = as_dtype(param, dtype)
    grad = as_dtype(grad, dtype)
    if grad_scale is not None:
        grad = (grad / grad_scale).to(dtype)  # a 0-dim grad would promote
    if maximize:
        grad = -grad
    upcast = [as_dtype(t, dtype) for t in tensors]
    sums = rule.update(work, grad, dict(zip(names, upcast, strict=True)), scalars, options)
    for tensor, value in zip([param, *tensors], [work, *upcast], strict=True):
        if value is not tensor:
            tensor.copy_(value)
    return sums
