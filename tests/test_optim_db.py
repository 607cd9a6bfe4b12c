"""torch's own optimizer test inputs (``torch.testing._internal.common_optimizers.optim_db``,
shipped in the torch wheel) run through adamkit (issue 17): every CPU configuration of each
optimizer adamkit shares with torch, in each of torch's implementations (for-loop, foreach,
differentiable, fused), steps as torch's does; every bad input torch tests raises as torch's
does."""

from __future__ import annotations

import pytest
import torch

import adamkit

common_optimizers = pytest.importorskip("torch.testing._internal.common_optimizers")
OptimizerErrorEnum = common_optimizers.OptimizerErrorEnum

NAMES = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam")
INFOS = {info.optim_cls.__name__: info for info in common_optimizers.optim_db}
SHAPES = [(3, 4), (5,), (), (2, 3, 2)]
STEPS = 10
# ‖fused − torch's fused‖ / ‖torch's fused‖ per tensor, float64 (docs/performance.md)
FUSED_TOLERANCE = 1e-12


def implementations(name):
    """torch's implementations of ``name`` on the CPU, as the flags that pick them."""
    info = INFOS[name]
    flags = [{}, {"foreach": False}]
    if "foreach" in info.supported_impls:
        flags.append({"foreach": True})
    if "differentiable" in info.supported_impls:
        flags.append({"differentiable": True})
    if "fused" in info.supported_impls and "cpu" in info.supports_fused_on:
        flags.append({"fused": True})
    return flags


def configurations():
    for name in NAMES:
        inputs = INFOS[name].optim_inputs_func(device="cpu", dtype=torch.float64)
        for optim_input in inputs:
            for flags in implementations(name):
                kwargs = {**optim_input.kwargs, **flags}
                yield pytest.param(name, kwargs, id=f"{name}-{optim_input.desc}-{flags}")


def run(cls, kwargs):
    """10 steps of ``cls(params, **kwargs)`` on float64 params of several shapes: the
    params and the state after each step, or the exception the construction or a step
    raised."""
    generator = torch.Generator().manual_seed(0)
    leaves = [torch.randn(shape, dtype=torch.float64, generator=generator) for shape in SHAPES]
    if kwargs.get("differentiable"):  # a differentiable step writes non-leaf params
        params = [leaf.requires_grad_().clone() for leaf in leaves]
    else:
        params = [torch.nn.Parameter(leaf) for leaf in leaves]
    history = []
    try:
        optimizer = cls(params, **kwargs)
        for _ in range(STEPS):
            for param in params:
                param.grad = torch.randn(param.shape, dtype=torch.float64, generator=generator)
            optimizer.step()
            history.append(
                [
                    {"param": p.detach().clone()}
                    | {k: v.detach().clone() for k, v in optimizer.state[p].items()}
                    for p in params
                ]
            )
    except Exception as error:
        return error
    return history


def assert_close(ours, theirs, tolerance):
    """Params and state, step by step: the same keys and dtypes, and each tensor equal
    (``tolerance`` None) or within ``tolerance`` of torch's, relative to its norm."""
    for step, (mine, torchs) in enumerate(zip(ours, theirs, strict=True), start=1):
        for index, (a, b) in enumerate(zip(mine, torchs, strict=True)):
            assert sorted(a) == sorted(b), (step, index)
            for key in b:
                where = f"step {step}, param {index}, {key}"
                assert a[key].dtype == b[key].dtype, where
                if tolerance is None or key == "step":
                    assert torch.equal(a[key], b[key]), where
                else:
                    scale = max(b[key].norm().item(), 1e-300)
                    assert (a[key] - b[key]).norm().item() <= tolerance * scale, where


