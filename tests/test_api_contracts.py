"""The rest of torch.optim's contract and the algorithms' invariants (TESTING.md A6, A8, A9,
A10, N5, F4), over every optimizer of the registry."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from test_contracts import assert_same

from harness import gradient_script, leaves, run, snapshot
from registry import OPTIM_DB, sweep_cases

RECORDS = [pytest.param(info, id=info.name) for info in OPTIM_DB]


def by_name(name):
    return next(info for info in OPTIM_DB if info.name == name)


# ---------------------------------------------------------------- A9


@pytest.mark.parametrize("info", RECORDS)
def test_a_group_added_after_training_starts(info):
    """A9: a group added after 3 steps gets the defaults and trains; the state of the first
    group is untouched by adding it."""
    params = leaves(torch.float32)
    optimizer = info.cls(params[:2])
    run(optimizer, params[:2], gradient_script(3, torch.float32, shapes=[(3, 4), (5,)]))
    before = snapshot(optimizer, params[:2])
    late = params[2]
    optimizer.add_param_group({"params": [late]})
    group = optimizer.param_groups[1]
    assert {k: v for k, v in group.items() if k != "params"} == optimizer.defaults
    assert_same(snapshot(optimizer, params[:2]), before)
    start = late.detach().clone()
    run(optimizer, params, gradient_script(2, torch.float32))
    assert not torch.equal(late.detach(), start)


CHANGES = {
    "lr": lambda group: 0.5 * float(group["lr"]),
    "weight_decay": lambda group: 0.05,
    "betas": lambda group: (0.8, 0.99),
    "momentum": lambda group: 0.5,
}


@pytest.mark.parametrize("key", sorted(CHANGES))
@pytest.mark.parametrize("info", RECORDS)
def test_changing_a_group_between_steps_takes_effect_at_the_next(info, key):
    """A9: after 3 steps ``group[key]`` changes (what OneCycleLR and hand-made schedules
    do); the next 3 steps equal, bit for bit, those of an optimizer constructed with the new
    value and loaded with the same state."""
    if key not in info.cls([torch.zeros(1, requires_grad=True)]).defaults:
        pytest.skip(f"{info.name} has no {key}")
    config = {"momentum": 0.9} if info.name == "SGD" else {}
    script = gradient_script(6, torch.float32)
    params = leaves(torch.float32)
    optimizer = info.cls(params, **config)
    run(optimizer, params, script[:3])
    value = CHANGES[key](optimizer.param_groups[0])
    saved = copy.deepcopy(optimizer.state_dict())
    saved["param_groups"][0][key] = value
    twins = [p.detach().clone().requires_grad_() for p in params]
    twin = info.cls(twins, **{**config, key: value})
    twin.load_state_dict(saved)
    optimizer.param_groups[0][key] = value
    run(optimizer, params, script[3:])
    run(twin, twins, script[3:])
    assert_same(snapshot(optimizer, params), snapshot(twin, twins))


# ---------------------------------------------------------------- A8


@pytest.mark.parametrize("info", RECORDS)
def test_step_hooks_fire_in_order_and_are_removable(info):
    """A8: global pre, local pre, local post, global post; none after ``remove()``."""
    fired = []
    params = leaves(torch.float32)
    optimizer = info.cls(params)
    handles = [
        register_optimizer_step_pre_hook(lambda *a: fired.append("global pre")),
        optimizer.register_step_pre_hook(lambda *a: fired.append("local pre")),
        optimizer.register_step_post_hook(lambda *a: fired.append("local post")),
        register_optimizer_step_post_hook(lambda *a: fired.append("global post")),
    ]
    try:
        run(optimizer, params, gradient_script(1, torch.float32))
        assert fired == ["global pre", "local pre", "local post", "global post"]
    finally:
        for handle in handles:
            handle.remove()
    run(optimizer, params, gradient_script(1, torch.float32))
    assert len(fired) == 4


def test_step_wrapper_as_torch_wraps_it():
    """A8: a pre-hook's returned ``(args, kwargs)`` is what the step gets (here a closure,
    whose loss the step returns), a return of another form raises torch's RuntimeError, and
    the profiler records the step in a range of torch's name; each as torch.optim.Adam's."""
    from torch.profiler import profile

    seen = {}
    for cls in (torch.optim.Adam, by_name("Adam").cls):
        params = leaves(torch.float32)
        optimizer = cls(params)
        for param in params:
            param.grad = torch.ones_like(param)
        handle = optimizer.register_step_pre_hook(
            lambda o, args, kwargs: ((o, lambda: torch.tensor(7.0)), {})
        )
        loss = optimizer.step()
        handle.remove()
        handle = optimizer.register_step_pre_hook(lambda o, args, kwargs: "other")
        with pytest.raises(RuntimeError) as refused:
            optimizer.step()
        handle.remove()
        with profile() as profiled:
            optimizer.step()
        names = [event.name for event in profiled.events() if "Optimizer.step" in event.name]
        message = str(refused.value).split(">", 1)[1]  # after the step function's repr
        seen[cls] = (float(loss), message, names)
    torch_seen, ours = seen.values()
    assert torch_seen[0] == ours[0] == 7.0
    assert (
        torch_seen[1]
        == ours[1]
        == " must return None or a tuple of (new_args, new_kwargs), but got other."
    )
    assert torch_seen[2] == ours[2] == ["Optimizer.step#Adam.step"]


@pytest.mark.parametrize("info", RECORDS)
def test_state_dict_hooks_run(info):
    """A8: state_dict and load_state_dict pre and post hooks run, ``prepend=True`` first;
    a post hook's returned dict is what ``state_dict()`` returns."""
    fired = []
    params = leaves(torch.float32)
    optimizer = info.cls(params)
    run(optimizer, params, gradient_script(1, torch.float32))
    optimizer.register_state_dict_pre_hook(lambda o: fired.append("pre"))
    optimizer.register_state_dict_pre_hook(lambda o: fired.append("pre first"), prepend=True)

    def post(optimizer, state_dict):
        fired.append("post")
        return {**state_dict, "marker": 1}

    optimizer.register_state_dict_post_hook(post)
    saved = optimizer.state_dict()
    assert fired == ["pre first", "pre", "post"] and saved["marker"] == 1
    fired.clear()

    def load_pre(optimizer, state_dict):
        fired.append("load pre")
        return {k: v for k, v in state_dict.items() if k != "marker"}

    optimizer.register_load_state_dict_pre_hook(load_pre)
    optimizer.register_load_state_dict_post_hook(lambda o: fired.append("load post"))
    optimizer.load_state_dict(saved)
    assert fired == ["load pre", "load post"]


