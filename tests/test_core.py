"""The optimizer core's contracts that concern one mechanism rather than every algorithm."""

from __future__ import annotations

import copy

import pytest
import torch

import adamkit

from harness import gradient_script, leaves, run, snapshot
from registry import OPTIM_DB


def lockstep_with_torch(ours, theirs, ours_params, torch_params, script, between=None):
    for t, grads in enumerate(script, start=1):
        if between is not None:
            between(t, ours)
            between(t, theirs)
        for params in (ours_params, torch_params):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
        ours.step()
        theirs.step()
        for a, b in zip(ours_params, torch_params, strict=True):
            assert torch.equal(a, b), t


@pytest.mark.parametrize("flags", [{"foreach": False}, {}, {"fused": True}])
@pytest.mark.parametrize("dampening", [0.0, 0.3])
def test_sgd_momentum_turned_on_mid_training_matches_torch(dampening, flags):
    """torch starts the buffer at the gradient of the step that creates it: bitwise as
    torch's for-loop (eager), and as its fused kernel (the default, and ``fused=True``)."""
    ours_params, torch_params = leaves(torch.float32), leaves(torch.float32)
    ours = adamkit.SGD(ours_params, lr=0.1, **flags)
    theirs = torch.optim.SGD(torch_params, lr=0.1, **(flags or {"fused": True}))

    def momentum_on_at_step_4(t, optimizer):
        if t == 4:
            optimizer.param_groups[0].update(momentum=0.9, dampening=dampening)

    lockstep_with_torch(
        ours,
        theirs,
        ours_params,
        torch_params,
        gradient_script(10, torch.float32),
        momentum_on_at_step_4,
    )


@pytest.mark.parametrize("name", ["Adam", "NAdam", "RMSprop", "Adagrad", "Adamax"])
def test_state_dict_with_python_number_step_loads(name):
    """torch < 1.12 saved ``step`` (and NAdam's ``mu_product``) as Python numbers."""
    params = leaves(torch.float32)
    script = gradient_script(10, torch.float32)
    optimizer = getattr(adamkit, name)(params)
    run(optimizer, params, script[:5])
    legacy = copy.deepcopy(optimizer.state_dict())  # its per-param dicts are the live ones
    for state in legacy["state"].values():
        for key in ("step", "mu_product"):
            if key in state:
                state[key] = state[key].item()
    clones = [p.detach().clone().requires_grad_() for p in params]
    resumed = getattr(adamkit, name)(clones)
    resumed.load_state_dict(legacy)
    run(optimizer, params, script[5:])
    run(resumed, clones, script[5:])
    for a, b in zip(params, clones, strict=True):
        assert torch.equal(a, b)
    assert all(isinstance(s["step"], torch.Tensor) for s in resumed.state.values())


@pytest.mark.parametrize("name", ["Adam", "NAdam"])
def test_decoupled_flag_in_a_group_matches_torch(name):
    ours_params, torch_params = leaves(torch.float32), leaves(torch.float32)

    def groups(params):
        return [
            {"params": params[:1]},
            {"params": params[1:], "decoupled_weight_decay": True, "weight_decay": 0.1},
        ]

    ours = getattr(adamkit, name)(groups(ours_params), weight_decay=0.1)
    theirs = getattr(torch.optim, name)(groups(torch_params), weight_decay=0.1, foreach=False)
    assert ours.param_groups[1]["weight_decay_mode"] == "decoupled_lr"
    lockstep_with_torch(ours, theirs, ours_params, torch_params, gradient_script(10, torch.float32))


def test_group_weight_decay_mode_sets_torchs_flag():
    """A group named only by ``weight_decay_mode`` carries torch's flag too, so torch.optim
    loading the state dict decays the same way."""
    ours_params, torch_params = leaves(torch.float32), leaves(torch.float32)
    ours = adamkit.Adam(
        [{"params": ours_params, "weight_decay_mode": "decoupled_lr"}], weight_decay=0.1
    )
    assert ours.param_groups[0]["decoupled_weight_decay"] is True
    script = gradient_script(10, torch.float32)
    run(ours, ours_params, script[:5])
    theirs = torch.optim.Adam(torch_params, foreach=False)
    with torch.no_grad():
        for a, b in zip(torch_params, ours_params, strict=True):
            a.copy_(b)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))  # torch would share our steps
    lockstep_with_torch(ours, theirs, ours_params, torch_params, script[5:])


