"""SWATS: the switch against the reference, Adam before it, order independence, checkpoints
across it, schedulers and late params after it (TESTING.md N2, N7, A6, A7, S7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adamkit
from test_contracts import assert_same

from harness import SHAPES, leaves, multipliers, run, snapshot
from reference import swats as reference_swats

STEPS = 300
# Normal gradients, lr 1e-2, β2 = 0.9: the group's bias-corrected average of γ meets the
# tolerance in the middle of the run (the reference says where; the tests assert the window)
HYPER = {"lr": 1e-2, "betas": (0.9, 0.9), "switch_tolerance": 1e-4}
# switch_rtol: on the same gradients the relative test first holds late in the run
RTOL = 3e-3


def normal_script(steps: int, dtype: torch.dtype, seed: int = 0) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        [torch.randn(shape, generator=generator, dtype=dtype) for shape in SHAPES]
        for _ in range(steps)
    ]


def switch_steps(optimizer, params):
    return [point.step if (point := optimizer.switch_point(p)) else 0 for p in params]


@pytest.mark.parametrize("eps_mode", ["efficient", "paper"])
@pytest.mark.parametrize("granularity", ["group", "tensor"])
def test_switch_and_both_phases_match_the_reference(granularity, eps_mode, float64_default):
    """300 steps under a changing lr: params and every state value equal the float64
    transcription of §17a (rtol 1e-10), and the switch happens at the reference's step,
    mid-run, with the reference's Λ."""
    params = leaves(torch.float64)
    initial = [p.detach().numpy().copy() for p in params]
    script = normal_script(STEPS, torch.float64)
    etas = multipliers(STEPS)
    config = {**HYPER, "granularity": granularity, "eps_mode": eps_mode}
    optimizer = adamkit.SWATS(params, **config)
    history = run(optimizer, params, script, etas, lambda t: snapshot(optimizer, params))
    expected = reference_swats(
        initial, [[g.numpy() for g in grads] for grads in script], lr_multipliers=etas, **config
    )
    for t, (ours, theirs) in enumerate(zip(history, expected, strict=True), start=1):
        for index, (state, ref) in enumerate(zip(ours, theirs, strict=True)):
            assert state["switch_step"] == int(ref["switch_step"]), f"param {index}, step {t}"
            for name in ("param", "exp_avg", "exp_avg_sq", "sgd_lr_average", "sgd_lr"):
                np.testing.assert_allclose(
                    np.asarray(state[name]),
                    ref[name],
                    rtol=1e-10,
                    atol=0,
                    err_msg=f"param {index}, {name}, step {t}",
                )
    steps = switch_steps(optimizer, params)
    if granularity == "group":
        assert len(set(steps)) == 1 and 50 < steps[0] < 250, steps
    else:
        assert any(50 < step < 250 for step in steps), steps
    point = optimizer.switch_point(params[0])
    if point is not None:
        assert point.sgd_lr == pytest.approx(float(expected[-1][0]["sgd_lr"]), rel=1e-10)
        assert point.lr == pytest.approx(HYPER["lr"] * etas[point.step - 1], rel=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(
    "options",
    [
        {"eps_mode": "efficient"},
        {"eps_mode": "paper", "weight_decay": 0.1},
        {"eps_mode": "efficient", "weight_decay": 0.1, "weight_decay_mode": "decoupled_lr"},
        {"eps_mode": "paper", "maximize": True},
    ],
)
def test_adam_phase_is_adam_bit_for_bit(options, dtype):
    """Up to and including its switch step SWATS steps exactly as adamkit.Adam with the same
    eps form; with a tolerance it never meets, for the whole run (N7)."""
    for tolerance, steps in ((HYPER["switch_tolerance"], STEPS), (1e-300, 100)):
        ours, theirs = leaves(dtype), leaves(dtype)
        swats = adamkit.SWATS(ours, **{**HYPER, "switch_tolerance": tolerance}, **options)
        adam = adamkit.Adam(
            theirs, lr=HYPER["lr"], betas=HYPER["betas"], eps=1e-9, backend="eager", **options
        )
        switch = None
        for grads in normal_script(steps, dtype):
            for p, q, g in zip(ours, theirs, grads, strict=True):
                p.grad, q.grad = g.clone(), g.clone()
            swats.step()
            adam.step()
            for p, q in zip(ours, theirs, strict=True):
                assert torch.equal(p, q)
            if (point := swats.switch_point(ours[0])) is not None:
                switch = point.step
                break
            for p, q in zip(ours, theirs, strict=True):
                for name in ("exp_avg", "exp_avg_sq"):
                    assert torch.equal(swats.state[p][name], adam.state[q][name])
        if tolerance == 1e-300:
            assert switch is None
        elif dtype != torch.bfloat16:
            assert switch is not None, "the comparison must reach the switch"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_switch_does_not_depend_on_the_order_of_params(dtype):
    """The group's sums are exact, so listing the params in another order gives the same
    switch step, the same Λ to the bit, and the same params."""
    orders = [[0, 1, 2], [2, 0, 1], [1, 2, 0]]
    runs = []
    for order in orders:
        params = leaves(dtype)
        optimizer = adamkit.SWATS([params[i] for i in order], **HYPER)
        run(optimizer, params, normal_script(STEPS, dtype))
        runs.append(([optimizer.switch_point(p) for p in params], params))
    (points, params), *others = runs
    assert points[0] is not None and len(set(points)) == 1
    for other_points, other_params in others:
        assert other_points == points
        for a, b in zip(params, other_params, strict=True):
            assert torch.equal(a, b)


def test_never_switches_back_and_steps_as_sgd_with_momentum():
    """After the switch the phase stays, and each step is m ← β1·m + (1−β1)·g,
    θ ← θ − Λ·(lr_t/lr_s)·m, with torch's StepLR halving the lr every 100 steps (A7)."""
    params = leaves(torch.float64)
    optimizer = adamkit.SWATS(params, **HYPER)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=100, gamma=0.5)
    beta1 = HYPER["betas"][0]
    first = None
    for grads in normal_script(STEPS, torch.float64):
        before = [p.detach().clone() for p in params]
        momenta = [optimizer.state[p]["exp_avg"].clone() if first else None for p in params]
        lr = optimizer.param_groups[0]["lr"]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        scheduler.step()
        point = optimizer.switch_point(params[0])
        if first is None:
            first = point
            continue
        assert point == first
        for p, g, theta, m in zip(params, grads, before, momenta, strict=True):
            expected = theta - first.sgd_lr * lr / first.lr * (beta1 * m + (1 - beta1) * g)
            torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=0)
    assert first is not None and first.lr == HYPER["lr"] / 2 and first.step < 200


