"""Behaviour contracts beyond tests/test_api_contracts.py (TESTING.md A6, A8, A9, A10, N5,
F4): that file checks each contract on the default config and the eager backend; this one
takes the fused backend, two groups, every sweep config, prepend ordering, StepLR and strided
views, and torch.optim's finiteness entry by entry."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from test_contracts import assert_same

from harness import gradient_script, leaves, snapshot
from registry import OPTIM_DB, sweep_cases

RECORDS = [pytest.param(info, id=info.name) for info in OPTIM_DB]
# the fused backend compiles once per (optimizer, options, dtype): a few records stand for the
# rest where the check is about the backend's machinery rather than the rule
FUSED_NAMES = {"SGD", "Adam", "SWATS", "NDAdam"}
FUSED_RECORDS = [pytest.param(info, id=info.name) for info in OPTIM_DB if info.name in FUSED_NAMES]
WEIGHT_DECAY_KEYS = ("weight_decay", "weight_decay_mode", "decoupled_weight_decay")


def by_name(name):
    return next(info for info in OPTIM_DB if info.name == name)


def feed(optimizer, params, script):
    """Each step's gradients into ``params`` (None for no gradient), then ``step()``; the
    groups are left alone (``harness.run`` adds ``initial_lr`` to them)."""
    for grads in script:
        for param, grad in zip(params, grads, strict=True):
            param.grad = None if grad is None else grad.clone()
        optimizer.step()


def cloned(params):
    return [p.detach().clone().requires_grad_() for p in params]


def base_config(info):
    """The default config, but SGD with momentum: editing its momentum must change a step."""
    return {"momentum": 0.9} if info.name == "SGD" else dict(info.sweep[0])


# --------------------------------------------------------------------------------------------
# A9: param groups added and edited between steps


@pytest.mark.parametrize(
    "info, backend",
    [pytest.param(r.values[0], "eager", id=f"{r.id}-eager") for r in RECORDS]
    + [pytest.param(r.values[0], "fused", id=f"{r.id}-fused") for r in FUSED_RECORDS],
)
def test_a_group_added_mid_run_steps_as_a_fresh_optimizer(info, backend):
    """A9: a group added after 3 steps gets the constructor's defaults and no state, the
    existing params' state keeps its bits, and from then on the old params step bitwise as
    if the group had never been added, the new params as under a fresh optimizer."""
    config = base_config(info)
    first, second, added = leaves(torch.float32)
    script = gradient_script(7, torch.float32)
    optimizer = info.cls([first, second], lr=0.0123, backend=backend, **config)
    alone_params = cloned([first, second])
    alone = info.cls(alone_params, lr=0.0123, backend=backend, **config)
    fresh_params = cloned([added])
    fresh = info.cls(fresh_params, lr=0.0123, backend=backend, **config)
    feed(optimizer, [first, second], [g[:2] for g in script[:3]])
    feed(alone, alone_params, [g[:2] for g in script[:3]])
    before = snapshot(optimizer, [first, second])

    optimizer.add_param_group({"params": [added]})

    group = optimizer.param_groups[-1]
    assert group["params"] == [added]
    assert {k: v for k, v in group.items() if k != "params"} == optimizer.defaults
    assert_same(snapshot(optimizer, [first, second]), before)
    assert not optimizer.state[added]

    feed(optimizer, [first, second, added], script[3:])
    feed(alone, alone_params, [g[:2] for g in script[3:]])
    feed(fresh, fresh_params, [g[2:] for g in script[3:]])
    assert_same(snapshot(optimizer, [first, second]), snapshot(alone, alone_params))
    assert_same(snapshot(optimizer, [added]), snapshot(fresh, fresh_params))
    if optimizer.rule.counts_steps(group):  # torch's SGD keeps no step count
        assert optimizer.state[added]["step"].item() == 4


def edits(info):
    """(key, new value) for the hyperparameters A9 edits between steps."""
    defaults = info.cls([torch.zeros(1, requires_grad=True)], **base_config(info)).defaults
    out = [("lr", defaults["lr"] * 0.5), ("weight_decay", 0.05)]
    if "betas" in defaults:
        out.append(("betas", (0.8, 0.99)))
    if "momentum" in defaults:
        out.append(("momentum", 0.5))
    return out


EDIT_CASES = [
    pytest.param(info, key, value, backend, id=f"{info.name}-{key}-{backend}")
    for backend in ("eager", "fused")
    for info in OPTIM_DB
    if backend == "eager" or info.name in FUSED_NAMES
    for key, value in edits(info)
]


@pytest.mark.parametrize("info, key, value, backend", EDIT_CASES)
def test_editing_one_group_takes_effect_at_the_next_step_and_only_there(info, key, value, backend):
    """A9: of two groups, ``group[key] = value`` on the first after 3 steps gives, over 3
    more steps, bitwise what an optimizer constructed with ``key=value`` for that group and
    loaded with the 3-step state gives; it changes the first group's steps and leaves the
    second group's bitwise as without the edit."""
    config = base_config(info)
    params = leaves(torch.float32)
    script = gradient_script(6, torch.float32)

    def make(tensors, edited_value=None):
        first = {"params": tensors[:2]}
        if edited_value is not None:
            first[key] = edited_value
        return info.cls([first, {"params": tensors[2:]}], backend=backend, **config)

    edited = make(params)
    feed(edited, params, script[:3])
    saved = copy.deepcopy(edited.state_dict())
    twin_params, untouched_params = cloned(params), cloned(params)

    edited.param_groups[0][key] = value
    feed(edited, params, script[3:])

    twin = make(twin_params, value)
    loaded = copy.deepcopy(saved)
    loaded["param_groups"][0][key] = value
    twin.load_state_dict(loaded)
    feed(twin, twin_params, script[3:])

    untouched = make(untouched_params)
    untouched.load_state_dict(saved)
    feed(untouched, untouched_params, script[3:])

    assert_same(snapshot(edited, params), snapshot(twin, twin_params))
    # (any param of the group: ND-Adam's weight decay skips its weight vectors, as documented)
    assert any(
        not torch.equal(p, q) for p, q in zip(params[:2], untouched_params[:2], strict=True)
    ), f"{key}={value} changed nothing"
    assert_same(snapshot(edited, params[2:]), snapshot(untouched, untouched_params[2:]))