def test_loaded_state_dict_is_validated():
    params = leaves(torch.float32)
    optimizer = adamkit.SGD(params, momentum=0.9)
    state_dict = optimizer.state_dict()
    state_dict["param_groups"][0]["momentum_form"] = "nesterov"
    with pytest.raises(ValueError, match="Invalid momentum_form: 'nesterov'"):
        adamkit.SGD(params, momentum=0.9).load_state_dict(state_dict)


def test_nadam_mu_product_keeps_its_dtype_on_load():
    params = leaves(torch.bfloat16)
    optimizer = adamkit.NAdam(params, betas=(0.999, 0.999), mu_schedule="constant")
    run(optimizer, params, gradient_script(5, torch.bfloat16))
    resumed = adamkit.NAdam(
        [p.detach().clone().requires_grad_() for p in params], mu_schedule="constant"
    )
    resumed.load_state_dict(optimizer.state_dict())
    for state in resumed.state.values():
        assert state["mu_product"].dtype == torch.float32
        assert state["exp_avg"].dtype == torch.bfloat16


def test_decoupled_schedule_follows_one_cycle_peak():
    """η_t = lr / max_lr under OneCycleLR (whose initial_lr is max_lr/25): the decay never
    exceeds λ per step, and θ never changes sign from decay alone."""
    param = torch.ones(3, requires_grad=True)
    optimizer = adamkit.AdamW([param], weight_decay=0.05, weight_decay_mode="decoupled_schedule")
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.01, total_steps=100)
    expected = torch.ones(3)
    for _ in range(100):
        eta = optimizer.param_groups[0]["lr"] / 0.01
        assert 0 <= eta <= 1 + 1e-12
        param.grad = torch.zeros(3)
        optimizer.step()
        scheduler.step()
        expected = expected * (1 - eta * 0.05)
    torch.testing.assert_close(param.detach(), expected)


def test_decoupled_schedule_with_zero_initial_lr():
    param = torch.ones(3, requires_grad=True)
    optimizer = adamkit.SGD(
        [param], lr=0.0, weight_decay=0.1, weight_decay_mode="decoupled_schedule"
    )
    optimizer.param_groups[0]["initial_lr"] = 0.0
    param.grad = torch.zeros(3)
    optimizer.step()
    torch.testing.assert_close(param.detach(), torch.full((3,), 0.9))


@pytest.mark.parametrize("cls", [adamkit.SGDW, adamkit.AdamW, adamkit.Adam])
def test_a_step_at_lr_zero_with_zero_gradients_changes_no_param(cls):
    """Without a scheduler, η_t = 1, except at lr 0: torch.distributed.checkpoint's
    set_optimizer_state_dict creates a fresh optimizer's state with such a step and relies
    on it leaving the (already loaded) params alone."""
    param = torch.ones(3, requires_grad=True)
    optimizer = cls([param], lr=0.0, weight_decay=0.1, weight_decay_mode="decoupled_schedule")
    param.grad = torch.zeros(3)
    optimizer.step()
    assert torch.equal(param.detach(), torch.ones(3))
    optimizer.param_groups[0]["lr"] = 0.5  # changed by hand: η_t = 1, decay by λ
    optimizer.step()
    assert torch.equal(param.detach(), torch.full((3,), 0.9))


def test_adagrad_tensor_initial_accumulator_value():
    params = leaves(torch.float32)
    optimizer = adamkit.Adagrad(params, initial_accumulator_value=torch.tensor([0.1]))
    run(optimizer, params, gradient_script(2, torch.float32))
    twin_params = leaves(torch.float32)
    twin = adamkit.Adagrad(twin_params, initial_accumulator_value=0.1)
    run(twin, twin_params, gradient_script(2, torch.float32))
    assert all(
        torch.equal(a["sum"], b["sum"])
        for a, b in zip(snapshot(optimizer, params), snapshot(twin, twin_params), strict=True)
    )


