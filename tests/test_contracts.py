"""API contracts every optimizer keeps, for every configuration of the registry."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from harness import gradient_script, leaves, run, snapshot
from registry import IMPLEMENTATION_KEYS, OPTIM_DB, sweep_cases

RECORDS = [pytest.param(info, id=info.name) for info in OPTIM_DB]


def without_weight_decay(config):
    return {k: v for k, v in config.items() if k != "weight_decay"} | {"weight_decay": 0.0}


def divides_zero_by_zero(config):
    """Paper forms without ε (AMSGrad's Algorithm 2, Adamax's Algorithm 2) give 0/0 where
    every gradient so far was zero, as the papers do."""
    return config.get("eps") == 0.0 or config.get("eps_mode") == "none"


@pytest.mark.parametrize("info, config", sweep_cases())
def test_params_without_grad_are_untouched_and_get_no_state(info, config):
    """Even with weight decay: a param whose grad is None keeps its bits and gets no state."""
    trained, frozen = leaves(torch.float32)[:2]
    before = frozen.detach().clone()
    optimizer = info.cls([trained, frozen], **{**config, "weight_decay": 0.1})
    for _ in range(3):
        trained.grad = torch.ones_like(trained)
        optimizer.step()
    assert torch.equal(frozen, before)
    assert frozen not in optimizer.state and trained in optimizer.state
    if optimizer.rule.counts_steps(optimizer.param_groups[0]):
        assert optimizer.state[trained]["step"].item() == 3
    else:  # torch's SGD keeps no step count
        assert "step" not in optimizer.state[trained]


@pytest.mark.parametrize("info, config", sweep_cases())
def test_zero_gradient_without_weight_decay_leaves_params_unchanged(info, config):
    if divides_zero_by_zero(config):
        pytest.skip("the paper form divides 0 by 0")
    params = leaves(torch.float32)
    before = [p.detach().clone() for p in params]
    optimizer = info.cls(params, **without_weight_decay(config))
    for _ in range(5):
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p, b)


@pytest.mark.parametrize("info, config", sweep_cases())
def test_gradients_are_read_only(info, config):
    params = leaves(torch.float32)
    optimizer = info.cls(params, **config)
    for grads in gradient_script(3, torch.float32):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        for p, g in zip(params, grads, strict=True):
            assert torch.equal(p.grad, g)


@pytest.mark.parametrize("info, config", sweep_cases())
def test_complex_params_step_as_their_real_views(info, config):
    """A complex param and its view_as_real twin, fed the same gradients, stay bit-identical
    (PyTorch's test_complex); an optimizer without complex support refuses the param at
    construction (B4)."""
    if not info.cls.rule.supports_complex:
        cplx = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
        with pytest.raises(
            ValueError,
            match=rf"^{info.name} does not support complex parameters: parameter 1 of the group "
            r"is torch.complex64$",
        ):
            info.cls([torch.zeros(2, requires_grad=True), cplx], **config)
        return
    real = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0)).requires_grad_()
    cplx = torch.view_as_complex(real.detach().clone()).requires_grad_()
    ours_real = info.cls([real], **config)
    ours_cplx = info.cls([cplx], **config)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        grad = torch.randn(3, 4, 2, generator=generator)
        real.grad = grad.clone()
        cplx.grad = torch.view_as_complex(grad.clone())
        ours_real.step()
        ours_cplx.step()
        assert torch.equal(torch.view_as_real(cplx.detach()), real.detach())


@pytest.mark.parametrize("info, config", sweep_cases())
def test_tensor_lr_equals_float_lr(info, config):
    lr = float(config.get("lr", info.cls([torch.zeros(1, requires_grad=True)]).defaults["lr"]))
    results = []
    for value in (lr, torch.tensor(lr, dtype=torch.float64)):
        params = leaves(torch.float64)
        optimizer = info.cls(params, **{**config, "lr": value})
        run(optimizer, params, gradient_script(20, torch.float64))
        results.append(params)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("info", RECORDS)
def test_closure_contract(info):
    param = torch.ones(3, requires_grad=True)
    optimizer = info.cls([param])
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        optimizer.zero_grad()
        loss = (param**2).sum()
        loss.backward()
        return loss

    with torch.no_grad():
        loss = optimizer.step(closure)
    assert calls == [True]
    assert loss.item() == 3.0
    assert optimizer.step() is None
    assert not torch.equal(param, torch.ones(3))


@pytest.mark.parametrize("info", RECORDS)
def test_param_groups_equal_separate_optimizers(info):
    """Two groups with different hyperparameters == two optimizers, bit for bit (N8)."""
    first, second = leaves(torch.float64)[:2], leaves(torch.float64)[:2]
    script = [grads[:2] for grads in gradient_script(20, torch.float64)]
    both = info.cls(
        [{"params": [first[0]], "lr": 0.01}, {"params": [first[1]], "weight_decay": 0.1}]
    )
    alone = [info.cls([second[0]], lr=0.01), info.cls([second[1]], weight_decay=0.1)]
    for grads in script:
        for group_params in (first, second):
            for p, g in zip(group_params, grads, strict=True):
                p.grad = g.clone()
        both.step()
        for optimizer in alone:
            optimizer.step()
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("info", RECORDS)
def test_tiny_lr_group_stays_while_other_group_trains(info):
    """Without weight decay (SGDW's default decays by η_t·λ, whatever the lr)."""
    still, moving = leaves(torch.float32)[:2]
    before_still, before_moving = still.detach().clone(), moving.detach().clone()
    optimizer = info.cls(
        [{"params": [still], "lr": 1e-28}, {"params": [moving], "lr": 1e-2}], weight_decay=0.0
    )
    for _ in range(5):
        still.grad, moving.grad = torch.ones_like(still), torch.ones_like(moving)
        optimizer.step()
    assert torch.equal(still, before_still)
    assert not torch.equal(moving, before_moving)


@pytest.mark.parametrize("info, config", sweep_cases())
def test_state_dict_is_plain_and_loads_with_weights_only(info, config, tmp_path):
    """Only tensors and plain Python values, so torch.load(weights_only=True) reads it (S2)."""
    params = leaves(torch.float32)
    optimizer = info.cls(params, **config)
    run(optimizer, params, gradient_script(3, torch.float32))
    state_dict = optimizer.state_dict()

    def walk(value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        else:
            assert value is None or type(value) in (torch.Tensor, int, float, bool, str), value

    walk(state_dict)
    path = tmp_path / "optimizer.pt"
    torch.save(state_dict, path)
    assert_same(torch.load(path, weights_only=True), state_dict)


def assert_same(a, b):
    """Recursive equality; tensors compared bit for bit, with their dtypes."""
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("info, config", sweep_cases())
def test_resume_from_state_dict_is_bitwise(info, config, dtype):
    """10 steps, save, load into a fresh optimizer, 10 more steps in lock-step with the
    original: equal bit for bit, and loading did not mutate the saved dict (S1)."""
    params = leaves(dtype)
    script = gradient_script(20, dtype)
    optimizer = info.cls(params, **config)
    run(optimizer, params, script[:10])
    saved = optimizer.state_dict()
    pristine = copy.deepcopy(saved)
    clones = [p.detach().clone().requires_grad_() for p in params]
    resumed = info.cls(clones, **config)
    resumed.load_state_dict(saved)
    assert_same(saved, pristine)
    for grads in script[10:]:
        for group_params in (params, clones):
            for p, g in zip(group_params, grads, strict=True):
                p.grad = g.clone()
        optimizer.step()
        resumed.step()
        assert_same(snapshot(optimizer, params), snapshot(resumed, clones))


def test_sweeps_name_no_implementation():
    """Implementation flags are added by the harness, never by a sweep (torch's
    test_optim_infos_do_not_specify_global_cliquey_kwargs)."""
    for info in OPTIM_DB:
        for config in info.sweep:
            assert not set(config) & set(IMPLEMENTATION_KEYS), info.id(config)


@pytest.mark.parametrize("copy_optimizer", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))])
@pytest.mark.parametrize("info, config", sweep_cases())
def test_copied_optimizer_steps_like_the_original(info, config, copy_optimizer):
    params = leaves(torch.float32)
    script = gradient_script(10, torch.float32)
    optimizer = info.cls(params, **config)
    run(optimizer, params, script[:5])
    twin = copy_optimizer({"optimizer": optimizer, "params": params})
    assert twin["optimizer"].backend == optimizer.backend
    run(optimizer, params, script[5:])
    run(twin["optimizer"], twin["params"], script[5:])
    assert_same(snapshot(optimizer, params), snapshot(twin["optimizer"], twin["params"]))