@pytest.mark.parametrize("at", [40, 200])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checkpoint_before_and_after_the_switch_resumes_bit_for_bit(at, dtype, tmp_path):
    """Saved at step 40 (Adam phase) or 200 (after the switch), loaded with weights_only into
    a fresh optimizer: the rest of the run is the uninterrupted one, switch included (S1, S7)."""
    script = normal_script(STEPS, dtype)
    params = leaves(dtype)
    optimizer = adamkit.SWATS(params, **HYPER)
    run(optimizer, params, script[:at])
    path = tmp_path / "swats.pt"
    torch.save(optimizer.state_dict(), path)
    clones = [p.detach().clone().requires_grad_() for p in params]
    resumed = adamkit.SWATS(clones, **HYPER)
    resumed.load_state_dict(torch.load(path, weights_only=True))
    run(optimizer, params, script[at:])
    run(resumed, clones, script[at:])
    assert_same(snapshot(optimizer, params), snapshot(resumed, clones))
    point = optimizer.switch_point(params[0])
    assert point is not None and resumed.switch_point(clones[0]) == point
    assert (point.step < at) == (at == 200)


def test_a_param_that_starts_after_the_switch_joins_the_sgd_phase():
    """A param without gradient until after its group switched (unfrozen late) starts SGD
    with a zero momentum: its first step is −Λ·(1−β1)·g."""
    params = leaves(torch.float64)
    late = params[0]
    optimizer = adamkit.SWATS(params, **HYPER)
    script = normal_script(STEPS, torch.float64)
    for t, grads in enumerate(script, start=1):  # noqa: B007 (t is the next step's index)
        for p, g in zip(params, grads, strict=True):
            p.grad = None if p is late else g.clone()
        optimizer.step()
        if optimizer.switch_point(params[1]) is not None:
            break
    assert late not in optimizer.state
    before = late.detach().clone()
    late.grad = script[t][0].clone()
    params[1].grad, params[2].grad = script[t][1].clone(), script[t][2].clone()
    optimizer.step()
    point = optimizer.switch_point(late)
    assert point == optimizer.switch_point(params[1])
    expected = before - point.sgd_lr * (1 - HYPER["betas"][0]) * script[t][0]
    torch.testing.assert_close(late.detach(), expected, rtol=1e-14, atol=0)