@pytest.mark.parametrize("info", OPTIM_DB, ids=lambda info: info.cls.__name__)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_steps_in_float32_rounded_once(info, dtype):
    """A bfloat16/float16 param steps as its float32 upcast would, params and state rounded
    to the low precision once per step (not after every op): bit for bit, 6 steps."""
    config = info.sweep[0]
    low = leaves(dtype)
    high = [p.detach().float().requires_grad_() for p in low]
    ours = info.cls(low, **config)
    twin = info.cls(high, **config)
    script = gradient_script(6, dtype, shapes=[tuple(p.shape) for p in low])
    for grads in script:
        for param, shadow, grad in zip(low, high, grads, strict=True):
            param.grad, shadow.grad = grad.clone(), grad.float()
        ours.step()
        twin.step()
        with torch.no_grad():
            for param, shadow in zip(low, high, strict=True):
                pairs = [(param, shadow)] + [
                    (value, twin.state[shadow][name])
                    for name, value in ours.state[param].items()
                    if isinstance(value, torch.Tensor) and value.dtype == dtype
                ]
                for value, upcast in pairs:  # ours, and the float32 twin's rounded once
                    assert torch.equal(value, upcast.to(dtype))
                    upcast.copy_(value)


MULTI_TENSOR_CASES = [
    pytest.param(info, config, id=info.id(config))
    for info in OPTIM_DB
    if info.cls.rule.multi_tensor
    for config in info.sweep
]


@pytest.mark.parametrize("large_only", [False, True], ids=["mixed", "large"])
@pytest.mark.parametrize("info, config", MULTI_TENSOR_CASES)
def test_many_params_in_one_call_step_as_each_alone(info, config, large_only, monkeypatch):
    """The eager backend steps plain params of a group in multi-tensor calls (chunks of
    small params, a large one alone): bit for bit the numbers of the same rule stepping
    each param on its own, for every configuration of the sweep, with small, large,
    complex, empty and non-contiguous params, and params without a gradient; and a group
    of large params only (each steps alone, in turn). A Tensor hyperparameter steps each
    param alone."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (300,), (), (0,), (3, 1, 2), (40000,), (50, 50)] * 3
    if large_only:
        shapes = [(40000,), (200, 200), (33000,)] * 2
    base = [torch.randn(shape, generator=generator) for shape in shapes]
    if not large_only:
        base.append(torch.randn(6, 4, generator=generator).t())  # non-contiguous
    if info.cls.rule.supports_complex and not large_only:
        base.append(torch.randn(9, dtype=torch.complex64, generator=generator))
    calls = []

    def history(batched: bool) -> list[list[torch.Tensor]]:
        monkeypatch.setattr(type(info.cls.rule), "multi_tensor", batched)
        params = [p.clone().requires_grad_() for p in base]
        optimizer = info.cls(params, backend="eager", **config)
        grads = torch.Generator().manual_seed(1)
        for step in range(4):
            for index, p in enumerate(params):
                skip = (index + step) % 5 == 0
                p.grad = None if skip else torch.randn(p.shape, generator=grads, dtype=p.dtype)
            optimizer.step()
        state = [v for p in params for v in optimizer.state[p].values()]
        return [p.detach().clone() for p in params] + [v for v in state if torch.is_tensor(v)]

    expected = history(False)
    original = adamkit.backends.eager.TensorList.__init__

    def counted(self, tensors):
        calls.append(len(tensors))
        original(self, tensors)

    monkeypatch.setattr(adamkit.backends.eager.TensorList, "__init__", counted)
    value = history(True)
    if not large_only and not any(torch.is_tensor(v) for v in config.values()):
        assert calls  # batched (a Tensor number the update reads steps each param alone)
    assert len(value) == len(expected)
    for ours, theirs in zip(value, expected, strict=True):
        assert torch.equal(ours, theirs)