@pytest.mark.parametrize("info, config", sweep_cases())
def test_repr_names_the_class_and_every_hyperparameter(info, config):
    """A8: ``repr()`` works for every config and shows each group's hyperparameters; every
    param with a gradient has state after one step (torch's test_non_empty_state)."""
    params = leaves(torch.float32)
    optimizer = info.cls(params, **config)
    text = repr(optimizer)
    assert text.startswith(type(optimizer).__name__ + " (")
    for key in optimizer.defaults:
        assert f"    {key}: " in text, key
    run(optimizer, params, gradient_script(1, torch.float32))
    group = optimizer.param_groups[0]
    rule = optimizer.rule
    keeps = bool(rule.state_names(rule.options(group))) or rule.counts_steps(group)
    assert all(bool(optimizer.state[p]) == keeps for p in params)  # torch's SGD: none


# ---------------------------------------------------------------- A6

SHAPES = st.lists(
    st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=3
)
SECOND_MOMENTS = ("exp_avg_sq", "square_avg", "sum", "exp_inf", "max_exp_avg_sq")
MONOTONE = {"AMSGrad": "max_exp_avg_sq", "Adagrad": "sum"}


@settings(max_examples=25, deadline=None)
@given(
    shapes=SHAPES,
    scale=st.sampled_from([1e-6, 1.0, 1e4]),
    seed=st.integers(0, 1000),
    record=st.sampled_from(range(len(OPTIM_DB))),
)
def test_state_invariants(shapes, scale, seed, record):
    """A6, over random shapes and gradient scales: second moments stay ≥ 0; AMSGrad's max
    and Adagrad's sum never decrease; ``step`` grows by exactly 1 per step a param has a
    gradient, and not at all when it has none (the last param skips every other step)."""
    info = OPTIM_DB[record]
    params = leaves(torch.float32, seed, shapes)
    optimizer = info.cls(params, **info.sweep[0])
    script = gradient_script(8, torch.float32, seed, shapes)
    previous = None
    for t, grads in enumerate(script):
        for index, (param, grad) in enumerate(zip(params, grads, strict=True)):
            skip = index == len(params) - 1 and len(params) > 1 and t % 2
            param.grad = None if skip else scale * grad
        counting = optimizer.rule.counts_steps(optimizer.param_groups[0])
        counts = [float(optimizer.state[p].get("step", 0)) for p in params]
        optimizer.step()
        for index, param in enumerate(params):
            state = optimizer.state[param]
            had = params[index].grad is not None
            assert float(state.get("step", 0)) == counts[index] + (had and counting)
            for name in SECOND_MOMENTS:
                if name in state:
                    assert (state[name] >= 0).all(), name
        name = MONOTONE.get(info.name)
        if name is not None:
            current = [optimizer.state[p][name].clone() for p in params if optimizer.state[p]]
            if previous is not None and len(previous) == len(current):
                for now, before in zip(current, previous, strict=True):
                    assert (now >= before).all()
            previous = current