def test_zero_gradients_leave_the_estimate_alone():
    """pᵀg = 0 (all gradients zero): no division by zero, λ unchanged, no switch (F4)."""
    params = leaves(torch.float32)
    optimizer = adamkit.SWATS(params, switch_tolerance=1.0)
    for _ in range(5):
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
    for p in params:
        state = optimizer.state[p]
        assert state["sgd_lr_average"] == 0.0 and state["switch_step"] == 0
        assert torch.isfinite(p).all()
    assert optimizer.switch_point(params[0]) is None


def test_global_switch_spans_the_groups():
    """granularity="global" over two groups equals one group holding every param, bit for
    bit; two groups with "group" granularity switch on their own, at other steps."""
    script = normal_script(STEPS, torch.float64)
    one, split, per_group = leaves(torch.float64), leaves(torch.float64), leaves(torch.float64)
    optimizers = [
        adamkit.SWATS(one, **HYPER),
        adamkit.SWATS(
            [{"params": split[:1]}, {"params": split[1:]}], granularity="global", **HYPER
        ),
        adamkit.SWATS([{"params": per_group[:1]}, {"params": per_group[1:]}], **HYPER),
    ]
    for optimizer, params in zip(optimizers, (one, split, per_group), strict=True):
        run(optimizer, params, script)
    points = [
        [opt.switch_point(p) for p in params]
        for opt, params in zip(optimizers, (one, split, per_group), strict=True)
    ]
    assert points[0][0] is not None and points[1] == points[0]
    for a, b in zip(one, split, strict=True):
        assert torch.equal(a, b)
    assert points[2][0] != points[2][1]


def test_global_switch_with_weight_decay_groups():
    """The whole model switches at once although weight_decay_groups splits it, each group
    scaling Λ by its own lr."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    groups = adamkit.weight_decay_groups(model, 1e-2)
    groups[1]["lr"] = 2e-2
    optimizer = adamkit.SWATS(
        groups,
        lr=1e-2,
        betas=(0.9, 0.9),
        switch_tolerance=3e-3,
        weight_decay_mode="decoupled_lr",
        granularity="global",
    )
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    y = x.sum(dim=1, keepdim=True).sin()
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    points = {name: optimizer.switch_point(p) for name, p in model.named_parameters()}
    assert len({(p.step, p.sgd_lr) for p in points.values() if p is not None}) == 1, points
    assert None not in points.values()
    assert {p.lr for p in points.values()} == {1e-2, 2e-2}


def test_a_late_param_of_a_global_group_uses_its_own_groups_lr():
    """Under "global", a param that starts after the switch in a group none of whose params
    had stepped takes the group's current lr as its lr at the switch: its SGD lr starts at Λ."""
    params = leaves(torch.float64)
    optimizer = adamkit.SWATS(
        [{"params": params[:2]}, {"params": params[2:], "lr": 2e-2}],
        granularity="global",
        **HYPER,
    )
    script = normal_script(STEPS, torch.float64)
    for t, grads in enumerate(script, start=1):  # noqa: B007 (t is the next step's index)
        for p, g in zip(params, grads, strict=True):
            p.grad = None if p is params[2] else g.clone()
        optimizer.step()
        if optimizer.switch_point(params[0]) is not None:
            break
    params[2].grad = script[t][2].clone()
    optimizer.step()
    point = optimizer.switch_point(params[2])
    assert (point.step, point.sgd_lr) == optimizer.switch_point(params[0])[:2]
    assert point.lr == 2e-2 and optimizer.switch_point(params[0]).lr == HYPER["lr"]