@pytest.mark.parametrize("name", ["SGD", "SGDW"])
def test_momentum_turned_on_then_checkpointed_resumes(name):
    """A9: momentum turned on in place (``group['momentum'] = 0.9`` on an optimizer that ran
    without it, as a schedule would) and checkpointed before the next step: the state dict
    (``step`` only, no momentum buffer yet) loads into a fresh optimizer, which then steps
    bitwise as the original does (torch.optim.SGD loads such a state; test_core checks the
    in-place path against torch)."""
    info = by_name(name)
    params = leaves(torch.float32)
    script = gradient_script(6, torch.float32)
    original = info.cls(params, momentum=0.0)
    feed(original, params, script[:3])
    original.param_groups[0]["momentum"] = 0.9
    saved = copy.deepcopy(original.state_dict())
    resumed_params = cloned(params)
    feed(original, params, script[3:])

    resumed = info.cls(resumed_params, momentum=0.9)
    resumed.load_state_dict(saved)
    feed(resumed, resumed_params, script[3:])
    assert_same(snapshot(resumed, resumed_params), snapshot(original, params))


# --------------------------------------------------------------------------------------------
# A8: hooks and repr


@pytest.mark.parametrize("info", FUSED_RECORDS)
def test_step_hooks_fire_in_order_on_the_fused_backend(info):
    """A8: on the fused backend too, global pre, local pre, local post, global post fire
    once per step, with the optimizer; none after their handles are removed."""
    params = leaves(torch.float32)
    optimizer = info.cls(params, backend="fused")
    calls = []

    def hook(name):
        def record(opt, args, kwargs):
            assert opt is optimizer
            calls.append(name)

        return record

    # registered out of order: the order of firing is the contract's, not registration's
    handles = [
        optimizer.register_step_post_hook(hook("local-post")),
        register_optimizer_step_post_hook(hook("global-post")),
        optimizer.register_step_pre_hook(hook("local-pre")),
        register_optimizer_step_pre_hook(hook("global-pre")),
    ]
    try:
        feed(optimizer, params, gradient_script(2, torch.float32))
        assert calls == ["global-pre", "local-pre", "local-post", "global-post"] * 2
    finally:
        for handle in handles:
            handle.remove()
    calls.clear()
    feed(optimizer, params, gradient_script(1, torch.float32))
    assert calls == []