@pytest.mark.parametrize("name, kwargs", list(configurations()))
def test_steps_as_torch_does(name, kwargs):
    """Params and state after each of 10 steps, with the same state keys, or the same
    exception type. Where torch's flags ask for its unfused paths (``foreach`` given,
    ``differentiable=True``), adamkit steps on the eager backend, which gives bitwise the
    numbers of torch's for-loop implementation of the same flags (``differentiable=True``:
    torch's differentiable step, whose Adam, AdamW and NAdam compute their step sizes from
    Tensors, float32 under the default dtype), and torch's own implementation of them
    within the float64 tolerance (torch's foreach NAdam computes sqrt(v)/sqrt(c) for
    sqrt(v/c), ulps off its for-loop; adamkit's ``foreach`` changes no number). With no
    flag (``backend="auto"``): bitwise the numbers of torch's fused kernel where torch has
    one for the options, of its for-loop elsewhere. ``fused=True``: within the tolerance
    of torch's fused kernel."""
    theirs = run(getattr(torch.optim, name), kwargs)
    ours = run(getattr(adamkit, name), kwargs)
    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs), (theirs, ours)
        return
    assert not isinstance(ours, Exception), ours
    plain = {k: v for k, v in kwargs.items() if k != "foreach"}
    if not {"foreach", "differentiable", "fused"} & set(kwargs):
        fused = run(getattr(torch.optim, name), {**plain, "fused": True})
        twin = run(getattr(torch.optim, name), {**plain, "foreach": False})
        assert_close(ours, twin if isinstance(fused, Exception) else fused, None)
    elif not kwargs.get("fused"):
        assert_close(ours, run(getattr(torch.optim, name), {**plain, "foreach": False}), None)
    assert_close(ours, theirs, FUSED_TOLERANCE)


def error_inputs():
    for name in NAMES:
        inputs = INFOS[name].optim_error_inputs_func(device="cpu", dtype=torch.float64)
        for index, error_input in enumerate(inputs):
            yield pytest.param(name, error_input, id=f"{name}-{index}")


@pytest.mark.parametrize("module", [torch.optim, adamkit], ids=["torch", "adamkit"])
@pytest.mark.parametrize("name, error_input", list(error_inputs()))
def test_bad_input_raises_as_torch_does(name, error_input, module):
    """torch's ``optim_error_inputs_func``, as torch's own test_errors runs them: the same
    exception type (or warning), its message matching torch's regex, at construction or at
    the step. Run on torch's optimizer too, which shows the harness is torch's."""
    optim_input = error_input.optimizer_error_input
    cls = getattr(module, name)
    if module is adamkit and "duplicate parameters" in error_input.error_regex:
        # torch warns and steps such a param twice (it plans to refuse); adamkit refuses
        with pytest.raises(ValueError, match="appears in it twice"):
            cls(optim_input.params, **optim_input.kwargs)
        return
    if issubclass(error_input.error_type, Warning):
        expect = pytest.warns(error_input.error_type, match=error_input.error_regex)
    else:
        expect = pytest.raises(error_input.error_type, match=error_input.error_regex)
    if error_input.error_on == OptimizerErrorEnum.CONSTRUCTION_ERROR:
        with expect:
            cls(optim_input.params, **optim_input.kwargs)
    else:
        optimizer = cls(optim_input.params, **optim_input.kwargs)
        with expect:
            optimizer.step()


def train(optimizer, params, generator, steps):
    for _ in range(steps):
        for param in params:
            param.grad = torch.randn(param.shape, dtype=torch.float64, generator=generator)
        optimizer.step()


@pytest.mark.parametrize("name, kwargs", list(configurations()))
def test_checkpoints_cross_between_torch_and_adamkit(name, kwargs):
    """A checkpoint of 3 steps moves from torch's optimizer to adamkit's and back: 3 more
    steps then give what a checkpoint of the loading library's own gives, and adamkit's own
    resume gives the run never interrupted. (torch's own resume of NAdam is not exact: its
    load casts ``mu_product`` to the param's dtype, 2.5e-12 off after 3 more steps.)"""
    if kwargs.get("differentiable"):
        pytest.skip("a differentiable run's state carries autograd history")
    libraries = (torch.optim, adamkit)
    results = {}
    for first, second in [(a, b) for a in libraries for b in libraries] + [(adamkit, None)]:
        generator = torch.Generator().manual_seed(0)
        params = [
            torch.nn.Parameter(torch.randn(s, dtype=torch.float64, generator=generator))
            for s in SHAPES
        ]
        try:
            optimizer = getattr(first, name)(params, **kwargs)
        except Exception as error:
            pytest.skip(f"{type(error).__name__}: {error}")
        train(optimizer, params, generator, 3)
        if second is not None:
            saved = optimizer.state_dict()
            optimizer = getattr(second, name)(params, **kwargs)
            optimizer.load_state_dict(saved)
        train(optimizer, params, generator, 3)
        results[first, second] = [p.detach().clone() for p in params]
    tolerance = FUSED_TOLERANCE if kwargs.get("fused") else 0.0
    pairs = [((a, b), (b, b)) for a in libraries for b in libraries if a is not b]
    for key, expected in [*pairs, ((adamkit, adamkit), (adamkit, None))]:
        for a, b in zip(results[key], results[expected], strict=True):
            assert (a - b).norm() <= tolerance * b.norm(), (key, expected)