@pytest.mark.parametrize("granularity", ["group", "tensor"])
def test_relative_switch_does_not_depend_on_the_scale_of_the_lr(granularity):
    """switch_rtol: switch when |Λ − γ_k| ≤ rtol·|γ_k|. On the same gradients p_k, γ_k and Λ
    scale with the lr, so the relative test switches at the same steps at lr 1e-2 and 1e-6,
    mid-run, with Λ in proportion; the paper's absolute test (|Λ − γ_k| < 1e-4) switches
    mid-run at lr 1e-2 but at step 2, the first allowed, at lr 1e-6, where every γ_k is
    below the tolerance."""
    script = normal_script(STEPS, torch.float64)
    relative, absolute = {}, {}
    for lr in (1e-2, 1e-6):
        for criterion, found in (({"switch_rtol": RTOL}, relative), ({}, absolute)):
            params = leaves(torch.float64)
            config = {**HYPER, "lr": lr, "granularity": granularity, **criterion}
            optimizer = adamkit.SWATS(params, **config)
            run(optimizer, params, script, multipliers(STEPS))
            found[lr] = switch_steps(optimizer, params), optimizer.switch_point(params[0])
    assert relative[1e-2][0] == relative[1e-6][0] and 50 < max(relative[1e-2][0]) < STEPS
    assert relative[1e-2][1].sgd_lr == pytest.approx(1e4 * relative[1e-6][1].sgd_lr, rel=1e-9)
    assert 50 < max(absolute[1e-2][0]) < 250 and absolute[1e-6][0] == [2, 2, 2]


def test_the_paper_absolute_test_stays_the_default():
    """By default switch_rtol is None and the absolute test decides; a given switch_rtol
    replaces it: with switch_tolerance 1e9, which any γ_k meets at step 2, the switch is
    where the relative test alone puts it. A group saved without the key (a checkpoint of
    an earlier adamkit) loads with the default."""
    script = normal_script(STEPS, torch.float64)
    steps = []
    for criterion in ({"switch_tolerance": 1e9}, {"switch_tolerance": 1e9, "switch_rtol": RTOL}):
        params = leaves(torch.float64)
        optimizer = adamkit.SWATS(params, **{**HYPER, **criterion})
        run(optimizer, params, script)
        steps.append(switch_steps(optimizer, params))
    assert steps[0] == [2, 2, 2] and 50 < steps[1][0] < STEPS
    optimizer = adamkit.SWATS(leaves(torch.float64))
    assert optimizer.param_groups[0]["switch_rtol"] is None
    saved = optimizer.state_dict()
    del saved["param_groups"][0]["switch_rtol"]
    optimizer.param_groups[0]["switch_rtol"] = RTOL
    optimizer.load_state_dict(saved)
    assert optimizer.param_groups[0]["switch_rtol"] is None


@pytest.mark.parametrize("criterion", [{}, {"switch_rtol": RTOL}], ids=["absolute", "relative"])
@pytest.mark.parametrize("granularity", ["group", "tensor", "global"])
def test_fused_switches_where_eager_does(granularity, criterion):
    """The fused backend takes the projections over its flat buffers: same switch steps,
    and params within float32 rounding of eager's through both phases, by the paper's
    absolute test and by the relative one."""
    results = []
    for backend in ("eager", "fused"):
        params = leaves(torch.float32)
        optimizer = adamkit.SWATS(
            params, backend=backend, granularity=granularity, **{**HYPER, **criterion}
        )
        run(optimizer, params, normal_script(STEPS, torch.float32), multipliers(STEPS))
        results.append((params, switch_steps(optimizer, params)))
    (eager, eager_steps), (fused, fused_steps) = results
    assert fused_steps == eager_steps and any(eager_steps)
    for a, b in zip(eager, fused, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