@pytest.mark.parametrize("info", RECORDS)
def test_state_dict_hooks_honour_prepend_and_their_returns(info):
    """A8: all four state-dict hooks run in registration order but for ``prepend=True``,
    which runs first; a post hook's returned dict is what ``state_dict`` gives, a load pre
    hook's returned dict is what gets loaded; removed hooks no longer run."""
    params = leaves(torch.float32)
    optimizer = info.cls(params)
    feed(optimizer, params, gradient_script(2, torch.float32))
    calls = []

    def save_pre(name):
        return lambda opt: calls.append(name)

    def save_post(name):
        def hook(opt, state_dict):
            calls.append(name)
            return {**state_dict, "marker": name}

        return hook

    handles = [
        optimizer.register_state_dict_pre_hook(save_pre("save-pre-1")),
        optimizer.register_state_dict_pre_hook(save_pre("save-pre-0"), prepend=True),
        optimizer.register_state_dict_post_hook(save_post("save-post-1")),
        optimizer.register_state_dict_post_hook(save_post("save-post-0"), prepend=True),
    ]
    state_dict = optimizer.state_dict()
    assert calls == ["save-pre-0", "save-pre-1", "save-post-0", "save-post-1"]
    assert state_dict.pop("marker") == "save-post-1"
    for handle in handles:
        handle.remove()
    calls.clear()
    assert "marker" not in optimizer.state_dict() and calls == []

    other = info.cls(cloned(params))

    def load_pre(name, lr):
        def hook(opt, state_dict):
            calls.append(name)
            state_dict = copy.deepcopy(state_dict)
            for group in state_dict["param_groups"]:
                group["lr"] = lr
            return state_dict

        return hook

    other.register_load_state_dict_pre_hook(load_pre("load-pre-1", 0.0321))
    other.register_load_state_dict_pre_hook(load_pre("load-pre-0", 0.5), prepend=True)
    other.register_load_state_dict_post_hook(lambda opt: calls.append("load-post-1"))
    other.register_load_state_dict_post_hook(lambda opt: calls.append("load-post-0"), prepend=True)
    other.load_state_dict(state_dict)
    assert calls == ["load-pre-0", "load-pre-1", "load-post-0", "load-post-1"]
    assert other.param_groups[0]["lr"] == 0.0321  # the last pre hook's dict is loaded


@pytest.mark.parametrize("info, config", sweep_cases())
def test_repr_shows_every_groups_hyperparameters_with_their_values(info, config):
    """A8: for every config, ``repr`` names the class, then each of two groups in order with
    every hyperparameter and its value (the second group's own lr included)."""
    first, second, third = leaves(torch.float32)
    optimizer = info.cls([{"params": [first, second]}, {"params": [third], "lr": 0.0042}], **config)
    text = repr(optimizer)
    assert text.startswith(type(optimizer).__name__ + " (")
    sections = text.split("Parameter Group ")
    assert len(sections) == 3
    for index, (section, group) in enumerate(
        zip(sections[1:], optimizer.param_groups, strict=True)
    ):
        assert section.startswith(f"{index}\n")
        for key, value in group.items():
            if key != "params":
                assert f"    {key}: {value}\n" in section, (key, value)
    assert "    lr: 0.0042\n" in sections[2]


# --------------------------------------------------------------------------------------------
# A6: invariants of the state, over every config, random shapes and gradient scales

SECOND_MOMENTS = ("exp_avg_sq", "square_avg", "sum", "exp_inf", "max_exp_avg_sq")
NEVER_DECREASE = ("max_exp_avg_sq", "sum")  # AMSGrad's running max, Adagrad's sum of g²

shapes = st.lists(
    st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=3
)


