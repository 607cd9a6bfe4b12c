"""N1 and N2: every configuration against the float64 paper reference and against torch.optim."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import default_twin, gradient_script, leaves, multipliers, run, snapshot
from reference import nadam
from registry import OPTIM_DB, sweep_cases

OPTIM_DB_BY_NAME = {info.name: info for info in OPTIM_DB}

STEPS = 200


def reference_kwargs(config):
    """The reference's names: tensors as floats, torch's decoupled flag as its mode."""
    kwargs = {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in config.items()}
    if kwargs.pop("decoupled_weight_decay", False):
        kwargs["weight_decay_mode"] = "decoupled_lr"
    if kwargs.get("granularity") == "global":
        kwargs["granularity"] = "group"  # one group: SWATS' global switch is the group's
    return kwargs


@pytest.mark.parametrize("info, config", sweep_cases())
def test_matches_paper_reference(info, config, float64_default):
    """Params and every state tensor equal the independent float64 transcription of the
    paper, step by step for 200 steps on random gradients (rtol 1e-10)."""
    params = leaves(torch.float64)
    initial = [p.detach().numpy().copy() for p in params]
    script = gradient_script(STEPS, torch.float64)
    etas = multipliers(STEPS)
    optimizer = info.cls(params, **config)
    history = run(optimizer, params, script, etas, lambda t: snapshot(optimizer, params))
    kwargs = {"lr_multipliers": etas, **reference_kwargs(config)}
    if info.group_reference:
        grads = [[g.numpy() for g in step] for step in script]
        records = info.reference(initial, grads, **kwargs)
        per_param = [[step[index] for step in records] for index in range(len(params))]
    else:
        per_param = [
            info.reference(theta0, [g[index].numpy() for g in script], **kwargs)
            for index, theta0 in enumerate(initial)
        ]
    for index, expected in enumerate(per_param):
        for t, (ours, ref) in enumerate(zip(history, expected, strict=True), start=1):
            state = ours[index]
            if "step" in state or info.name not in ("SGD", "SGDW"):
                assert state["step"].item() == ref["step"] == t
            else:  # torch's SGD keeps no step count, and SGD's momentum forms read none
                assert not optimizer.rule.counts_steps(optimizer.param_groups[0])
            for name, value in ref.items():
                if name == "step":
                    continue
                np.testing.assert_allclose(
                    np.asarray(state[name]),
                    value,
                    rtol=1e-10,
                    atol=0,
                    err_msg=f"param {index}, {name}, step {t}",
                )


TORCH_CASES = [
    pytest.param(info, config, id=info.id(config))
    for info in OPTIM_DB
    for config in info.sweep
    if info.torch_kwargs(config) is not None
]


@pytest.mark.parametrize("backend", ["eager", None], ids=["eager", "default"])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("info, config", TORCH_CASES)
def test_matches_torch(info, config, dtype, rtol, backend):
    """Params and the mapped state equal torch.optim's, step by step for 200 steps: on the
    eager backend, those of torch's default (its for-loop on the CPU); with no backend
    given (``"auto"``), those of torch's fused kernel where torch has one for the options
    (torch's ``fused=True`` constructs and steps), of its default elsewhere."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        script = gradient_script(STEPS, dtype)
        etas = multipliers(STEPS)
        ours, theirs = leaves(dtype), leaves(dtype)
        kwargs = info.torch_kwargs(config)
        flags = {} if backend else default_twin(info.torch_cls, kwargs)
        ours_optimizer = info.cls(ours, **config, **({"backend": backend} if backend else {}))
        torch_optimizer = info.torch_cls(theirs, **kwargs, **flags)
        ours_history = run(
            ours_optimizer, ours, script, etas, lambda t: snapshot(ours_optimizer, ours)
        )
        torch_history = run(
            torch_optimizer, theirs, script, etas, lambda t: snapshot(torch_optimizer, theirs)
        )
    finally:
        torch.set_default_dtype(previous)
    for t, (mine, reference) in enumerate(zip(ours_history, torch_history, strict=True), start=1):
        for index, (state, expected) in enumerate(zip(mine, reference, strict=True)):
            assert set(expected) <= set(state), (
                f"state names differ: {set(expected)} vs {set(state)}"
            )
            for name, value in expected.items():
                if name == "step" and flags:  # torch's fused kernels count in float32
                    value = value.to(state[name].dtype)
                torch.testing.assert_close(
                    state[name], value, rtol=rtol, atol=0, msg=f"param {index}, {name}, step {t}"
                )


def test_nadam_constant_schedule_is_float64_under_a_float32_default():
    """optax's NAdam (``mu_schedule="constant"``) corrects by 1 − β1^t computed in float64,
    not by torch's running product, which torch's default dtype keeps in float32: float64
    params follow the float64 reference to 1e-10 under the float32 default too (the product
    in float32 was 7e-8 off)."""
    assert torch.get_default_dtype() == torch.float32
    params = leaves(torch.float64)
    initial = [p.detach().numpy().copy() for p in params]
    script = gradient_script(STEPS, torch.float64)
    etas = multipliers(STEPS)
    config = {"lr": 0.01, "betas": (0.8, 0.95), "mu_schedule": "constant"}
    optimizer = OPTIM_DB_BY_NAME["NAdam"].cls(params, **config)
    history = run(optimizer, params, script, etas, lambda t: snapshot(optimizer, params))
    for index, theta0 in enumerate(initial):
        expected = nadam(theta0, [g[index].numpy() for g in script], lr_multipliers=etas, **config)
        for ours, ref in zip(history, expected, strict=True):
            for name in ("param", "exp_avg", "exp_avg_sq"):
                np.testing.assert_allclose(ours[index][name], ref[name], rtol=1e-10, atol=0)
