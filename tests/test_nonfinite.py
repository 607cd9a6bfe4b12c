"""Non-finite gradients (TESTING.md F1, F3): by default a NaN or Inf flows as in torch.optim
and into no other param; with ``skip_nonfinite=True`` such a step changes nothing at all."""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch

import adamkit
from test_contracts import assert_same

from harness import gradient_script, leaves, snapshot
from registry import OPTIM_DB, sweep_cases

BAD = (math.nan, math.inf, -math.inf)
STEPS = 12


def poisoned(script, steps, chooser):
    """A copy of ``script`` with one NaN, +Inf or -Inf in one entry of one gradient at each
    step of ``steps``."""
    script = [[g.clone() for g in grads] for grads in script]
    for t in steps:
        grads = [g for g in script[t] if g.numel()]
        grad = chooser.choice(grads).view(-1)
        grad[chooser.randrange(grad.numel())] = chooser.choice(BAD)
    return script


def feed(optimizer, params, grads):
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad.clone()
    optimizer.step()


def test_skipping_is_never_seeing_the_step():
    """100 runs over the registry's optimizers and configs, both backends: NaN and Inf
    injected at random steps. Each poisoned step leaves params and state bit for bit as they
    were, the step count included, and adds one to ``skipped_steps``; the whole run equals a
    run fed only the clean steps; the first skip warns, later ones do not."""
    cases = sweep_cases()
    chooser = random.Random(0)
    for run_index in range(100):
        info, config = cases[(run_index * 7) % len(cases)].values
        backend = "fused" if run_index % 10 == 0 else "eager"
        script = gradient_script(STEPS, torch.float32)
        bad_steps = set(chooser.sample(range(STEPS), chooser.randint(1, 4)))
        dirty = poisoned(script, bad_steps, chooser)
        params = leaves(torch.float32)
        optimizer = info.cls(params, backend=backend, skip_nonfinite=True, **config)
        clean_params = leaves(torch.float32)
        clean = info.cls(clean_params, backend=backend, **config)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for t in range(STEPS):
                before = snapshot(optimizer, params)
                feed(optimizer, params, dirty[t])
                if t in bad_steps:
                    assert_same(snapshot(optimizer, params), before)
                else:
                    feed(clean, clean_params, script[t])
        skips = [w for w in caught if "skipped a step" in str(w.message)]
        where = f"run {run_index}: {info.id(config)} {backend}"
        assert len(skips) == 1 and skips[0].category is RuntimeWarning, where
        assert optimizer.skipped_steps == len(bad_steps), where
        assert_same(snapshot(optimizer, params), snapshot(clean, clean_params))


def test_skipped_steps_survive_a_checkpoint():
    params = leaves(torch.float32)
    optimizer = adamkit.Adam(params, skip_nonfinite=True)
    script = poisoned(gradient_script(3, torch.float32), [0, 2], random.Random(1))
    with pytest.warns(RuntimeWarning):
        for grads in script:
            feed(optimizer, params, grads)
    saved = optimizer.state_dict()
    assert saved["skipped_steps"] == 2
    resumed = adamkit.Adam(params, skip_nonfinite=True)
    resumed.load_state_dict(saved)
    assert resumed.skipped_steps == 2


def test_skip_nonfinite_must_be_a_bool():
    with pytest.raises(TypeError, match=r"skip_nonfinite must be a bool, got 1"):
        adamkit.Adam(leaves(torch.float32), skip_nonfinite=1)


SHARED = [
    pytest.param(info, config, id=info.id(config))
    for info in OPTIM_DB
    for config in info.sweep
    if info.torch_kwargs(config) is not None
]


@pytest.mark.parametrize("bad", BAD, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("info, config", SHARED)
def test_default_nonfinite_is_torchs(info, config, bad):
    """Without the option, a NaN or Inf at step 5 gives torch.optim's params and state, NaN
    for NaN, in float64 (F1)."""
    script = gradient_script(10, torch.float64)
    script[4][0].view(-1)[1] = bad
    ours, theirs = leaves(torch.float64), leaves(torch.float64)
    optimizer = info.cls(ours, **config)
    reference = info.torch_cls(theirs, **info.torch_kwargs(config))
    for grads in script:
        feed(optimizer, ours, grads)
        feed(reference, theirs, grads)
        for mine, expected in zip(ours, theirs, strict=True):
            torch.testing.assert_close(mine, expected, equal_nan=True, rtol=1e-12, atol=1e-14)


def separable(info, config):
    """Whether the rule steps each param on its own: SWATS decides its switch over the
    group (or all groups), so a NaN anywhere reaches that decision by design."""
    return info.name != "SWATS" or config.get("granularity") == "tensor"


@pytest.mark.parametrize("backend", ["eager", "fused"])
@pytest.mark.parametrize("info, config", [c for c in sweep_cases() if separable(*c.values)])
def test_a_nonfinite_gradient_reaches_no_other_param(info, config, backend):
    """A NaN in param 0's gradient at step 3 leaves every other param and its state bit for
    bit as in the clean run: the fused backend's flat buffers do not spread it (F1)."""
    script = gradient_script(8, torch.float32)
    dirty = [[g.clone() for g in grads] for grads in script]
    dirty[2][0].view(-1)[0] = math.nan
    runs = []
    for grads_script in (script, dirty):
        params = leaves(torch.float32)
        optimizer = info.cls(params, backend=backend, **config)
        for grads in grads_script:
            feed(optimizer, params, grads)
        runs.append(snapshot(optimizer, params))
    assert_same(runs[1][1:], runs[0][1:])
    assert torch.isnan(runs[1][0]["param"]).any()


def test_skip_check_takes_empty_gradients():
    """An empty param's gradient has no infinity norm; it is left out of the check."""
    empty, full = torch.zeros(0, requires_grad=True), torch.ones(2, requires_grad=True)
    optimizer = adamkit.Adam([empty, full], skip_nonfinite=True)
    empty.grad, full.grad = torch.zeros(0), torch.tensor([1.0, math.nan])
    with pytest.warns(RuntimeWarning, match="skipped a step"):
        optimizer.step()
    empty.grad, full.grad = torch.zeros(0), torch.ones(2)
    optimizer.step()
    assert optimizer.skipped_steps == 1 and optimizer.state[full]["step"] == 1