@pytest.mark.parametrize("info", RECORDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data(), shapes=shapes, steps=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_state_invariants_for_every_config(info, data, shapes, steps, seed):
    """A6: for any sweep config (Adam's amsgrad ones included), shapes, per-step gradient
    scales in [1e-8, 1e8] and params left without a gradient at random steps: running maxima
    (``max_exp_avg_sq``) and Adagrad's ``sum`` never decrease, every second moment is ≥ 0,
    ``step`` grows by exactly 1 on a step with a gradient, and a step without one leaves the
    param and its step and second moments bitwise as they were."""
    config = data.draw(st.sampled_from(info.sweep), label="config")
    exponents = data.draw(
        st.lists(st.integers(-8, 8), min_size=steps, max_size=steps), label="log10 scales"
    )
    masks = data.draw(
        st.lists(
            st.lists(st.booleans(), min_size=len(shapes), max_size=len(shapes)),
            min_size=steps,
            max_size=steps,
        ),
        label="which params get a gradient",
    )
    params = leaves(torch.float32, seed, shapes)
    optimizer = info.cls(params, **config)
    script = gradient_script(steps, torch.float32, seed + 1, shapes)
    counting = optimizer.rule.counts_steps(optimizer.param_groups[0])
    for grads, exponent, mask in zip(script, exponents, masks, strict=True):
        before = snapshot(optimizer, params)
        for param, grad, has in zip(params, grads, mask, strict=True):
            param.grad = grad * 10.0**exponent if has else None
        optimizer.step()
        after = snapshot(optimizer, params)
        for old, new, has in zip(before, after, mask, strict=True):
            old_step = old["step"].item() if "step" in old else 0
            new_step = new["step"].item() if "step" in new else 0
            assert new_step == old_step + (1 if has and counting else 0)
            if not has:
                # the param and its second moments keep their bits (not its exp_avg:
                # SWATS zeroes the momentum of every param of a group when the group
                # switches to SGD, as documented, whether or not the param has a gradient)
                kept = ["param", *(k for k in SECOND_MOMENTS if k in old)]
                assert_same({k: new[k] for k in kept}, {k: old[k] for k in kept})
                continue
            for name in SECOND_MOMENTS:
                if name in new:
                    assert (new[name] >= 0).all(), name
            for name in NEVER_DECREASE:
                if name in old:
                    assert (new[name] >= old[name]).all(), name


# --------------------------------------------------------------------------------------------
# A10: determinism


@pytest.mark.parametrize("info, config", sweep_cases())
def test_deterministic_algorithms_change_nothing(info, config):
    """A10: under ``torch.use_deterministic_algorithms(True)`` every config steps without
    raising and gives params and state bitwise as without it (the flag is restored)."""
    script = gradient_script(5, torch.float32)
    results = []
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    for deterministic in (False, True):
        torch.use_deterministic_algorithms(deterministic)
        try:
            params = leaves(torch.float32)
            optimizer = info.cls(params, **config)
            feed(optimizer, params, script)
            results.append(snapshot(optimizer, params))
        finally:
            torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
    assert_same(results[1], results[0])
    assert torch.are_deterministic_algorithms_enabled() == previous


# --------------------------------------------------------------------------------------------
# N5 (b): the loss moves the right way, with StepLR and strided views


def strided_leaves():
    """W (2×3) and b (2) as leaves viewing every other element of bigger tensors, W's rows
    of unit norm (ND-Adam's weight vectors)."""
    generator = torch.Generator().manual_seed(7)
    base = torch.randn(2, 3, 2, generator=generator, dtype=torch.float64)
    base /= base.norm(dim=1, keepdim=True)
    weight = base[..., 0].detach().requires_grad_()
    bias = torch.randn(4, generator=generator, dtype=torch.float64)[::2].detach()
    bias.requires_grad_()
    assert weight.is_leaf and bias.is_leaf
    assert not weight.is_contiguous() and not bias.is_contiguous()
    return weight, bias


@pytest.mark.parametrize("maximize", [False, True], ids=["minimize", "maximize"])
@pytest.mark.parametrize("info", RECORDS)
def test_strided_params_under_step_lr_move_the_right_way(info, maximize):
    """N5 (b): 20 steps on ‖W x + b‖² with strided leaves and StepLR (halving every 5
    steps, 4 changes of lr in the run): the loss falls, or rises with maximize=True, and the
    params keep their strides (the optimizer steps the views, not copies)."""
    weight, bias = strided_leaves()
    strides = weight.stride(), bias.stride()
    inputs = torch.tensor([0.3, -1.2, 0.8], dtype=torch.float64)

    def loss():
        return ((weight @ inputs + bias) ** 2).sum()

    optimizer = info.cls([weight, bias], lr=1e-2, maximize=maximize)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    initial = loss().item()
    for _ in range(20):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        scheduler.step()
    final = loss().item()
    assert math.isfinite(final)
    assert (final > initial) if maximize else (final < initial), (initial, final)
    assert optimizer.param_groups[0]["lr"] == 1e-2 * 0.5**4
    assert (weight.stride(), bias.stride()) == strides


# --------------------------------------------------------------------------------------------
# F4: low precision with zero gradients, and extreme gradients


def low_precision_configs():
    """Every distinct config of the sweep once weight decay and lr are taken out (F4 runs
    with weight_decay=0), alternately fp16 and bf16 (test_api_contracts runs the default
    configs in both). The paper forms with ε = 0 divide 0 by 0 (docs/algorithms.md, "Division
    by zero in the paper forms"); they have a test of their own below."""
    cases = []
    for info in OPTIM_DB:
        seen = []
        for config in info.sweep:
            kept = {k: v for k, v in config.items() if k not in ("lr", *WEIGHT_DECAY_KEYS)}
            if kept in seen or divides_zero_by_zero(kept):
                continue
            seen.append(kept)
            dtype = (torch.float16, torch.bfloat16)[len(cases) % 2]
            name = f"{info.id(kept)}-{str(dtype).removeprefix('torch.')}"
            cases.append(pytest.param(info, kept, dtype, id=name))
    return cases


def divides_zero_by_zero(config):
    return config.get("eps") == 0.0 or config.get("eps_mode") == "none"


def zero_gradient_run(info, config, dtype, steps):
    """``steps`` steps on a 4×3 param whose rows 1 and 3 always get a zero gradient, a (5,)
    param with random gradients and a (2,) param whose gradient is always zero."""
    weight, vector, still = leaves(dtype, shapes=[(4, 3), (5,), (2,)])
    params = [weight, vector, still]
    start = [p.detach().clone() for p in params]
    optimizer = info.cls(params, **config, weight_decay=0.0)
    generator = torch.Generator().manual_seed(3)
    for _ in range(steps):
        grad = torch.randn(4, 3, generator=generator).to(dtype)
        grad[[1, 3]] = 0
        weight.grad = grad
        vector.grad = torch.randn(5, generator=generator).to(dtype)
        still.grad = torch.zeros(2, dtype=dtype)
        optimizer.step()
    return optimizer, params, start


@pytest.mark.parametrize("info, config, dtype", low_precision_configs())
def test_low_precision_zero_gradients_leave_their_params(info, config, dtype):
    """F4: 1 000 fp16/bf16 steps with weight_decay=0: no param or state entry turns NaN or
    Inf, and the rows (and the whole param) whose gradient is always zero keep their bits, as
    every rule's update is 0 where its moments are 0; the other rows move."""
    optimizer, (weight, vector, still), start = zero_gradient_run(info, config, dtype, 1000)
    for index, state in enumerate(snapshot(optimizer, [weight, vector, still])):
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                assert torch.isfinite(value).all(), f"param {index} {name}"
            else:
                assert math.isfinite(value), f"param {index} {name}"
    assert torch.equal(weight[[1, 3]], start[0][[1, 3]])
    assert torch.equal(still, start[2])
    assert not torch.equal(weight[[0, 2]], start[0][[0, 2]])
    assert not torch.equal(vector, start[1])


ZERO_BY_ZERO = [
    pytest.param(info, config, id=info.id(config))
    for info in OPTIM_DB
    for config in info.sweep
    if divides_zero_by_zero(config) and not set(config) & set(WEIGHT_DECAY_KEYS)
]


@pytest.mark.parametrize("info, config", ZERO_BY_ZERO)
def test_zero_by_zero_paper_forms_turn_exactly_the_zero_gradient_entries_nan(info, config):
    """F4, the documented exception (docs/algorithms.md): with ε = 0 (or Adamax's
    ``eps_mode="none"``) an entry whose gradients have all been 0 becomes NaN, as the paper's
    formula gives, and nothing else does: the NaN reaches no other entry or param."""
    assert ZERO_BY_ZERO  # the registry has such forms (AMSGrad's Algorithm 2, Adamax's paper)
    _, (weight, vector, still), _ = zero_gradient_run(info, config, torch.float32, 5)
    zero = torch.zeros(4, 3, dtype=torch.bool)
    zero[[1, 3]] = True
    assert torch.equal(weight.isnan(), zero)
    assert still.isnan().all()
    assert torch.isfinite(vector).all()


# A config torch.optim can run as is compares state entry by entry with torch's; the others
# (an option torch lacks, or no counterpart: SGDW, SWATS, ND-Adam) compare params with the
# nearest torch.optim rule: the counterpart with the options it has, else SGD with momentum
# for SGDW, and Adam for SWATS (Adam's step until it switches) and ND-Adam (Adam per vector).
STAND_INS = {
    "SGDW": (torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
    "SWATS": (torch.optim.Adam, {"lr": 1e-3}),
    "NDAdam": (torch.optim.Adam, {"lr": 1e-3}),
}


def counterpart(info, config):
    """(torch class, kwargs, whether its state is ours to compare entry by entry)."""
    kwargs = info.torch_kwargs(config)
    if kwargs is not None:
        return info.torch_cls, kwargs, True
    if info.torch_cls is None:
        torch_cls, kwargs = STAND_INS[info.name]
        return torch_cls, {**kwargs, "foreach": False}, False
    accepted = inspect.signature(info.torch_cls).parameters
    kept = {k: v for k, v in config.items() if k in accepted}
    return info.torch_cls, {**info.torch_fixed, **kept, "foreach": False}, False


def test_every_record_without_a_counterpart_has_a_stand_in():
    """F4: no optimizer escapes the extreme-gradient test for want of a torch rule."""
    assert {info.name for info in OPTIM_DB if info.torch_cls is None} == set(STAND_INS)


def extreme_run(make, scale):
    params = leaves(torch.float32)
    optimizer = make(params)
    script = [[g * scale for g in grads] for grads in gradient_script(20, torch.float32)]
    feed(optimizer, params, script)
    return snapshot(optimizer, params)


# Measured (torch 2.13, this script): at 1e30, g² overflows fp32, and the second moment of
# every optimizer that keeps one (Adagrad's sum, RMSprop's square_avg, exp_avg_sq and
# max_exp_avg_sq of the Adam family, SWATS and ND-Adam) is Inf in every config, in torch as in
# adamkit; the params stay finite (m / √Inf = 0). SGD, SGDW and Adamax (a max of |g|) stay
# finite throughout. At 1e-30, g² underflows to 0, so the ε = 0 forms (AMSGrad's Algorithm 2)
# turn params NaN by 0/0, in torch as in adamkit; every other config stays finite.
@pytest.mark.parametrize("scale", [1e-30, 1e30])
@pytest.mark.parametrize("info, config", sweep_cases())
def test_extreme_gradients_finite_wherever_torch_is(info, config, scale):
    """F4: fp32 gradients scaled by 1e-30 or 1e30 for 20 steps, every config: each entry of
    our params, and of every state tensor torch.optim also keeps, is finite wherever
    torch's is; where all of torch's are finite, all of our state is too. (At 1e30 g²
    overflows fp32: Adam-family second moments become Inf in torch as in adamkit, and a
    param then stays finite only where both agree.)"""
    torch_cls, kwargs, same_state = counterpart(info, config)
    ours = extreme_run(lambda params: info.cls(params, **config), scale)
    theirs = extreme_run(lambda params: torch_cls(params, **kwargs), scale)
    for index, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        tensors = {
            k: v
            for k, v in reference.items()
            if isinstance(v, torch.Tensor) and (same_state or k == "param")
        }
        for name, expected in tensors.items():
            finite = torch.isfinite(expected)
            assert torch.isfinite(mine[name])[finite].all(), f"param {index} {name}"
        if all(torch.isfinite(v).all() for v in tensors.values()):
            for name, value in mine.items():
                if isinstance(value, torch.Tensor) and (same_state or name == "param"):
                    assert torch.isfinite(value).all(), f"param {index} {name}"