# ---------------------------------------------------------------- A10


@pytest.mark.parametrize("backend", ["eager", "fused"])
@pytest.mark.parametrize("info", RECORDS)
def test_runs_are_deterministic(info, backend):
    """A10: two runs from the same seed are bit for bit the same, and so is a run under
    ``torch.use_deterministic_algorithms(True)``, which raises nothing."""
    histories = []
    for deterministic in (False, False, True):
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(deterministic)
        try:
            params = leaves(torch.float32)
            optimizer = info.cls(params, backend=backend, **info.sweep[0])
            run(optimizer, params, gradient_script(10, torch.float32))
            histories.append(snapshot(optimizer, params))
        finally:
            torch.use_deterministic_algorithms(previous)
    assert_same(histories[1], histories[0])
    assert_same(histories[2], histories[0])


# ---------------------------------------------------------------- N5

# lr per optimizer for the two problems, in float64 (optax's test_optimization picks one per
# optimizer too): large enough to arrive within the step budget, small enough to settle
PARABOLA_LR = {"SGD": 0.1, "SGDW": 0.1, "Adagrad": 0.5, "RMSprop": 0.01}
ROSENBROCK = {  # lr, steps
    "SGD": (1e-3, 10_000),
    "SGDW": (1e-3, 10_000),
    "Adagrad": (0.5, 10_000),
    "RMSprop": (1e-3, 10_000),
}


def minimise(info, function, start, lr, steps, **config):
    point = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = info.cls([point], lr=lr, **config)
    for _ in range(steps):
        optimizer.zero_grad()
        function(point).backward()
        optimizer.step()
    return point.detach()


def no_decay(info):
    """SGDW decays by default; the optimum of the plain problem needs none."""
    return {"weight_decay": 0.0}


@pytest.mark.parametrize("info", RECORDS)
def test_parabola_reaches_its_minimum(info):
    """N5a: ‖x − c‖² from the origin: within 3e-2 of c in 2 000 steps."""
    centre = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    lr = PARABOLA_LR.get(info.name, 0.05)
    found = minimise(
        info, lambda x: ((x - centre) ** 2).sum(), [0.0, 0.0, 0.0], lr, 2000, **no_decay(info)
    )
    assert torch.allclose(found, centre, atol=3e-2), found


