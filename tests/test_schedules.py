"""Warm restarts (SGDR / AdamWR), one-cycle and normalized weight decay, against torch's
schedulers and the formulas of Loshchilov & Hutter (ALGORITHMS.md §14, §15, §22b, §24b)."""

from __future__ import annotations

import io
import itertools
import math
import re
import warnings

import pytest
import torch
from torch.optim import lr_scheduler

import adamkit
from adamkit.schedules import OneCycle, WarmRestarts, normalized_weight_decay

STEP_ORDER_WARNING = r"lr_scheduler\.step\(\)` before `optimizer\.step\(\)"


def groups(lrs=(0.1, 0.037), dtype=torch.float64):
    return [{"params": [torch.ones(3, dtype=dtype, requires_grad=True)], "lr": lr} for lr in lrs]


def sgd(params, **kwargs):
    return torch.optim.SGD(params, momentum=0.9, **kwargs)


def adamkit_sgd(params, **kwargs):
    return adamkit.SGD(params, momentum=0.9, **kwargs)


def run(optimizer, scheduler, steps, read=lambda group: group["lr"]):
    """``read`` of every group before each of ``steps`` optimizer steps (and after the last)."""
    seen = []
    for _ in range(steps):
        seen.append([read(group) for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    seen.append([read(group) for group in optimizer.param_groups])
    return seen


def restart_steps(T_0, T_mult, steps_per_epoch, count):
    """The steps at which the first ``count`` periods begin."""
    starts, step, length = [], 0, T_0 * steps_per_epoch
    for _ in range(count):
        starts.append(step)
        step, length = step + length, length * T_mult
    return starts


# ---------------------------------------------------------------- warm restarts


@pytest.mark.parametrize("optimizer_cls", [sgd, adamkit_sgd, adamkit.AdamW])
@pytest.mark.parametrize(
    "T_0, T_mult, eta_min", [(3, 1, 0.0), (3, 2, 0.0), (2, 3, 1e-3), (5, 2, 1e-5)]
)
def test_warm_restarts_equals_torch_bit_for_bit(optimizer_cls, T_0, T_mult, eta_min):
    ours, theirs = optimizer_cls(groups()), optimizer_cls(groups())
    scheduler = WarmRestarts(ours, T_0, T_mult, eta_min)
    reference = lr_scheduler.CosineAnnealingWarmRestarts(theirs, T_0, T_mult, eta_min)
    steps = restart_steps(T_0, T_mult, 1, 4)[-1] + 2  # past the third restart
    assert run(ours, scheduler, steps) == run(theirs, reference, steps)
    assert (scheduler.T_cur, scheduler.T_i) == (reference.T_cur, reference.T_i)


@pytest.mark.parametrize("T_0, T_mult, steps_per_epoch", [(2, 1, 7), (1, 2, 10), (3, 3, 4)])
def test_warm_restarts_per_batch_equals_torch_fractional_epochs(T_0, T_mult, steps_per_epoch):
    ours, theirs = sgd(groups()), sgd(groups())
    scheduler = WarmRestarts(ours, T_0, T_mult, 1e-4, steps_per_epoch=steps_per_epoch)
    reference = lr_scheduler.CosineAnnealingWarmRestarts(theirs, T_0, T_mult, 1e-4)
    steps = restart_steps(T_0, T_mult, steps_per_epoch, 4)[-1] + 2
    for step in range(steps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's step(epoch) is deprecated
            reference.step(step / steps_per_epoch)
        for group, expected in zip(ours.param_groups, reference.get_last_lr(), strict=True):
            assert group["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert scheduler.T_cur == pytest.approx(reference.T_cur, abs=1e-9)
        assert scheduler.T_i == reference.T_i
        ours.step()
        scheduler.step()


def test_multiplier_reaches_zero_before_each_restart_and_one_after():
    """[LH] Appendix C: T_0 = 100, T_mult = 2 restarts at epochs 100, 300, 700."""
    optimizer = torch.optim.SGD(groups((1.0,)), lr=1.0)
    scheduler = WarmRestarts(optimizer, 100, 2, steps_per_epoch=10)
    multipliers, positions = [], []
    for _ in range(7001):
        multipliers.append(scheduler.multiplier)
        positions.append((scheduler.period, scheduler.T_cur, scheduler.T_i))
        optimizer.step()
        scheduler.step()
    starts = [0, 1000, 3000, 7000]
    for period, start in enumerate(starts):
        assert multipliers[start] == 1.0
        assert positions[start] == (period, 0.0, 100.0 * 2**period)
    for period, (start, end) in enumerate(itertools.pairwise(starts)):
        within = multipliers[start:end]
        assert all(later < earlier for earlier, later in itertools.pairwise(within))
        assert 0.0 < within[-1] < 1e-4
        assert positions[end - 1] == (period, 100.0 * 2**period - 0.1, 100.0 * 2**period)


def test_lr_is_base_lr_times_multiplier_when_eta_min_is_zero():
    optimizer = torch.optim.SGD(groups((0.3,)))
    scheduler = WarmRestarts(optimizer, 2, 2, steps_per_epoch=3)
    for _ in range(30):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.3 * scheduler.multiplier)
        optimizer.step()
        scheduler.step()


# ---------------------------------------------------------------- normalized weight decay


def test_normalized_weight_decay_paper_example():
    """§24b: b = 128, B = 50 000, T = 100, λ_norm = 0.05 ⇒ λ ≈ 2.53e-4."""
    decay = normalized_weight_decay(0.05, 128, 50_000, 100)
    assert decay == pytest.approx(2.53e-4, rel=1e-3)
    assert decay == 0.05 * math.sqrt(128 / 5_000_000)


def test_weight_decay_is_renormalized_at_every_restart():
    b, B, norm, alpha = 128, 50_000, 0.05, 0.01
    optimizer = adamkit.AdamW(
        [
            {"params": groups()[0]["params"], "weight_decay_mode": "decoupled_schedule"},
            {"params": groups()[0]["params"]},  # decoupled_lr: torch's AdamW decay
            {"params": groups()[0]["params"], "weight_decay": 0.0, "lr": 0.0},  # frozen
        ],
        lr=alpha,
        weight_decay=norm,
    )
    scheduler = WarmRestarts(optimizer, 2, 2, steps_per_epoch=3, batch_size=b, dataset_size=B)
    seen = run(optimizer, scheduler, 43, read=lambda group: group["weight_decay"])
    starts = restart_steps(2, 2, 3, 4)  # 0, 6, 18, 42
    for period, (start, end) in enumerate(itertools.pairwise([*starts, 44])):
        paper = norm * math.sqrt(b / (B * 2 * 2**period))
        assert seen[start:end] == [[paper, paper / alpha, 0.0]] * (end - start)
    assert [group["weight_decay_norm"] for group in optimizer.param_groups] == [norm, norm, 0.0]


def adamwr_expected(optimizer, scheduler, steps, b, B, norm, alpha):
    """Zero gradients, so only the decay moves θ: θ ← θ·(1 − η_t·λ_i), η_t = lr_t/α, in the
    optimizer's float order. Returns (θ, expected θ)."""
    param = optimizer.param_groups[0]["params"][0]
    expected = param.detach().clone()
    for _ in range(steps):
        eta = optimizer.param_groups[0]["lr"] / alpha
        expected = expected * (1.0 - eta * (norm * math.sqrt(b / (B * scheduler.T_i))))
        param.grad = torch.zeros_like(param)
        optimizer.step()
        scheduler.step()
    return param.detach(), expected


def test_adamwr_decays_by_the_schedule_times_normalized_decay_exactly():
    b, B, norm, alpha = 128, 50_000, 0.05, 0.01
    param = torch.linspace(-2.0, 3.0, 7, dtype=torch.float64, requires_grad=True)
    optimizer = adamkit.AdamW(
        [param], lr=alpha, weight_decay=norm, weight_decay_mode="decoupled_schedule"
    )
    scheduler = WarmRestarts(optimizer, 2, 2, steps_per_epoch=5, batch_size=b, dataset_size=B)
    result, expected = adamwr_expected(optimizer, scheduler, 75, b, B, norm, alpha)
    assert scheduler.period == 3
    assert torch.equal(result, expected)
    assert not torch.equal(result, torch.linspace(-2.0, 3.0, 7, dtype=torch.float64))


def test_torch_adamw_with_normalized_decay_over_initial_lr_agrees():
    b, B, norm, alpha = 128, 50_000, 0.05, 0.01
    param = torch.linspace(-2.0, 3.0, 7, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.AdamW([param], lr=alpha, weight_decay=norm)
    scheduler = WarmRestarts(optimizer, 2, 2, steps_per_epoch=5, batch_size=b, dataset_size=B)
    result, expected = adamwr_expected(optimizer, scheduler, 75, b, B, norm, alpha)
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=0.0)


# ---------------------------------------------------------------- one-cycle


def momentum_of(group):
    return group["betas"] if "betas" in group else group["momentum"]


ONE_CYCLE_OPTIMIZERS = [
    pytest.param(adamkit.Adam, id="adamkit.Adam"),
    pytest.param(torch.optim.Adam, id="torch.Adam"),
    pytest.param(sgd, id="torch.SGD"),
    pytest.param(adamkit_sgd, id="adamkit.SGD"),
]


@pytest.mark.parametrize("optimizer_cls", ONE_CYCLE_OPTIMIZERS)
@pytest.mark.parametrize("anneal_strategy", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True], ids=["two_phase", "three_phase"])
@pytest.mark.parametrize("total_steps, pct_start", [(100, 0.3), (37, 0.25), (10, 0.05), (1, 0.3)])
def test_one_cycle_equals_torch_bit_for_bit(
    optimizer_cls, anneal_strategy, three_phase, total_steps, pct_start
):
    kwargs = {
        "total_steps": total_steps,
        "pct_start": pct_start,
        "anneal_strategy": anneal_strategy,
        "three_phase": three_phase,
    }
    ours, theirs = optimizer_cls(groups()), optimizer_cls(groups())
    scheduler = OneCycle(ours, [1.0, 0.4], **kwargs)
    reference = lr_scheduler.OneCycleLR(theirs, [1.0, 0.4], **kwargs)

    def read(group):
        return group["lr"], momentum_of(group)

    assert run(ours, scheduler, total_steps, read) == run(theirs, reference, total_steps, read)
    for group in ours.param_groups:
        assert isinstance(group.get("betas", ()), tuple)
    for name in ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"):
        assert [g[name] for g in ours.param_groups] == [g[name] for g in theirs.param_groups]
    message = f"Tried to step {total_steps + 1} times. The specified number of total steps is"
    with pytest.raises(ValueError, match=message):
        scheduler.step()


def test_one_cycle_without_momentum_cycling_leaves_momentum_alone():
    optimizer = sgd(groups((0.1,)))
    scheduler = OneCycle(optimizer, 0.5, total_steps=20, cycle_momentum=False)
    seen = run(optimizer, scheduler, 19, lambda group: (group["lr"], group["momentum"]))
    assert seen[0] == [(pytest.approx(0.5 / 25.0), 0.9)]
    assert seen[5] == [(0.5, 0.9)]  # the peak: step pct_start·total_steps − 1
    assert {momentum for [(_, momentum)] in seen} == {0.9}
    assert "max_momentum" not in optimizer.param_groups[0]


def test_one_cycle_phase_of_one_step_ends_at_its_end_value():
    """pct_start·total_steps = 1: torch divides by zero; the rise is the single step 0."""
    optimizer = sgd(groups((0.1,)))
    scheduler = OneCycle(optimizer, 1.0, total_steps=10, pct_start=0.1)
    seen = run(optimizer, scheduler, 9, lambda group: (group["lr"], group["momentum"]))
    assert seen[0] == [(1.0, 0.85)]
    assert seen[-1] == [(1.0 / 25.0 / 1e4, 0.95)]
    assert all(later < earlier for [earlier], [later] in itertools.pairwise(seen))


def test_one_cycle_drives_the_paper_decay_through_max_lr():
    """adamkit's decoupled_schedule mode reads η_t = lr_t/max_lr from OneCycle's groups."""
    param = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64, requires_grad=True)
    optimizer = adamkit.AdamW([param], weight_decay=0.1, weight_decay_mode="decoupled_schedule")
    scheduler = OneCycle(optimizer, 0.5, total_steps=12)
    expected = param.detach().clone()
    for _ in range(12):
        expected = expected * (1.0 - optimizer.param_groups[0]["lr"] / 0.5 * 0.1)
        param.grad = torch.zeros_like(param)
        optimizer.step()
        scheduler.step()
    assert torch.equal(param.detach(), expected)


# ---------------------------------------------------------------- bad input


def one_group():
    return sgd(groups((0.1,)))


# case: (make the scheduler, the ValueError's message)
BAD_INPUT = {
    "T_0 zero": (lambda o: WarmRestarts(o, 0), "Expected positive integer T_0, but got 0"),
    "T_0 negative": (lambda o: WarmRestarts(o, -3), "Expected positive integer T_0, but got -3"),
    "T_0 float": (lambda o: WarmRestarts(o, 1.5), "Expected positive integer T_0, but got 1.5"),
    "T_mult zero": (lambda o: WarmRestarts(o, 2, 0), "Expected integer T_mult >= 1, but got 0"),
    "T_mult float": (
        lambda o: WarmRestarts(o, 2, 1.5),
        "Expected integer T_mult >= 1, but got 1.5",
    ),
    "eta_min str": (
        lambda o: WarmRestarts(o, 2, eta_min="0"),
        "Expected float or int eta_min, but got 0 of type <class 'str'>",
    ),
    "eta_min negative": (
        lambda o: WarmRestarts(o, 2, eta_min=-0.1),
        "Expected eta_min >= 0, but got -0.1",
    ),
    "steps_per_epoch zero": (
        lambda o: WarmRestarts(o, 2, steps_per_epoch=0),
        "Expected positive integer steps_per_epoch, but got 0",
    ),
    "batch_size alone": (
        lambda o: WarmRestarts(o, 2, batch_size=128),
        "batch_size=128, dataset_size=None",
    ),
    "dataset_size alone": (
        lambda o: WarmRestarts(o, 2, dataset_size=50_000),
        "batch_size=None, dataset_size=50000",
    ),
    "batch_size zero": (
        lambda o: WarmRestarts(o, 2, batch_size=0, dataset_size=50_000),
        "Expected positive batch_size, but got 0",
    ),
    "no length": (
        lambda o: OneCycle(o, 1.0, epochs=3),
        "You must define either total_steps OR (epochs AND steps_per_epoch)",
    ),
    "total_steps zero": (
        lambda o: OneCycle(o, 1.0, total_steps=0),
        "Expected positive integer total_steps, but got 0",
    ),
    "total_steps float": (
        lambda o: OneCycle(o, 1.0, total_steps=10.0),
        "Expected positive integer total_steps, but got 10.0",
    ),
    "epochs zero": (
        lambda o: OneCycle(o, 1.0, epochs=0, steps_per_epoch=5),
        "Expected positive integer epochs, but got 0",
    ),
    "steps_per_epoch negative": (
        lambda o: OneCycle(o, 1.0, epochs=2, steps_per_epoch=-1),
        "Expected positive integer steps_per_epoch, but got -1",
    ),
    "pct_start above 1": (
        lambda o: OneCycle(o, 1.0, total_steps=10, pct_start=1.5),
        "Expected float between 0 and 1 pct_start, but got 1.5",
    ),
    "pct_start int": (
        lambda o: OneCycle(o, 1.0, total_steps=10, pct_start=1),
        "Expected float between 0 and 1 pct_start, but got 1",
    ),
    "anneal_strategy": (
        lambda o: OneCycle(o, 1.0, total_steps=10, anneal_strategy="exp"),
        "anneal_strategy must be one of 'cos' or 'linear', instead got exp",
    ),
    "max_lr per group": (
        lambda o: OneCycle(o, [1.0, 2.0], total_steps=10),
        "max_lr must have the same length as optimizer.param_groups. "
        "max_lr has 2 values, param_groups has 1.",
    ),
    "max_momentum per group": (
        lambda o: OneCycle(o, 1.0, total_steps=10, max_momentum=[0.9, 0.95]),
        "max_momentum must have the same length as optimizer.param_groups. "
        "max_momentum has 2 values, param_groups has 1.",
    ),
    "div_factor zero": (
        lambda o: OneCycle(o, 1.0, total_steps=10, div_factor=0.0),
        "Expected positive div_factor, but got 0.0",
    ),
    "final_div_factor negative": (
        lambda o: OneCycle(o, 1.0, total_steps=10, final_div_factor=-1.0),
        "Expected positive final_div_factor, but got -1.0",
    ),
    "max_lr negative": (
        lambda o: OneCycle(o, -1.0, total_steps=10),
        "Invalid max_lr value: -1.0",
    ),
}
# the cases torch checks too, in the same words
SAME_IN_TORCH = {
    "T_0 zero": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 0),
    "T_0 float": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 1.5),
    "T_mult zero": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 2, 0),
    "eta_min str": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 2, eta_min="0"),
    "no length": lambda o: lr_scheduler.OneCycleLR(o, 1.0, epochs=3),
    "total_steps float": lambda o: lr_scheduler.OneCycleLR(o, 1.0, total_steps=10.0),
    "epochs zero": lambda o: lr_scheduler.OneCycleLR(o, 1.0, epochs=0, steps_per_epoch=5),
    "pct_start int": lambda o: lr_scheduler.OneCycleLR(o, 1.0, total_steps=10, pct_start=1),
    "anneal_strategy": lambda o: lr_scheduler.OneCycleLR(
        o, 1.0, total_steps=10, anneal_strategy="exp"
    ),
    "max_lr per group": lambda o: lr_scheduler.OneCycleLR(o, [1.0, 2.0], total_steps=10),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_raises_naming_the_value(case):
    make, message = BAD_INPUT[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        make(one_group())
    if case in SAME_IN_TORCH:
        with pytest.raises(ValueError, match=re.escape(message)):
            SAME_IN_TORCH[case](one_group())


def test_one_cycle_needs_momentum_to_cycle_and_an_optimizer():
    message = "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
    with pytest.raises(ValueError, match=re.escape(message)):
        OneCycle(adamkit.Adagrad(groups((0.1,))), 1.0, total_steps=10)
    with pytest.raises(TypeError, match="str is not an Optimizer"):
        OneCycle("sgd", 1.0, total_steps=10)


@pytest.mark.parametrize(
    "args, message",
    [
        ((-0.1, 128, 50_000, 100), "Invalid weight_decay_norm value: -0.1"),
        ((0.05, 0, 50_000, 100), "Expected positive batch_size, but got 0"),
        ((0.05, 128, -1, 100), "Expected positive dataset_size, but got -1"),
        ((0.05, 128, 50_000, 0), "Expected positive epochs, but got 0"),
    ],
)
def test_normalized_weight_decay_rejects_bad_values(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        normalized_weight_decay(*args)


# ---------------------------------------------------------------- use with optimizers


SCHEDULERS = {
    "warm_restarts": lambda o: WarmRestarts(o, 2, 2, steps_per_epoch=3),
    "one_cycle": lambda o: OneCycle(o, 0.5, total_steps=20),
}
OPTIMIZERS = {
    "adamkit.AdamW": adamkit.AdamW,
    "adamkit.SGD": adamkit_sgd,
    "torch.AdamW": torch.optim.AdamW,
}


@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
@pytest.mark.parametrize("scheduler_name", SCHEDULERS)
def test_no_step_order_warning_in_the_right_order(scheduler_name, optimizer_name):
    make = OPTIMIZERS[optimizer_name]
    optimizer = make(groups())
    scheduler = SCHEDULERS[scheduler_name](optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):
            for group in optimizer.param_groups:
                group["params"][0].grad = torch.ones(3, dtype=torch.float64)
            optimizer.step()
            scheduler.step()
    wrong_order = make(groups())
    scheduler = SCHEDULERS[scheduler_name](wrong_order)
    with pytest.warns(UserWarning, match=STEP_ORDER_WARNING):
        scheduler.step()
        wrong_order.step()


def save_and_load(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def make_adamwr(param):
    optimizer = adamkit.AdamW(
        [param], lr=0.01, weight_decay=0.05, weight_decay_mode="decoupled_schedule"
    )
    scheduler = WarmRestarts(optimizer, 2, 2, steps_per_epoch=3, batch_size=128, dataset_size=500)
    return optimizer, scheduler


def make_one_cycle(param):
    optimizer = adamkit.AdamW([param], lr=0.01, weight_decay=0.05)
    return optimizer, OneCycle(optimizer, 0.1, total_steps=40, three_phase=True)


def train(optimizer, scheduler, steps):
    """Per step: lr, weight decay and β1 in use, then one step on a fixed gradient."""
    seen = []
    param = optimizer.param_groups[0]["params"][0]
    for _ in range(steps):
        group = optimizer.param_groups[0]
        seen.append((group["lr"], group["weight_decay"], group["betas"][0]))
        param.grad = torch.cos(param.detach())
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("make", [make_adamwr, make_one_cycle], ids=["adamwr", "one_cycle"])
@pytest.mark.parametrize("resume_at", [4, 7], ids=["mid_period", "after_restart"])
def test_resume_from_state_dicts_equals_uninterrupted(make, resume_at):
    """Restart steps of make_adamwr: 6, 18, 42; resume_at=7 is one step past the first."""
    start = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
    uninterrupted = train(*make(start.clone().requires_grad_()), 30)

    optimizer, scheduler = make(start.clone().requires_grad_())
    first = train(optimizer, scheduler, resume_at)
    param = optimizer.param_groups[0]["params"][0].detach().clone()
    saved = save_and_load(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    )
    optimizer, scheduler = make(param.requires_grad_())  # fresh, as a new process would
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    assert first + train(optimizer, scheduler, 30 - resume_at) == uninterrupted


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.05), id="torch.Adam"),
        pytest.param(lambda p: torch.optim.SGD(p, lr=0.01, weight_decay=0.05), id="torch.SGD"),
        pytest.param(lambda p: adamkit.Adam(p, lr=0.01, weight_decay=0.05), id="adamkit.Adam"),
    ],
)
def test_normalized_weight_decay_refuses_l2_groups(make):
    """L2 decay is added to the gradient: no coefficient makes it η_t·λ_i (Proposition 2)."""
    optimizer = make([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match=r"param group 0 adds weight_decay=0\.05 .*\(L2\)"):
        WarmRestarts(optimizer, 2, batch_size=128, dataset_size=50_000)


def test_normalized_weight_decay_refuses_an_lr_scaled_group_with_lr_zero():
    optimizer = torch.optim.AdamW([torch.zeros(3, requires_grad=True)], lr=0.0, weight_decay=0.05)
    with pytest.raises(ValueError, match=r"param group 0 has initial_lr 0"):
        WarmRestarts(optimizer, 2, batch_size=128, dataset_size=50_000)


def test_normalized_weight_decay_with_a_tensor_lr_stays_a_float():
    lr = torch.tensor(0.01, dtype=torch.float64)
    optimizer = adamkit.AdamW([torch.zeros(3, requires_grad=True)], lr=lr, weight_decay=0.05)
    WarmRestarts(optimizer, 2, batch_size=128, dataset_size=50_000)
    decay = optimizer.param_groups[0]["weight_decay"]
    assert type(decay) is float
    assert decay == pytest.approx(0.05 * math.sqrt(128 / (50_000 * 2)) / 0.01, rel=1e-15)