@pytest.mark.parametrize("info", RECORDS)
def test_rosenbrock_reaches_its_minimum(info):
    """N5a: Rosenbrock (1 − x)² + 100 (y − x²)² from (−1, 1): within 3e-2 of (1, 1) in at
    most 10 000 steps."""
    lr, steps = ROSENBROCK.get(info.name, (0.01, 10_000))
    found = minimise(
        info,
        lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2,
        [-1.0, 1.0],
        lr,
        steps,
        **no_decay(info),
    )
    assert torch.allclose(found, torch.ones(2, dtype=torch.float64), atol=3e-2), found


@pytest.mark.parametrize("scheduled", [False, True])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("info", RECORDS)
def test_goes_the_right_direction(info, maximize, contiguous, scheduled):
    """N5b (torch's test_forloop_goes_right_direction): ‖W x + b‖², 20 steps, contiguous or
    transposed W, with or without ExponentialLR: the loss falls, or rises with maximize."""
    generator = torch.Generator().manual_seed(0)
    if contiguous:
        weight = torch.randn(2, 3, generator=generator)
    else:
        weight = torch.randn(3, 2, generator=generator).t()
    weight = weight / weight.norm(dim=1, keepdim=True)
    weight.requires_grad_()
    bias = torch.randn(2, generator=generator, requires_grad=True)
    x = torch.randn(3, generator=generator)
    optimizer = info.cls([weight, bias], lr=1e-2, maximize=maximize)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.95) if scheduled else None

    def loss():
        return ((weight @ x + bias) ** 2).sum()

    first = loss().item()
    for _ in range(20):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    assert (loss().item() > first) if maximize else (loss().item() < first)


# ---------------------------------------------------------------- F4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("info", RECORDS)
def test_zero_gradient_rows_stay_put_in_low_precision(info, dtype):
    """F4: 1 000 steps of a low-precision param whose first row always has a zero
    gradient: nothing turns NaN or Inf, and that row never moves (no weight decay). A
    whole-tensor zero gradient likewise leaves its param where it is."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    weight = (weight / weight.norm(dim=1, keepdim=True)).to(dtype).requires_grad_()
    still = torch.randn(5, generator=generator).to(dtype).requires_grad_()
    start, still_start = weight.detach().clone(), still.detach().clone()
    optimizer = info.cls([weight, still], weight_decay=0.0)
    for _ in range(1000):
        grad = torch.randn(4, 6, generator=generator).to(dtype)
        grad[0] = 0
        weight.grad, still.grad = grad, torch.zeros_like(still)
        optimizer.step()
    for param in (weight, still):
        assert torch.isfinite(param).all()
        for value in optimizer.state[param].values():
            if isinstance(value, torch.Tensor):
                assert torch.isfinite(value).all()
    assert torch.equal(weight[0].detach(), start[0])
    assert torch.equal(still.detach(), still_start)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
@pytest.mark.parametrize("info, config", [c for c in sweep_cases() if c.values[1] == {}])
def test_extreme_gradients_stay_finite_where_torch_does(info, config, scale):
    """F4: float32 gradients of 1e-30 and 1e30 for 20 steps: params and state finite
    wherever torch.optim's counterpart stays finite (at 1e30, g² overflows float32: torch's
    Adam keeps an infinite second moment too)."""
    script = [[scale * g for g in grads] for grads in gradient_script(20, torch.float32)]
    # SWATS and ND-Adam against torch's Adam, the step they build on
    torch_cls = info.torch_cls or (torch.optim.Adam if info.name != "SGDW" else torch.optim.SGD)
    kwargs = info.torch_kwargs(config) if info.torch_cls else {"foreach": False}
    ours, expected = (
        finite_after(make, script)
        for make in (
            lambda params: info.cls(params, **config),
            lambda params: torch_cls(params, **kwargs),
        )
    )
    assert ours or not expected


def finite_after(make, script) -> bool:
    params = leaves(torch.float32)
    optimizer = make(params)
    run(optimizer, params, script)
    return all(
        torch.isfinite(v).all()
        for p in params
        for v in [p, *optimizer.state[p].values()]
        if isinstance(v, torch.Tensor)
    )
