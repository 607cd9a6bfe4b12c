"""torch.optim's constructor, argument for argument: the signature in torch's order, the
``foreach``/``capturable``/``differentiable``/``fused`` flags with torch's meaning and torch's
errors, and steps that autograd differentiates through under ``differentiable=True``
(issue 17)."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.autograd import gradcheck

import adamkit

NAMES = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam"]
# per optimizer: a configuration whose every state tensor the step differentiates, and the
# names of those tensors
DIFFERENTIABLE = {
    "SGD": ({"lr": 0.1, "momentum": 0.9, "nesterov": True}, ["momentum_buffer"]),
    "Adagrad": ({"lr": 0.1, "weight_decay": 0.1}, ["sum"]),
    "RMSprop": ({"momentum": 0.9, "centered": True}, ["square_avg", "momentum_buffer", "grad_avg"]),
    "Adam": ({"lr": 0.1, "amsgrad": True}, ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    "AdamW": ({"lr": 0.1}, ["exp_avg", "exp_avg_sq"]),
    "Adamax": ({"weight_decay": 0.1}, ["exp_avg", "exp_inf"]),
    "NAdam": ({"decoupled_weight_decay": True, "weight_decay": 0.1}, ["exp_avg", "exp_avg_sq"]),
}


def params():
    return [torch.nn.Parameter(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))]


@pytest.mark.parametrize("name", NAMES)
def test_the_signature_starts_with_torchs(name):
    """Every torch parameter, in torch's order and of torch's kind (positional or
    keyword-only), with torch's defaults; adamkit's own options come after, keyword-only."""
    theirs = list(inspect.signature(getattr(torch.optim, name)).parameters.values())
    ours = list(inspect.signature(getattr(adamkit, name)).parameters.values())
    assert [(p.name, p.kind) for p in ours[: len(theirs)]] == [(p.name, p.kind) for p in theirs]
    for mine, torchs in zip(ours, theirs, strict=False):
        if mine.name != "decoupled_weight_decay":  # None: weight_decay_mode decides
            assert mine.default == torchs.default, mine.name
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in ours[len(theirs) :])


@pytest.mark.parametrize("name", NAMES)
def test_groups_hold_torchs_keys_with_torchs_values(name):
    theirs = getattr(torch.optim, name)(params(), foreach=False).state_dict()["param_groups"]
    ours = getattr(adamkit, name)(params(), foreach=False).state_dict()["param_groups"]
    for key, value in theirs[0].items():
        assert ours[0][key] == value, key


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("flags", [{"foreach": True}, {"foreach": False}, {"capturable": True}])
def test_foreach_and_capturable_change_no_number(name, flags):
    """On the backend they select (``foreach``: the eager one), the numbers it gives
    without them."""
    if "capturable" in flags and name in ("SGD", "Adagrad"):
        pytest.skip(f"torch's {name} takes no capturable")
    sides = []
    backend = getattr(adamkit, name)(params(), **flags).backend
    for kwargs in ({"backend": backend}, flags):
        model = params()
        optimizer = getattr(adamkit, name)(model, **kwargs)
        for step in range(3):
            model[0].grad = torch.randn(3, 4, generator=torch.Generator().manual_seed(step))
            optimizer.step()
        sides.append(model[0].detach())
    assert torch.equal(*sides)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "Adam", "AdamW"])
def test_torchs_flags_select_the_backend(name):
    """``fused=True``: fused; torch's unfused paths asked for: eager (their numbers, bit
    for bit); none: auto (torch's fused kernel)."""
    assert getattr(adamkit, name)(params(), fused=True).backend == "fused"
    for flags in ({"fused": False}, {"foreach": False}, {"foreach": True}):
        assert getattr(adamkit, name)(params(), **flags).backend == "eager"
    assert getattr(adamkit, name)(params(), differentiable=True).backend == "eager"
    assert getattr(adamkit, name)(params()).backend == "auto"
    assert getattr(adamkit, name)(params(), foreach=False, backend="auto").backend == "auto"


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "Adam", "AdamW"])
@pytest.mark.parametrize(
    "flags", [{"fused": True, "foreach": True}, {"fused": True, "differentiable": True}]
)
def test_fused_refuses_what_torchs_refuses(name, flags):
    with pytest.raises(RuntimeError) as theirs:
        getattr(torch.optim, name)(params(), **flags)
    with pytest.raises(RuntimeError) as ours:
        getattr(adamkit, name)(params(), **flags)
    assert str(ours.value) == str(theirs.value)


def test_the_fused_backend_refuses_a_differentiable_step():
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        adamkit.Adam(params(), backend="fused", differentiable=True)


@pytest.mark.parametrize("name", ["RMSprop", "Adamax", "NAdam"])
def test_fused_is_refused_where_torch_has_none(name):
    with pytest.raises(TypeError, match="fused"):
        getattr(adamkit, name)(params(), fused=True)


def one_step(param, grad, state, cls, kwargs, *differentiated):
    """One differentiable step from ``state`` (torch's differentiable tests' form): returns
    the new param and the state tensors that require grad."""
    param = param.clone()
    param.grad = grad.clone()  # torch's SGD and Adam add a differentiated λθ to it in place
    optimizer = cls([param], differentiable=True, **kwargs)
    optimizer.state[param].update(
        {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    )
    optimizer.step()
    values = optimizer.state[param].values()
    return (param, *(v for v in values if isinstance(v, torch.Tensor) and v.requires_grad))


def differentiable_inputs(name):
    generator = torch.Generator().manual_seed(1)

    def tensor(scale=1.0):
        value = torch.rand(6, dtype=torch.float64, generator=generator) * scale
        return value.requires_grad_()

    kwargs, names = DIFFERENTIABLE[name]
    # the centered RMSprop's v − ḡ² must stay positive for the square root
    state = {n: tensor(0.1 if n == "grad_avg" else 1.0) for n in names}
    state["step"] = torch.tensor(10.0, dtype=torch.float64)
    if name == "NAdam":
        state["mu_product"] = torch.tensor(0.5, dtype=torch.float64)
    return tensor(), tensor(), state, kwargs


@pytest.mark.parametrize("name", NAMES)
def test_a_differentiable_step_passes_gradcheck(name):
    param, grad, state, kwargs = differentiable_inputs(name)
    differentiated = [v for v in state.values() if v.requires_grad]
    cls = getattr(adamkit, name)
    assert gradcheck(one_step, (param, grad, state, cls, kwargs, *differentiated))


@pytest.mark.parametrize("name", NAMES)
def test_a_differentiable_step_has_torchs_numbers_and_gradients(name):
    """The step's outputs, and the gradients of their sum with respect to the param, the
    gradient and the state, equal torch's (float64)."""
    results = []
    for cls in (getattr(torch.optim, name), getattr(adamkit, name)):
        param, grad, state, kwargs = differentiable_inputs(name)
        differentiated = [param, grad, *(v for v in state.values() if v.requires_grad)]
        outputs = one_step(param, grad, state, cls, kwargs)
        total = sum(output.sum() for output in outputs)
        gradients = torch.autograd.grad(total, differentiated)
        results.append([o.detach() for o in outputs] + list(gradients))
    for theirs, ours in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


# the hyperparameters torch's differentiable steps differentiate (torch's own tests:
# test_{sgd,adam,adamw}_differentiable_*), with a configuration that reads each
HYPERGRADIENTS = {
    "SGD": ({"momentum": 0.9, "nesterov": True}, ["lr", "weight_decay"]),
    "Adam": ({"amsgrad": True}, ["lr", "weight_decay", "beta1", "beta2"]),
    "AdamW": ({}, ["lr", "weight_decay", "beta1", "beta2"]),
}
HYPERPARAMETERS = {"lr": 0.1, "weight_decay": 0.05, "beta1": 0.8, "beta2": 0.9}


def hyper_step(param, grad, state, cls, kwargs, names, *values):
    """:func:`one_step` with the hyperparameters ``names`` given as the Tensors
    ``values`` (β1 and β2 as ``betas``)."""
    given = dict(zip(names, values, strict=True))
    if "beta1" in given:
        given["betas"] = (given.pop("beta1"), given.pop("beta2"))
    return one_step(param, grad, state, cls, {**kwargs, **given})


def hyper_inputs(name):
    param, grad, _, _ = differentiable_inputs(name)
    kwargs, names = HYPERGRADIENTS[name]
    # the state after some steps (a first step would start SGD's buffer from a detached
    # gradient, as torch's does, which numerical differentiation sees through)
    generator = torch.Generator().manual_seed(2)
    names_of_state = {
        "SGD": ["momentum_buffer"],
        "Adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
        "AdamW": ["exp_avg", "exp_avg_sq"],
    }[name]
    state = {
        n: torch.rand(6, dtype=torch.float64, generator=generator).requires_grad_()
        for n in names_of_state
    }
    state["step"] = torch.tensor(3.0, dtype=torch.float64)
    values = [
        torch.tensor(HYPERPARAMETERS[n], dtype=torch.float64, requires_grad=True) for n in names
    ]
    return param, grad, state, kwargs, names, values


@pytest.mark.parametrize("name", list(HYPERGRADIENTS))
def test_a_differentiable_step_differentiates_torchs_hyperparameters(name):
    """lr, weight decay (and Adam's betas) given as Tensors that require grad: gradcheck
    passes, and the step and every gradient equal torch's (float64)."""
    param, grad, state, kwargs, names, values = hyper_inputs(name)
    cls = getattr(adamkit, name)
    differentiated = [v for v in state.values() if v.requires_grad]
    args = (param, grad, state, cls, kwargs, names, *values)
    assert gradcheck(lambda *v: hyper_step(*args[:6], *v), (*values,))
    results = []
    for cls in (getattr(torch.optim, name), getattr(adamkit, name)):
        outputs = hyper_step(param, grad, state, cls, kwargs, names, *values)
        total = sum(output.sum() for output in outputs)
        inputs = [param, grad, *differentiated, *values]
        results.append([o.detach() for o in outputs] + list(torch.autograd.grad(total, inputs)))
    for theirs, ours in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def unrolled(cls, name, steps=3):
    """``steps`` differentiable steps from a leaf (the lr a differentiated Tensor where
    torch differentiates it), then the gradients of the param's sum: the param and the
    gradients, or the error autograd raised."""
    generator = torch.Generator().manual_seed(0)
    leaf = torch.randn(5, dtype=torch.float64, generator=generator, requires_grad=True)
    kwargs = {**DIFFERENTIABLE[name][0], "weight_decay": 0.1}
    inputs = [leaf]
    if name in HYPERGRADIENTS:
        kwargs["lr"] = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        inputs.append(kwargs["lr"])
    param = leaf.clone()
    optimizer = cls([param], differentiable=True, **kwargs)
    for _ in range(steps):
        param.grad = torch.randn(5, dtype=torch.float64, generator=generator)
        optimizer.step()
    try:
        return [param.detach(), *torch.autograd.grad(param.sum(), inputs)]
    except RuntimeError as error:
        return str(error)


@pytest.mark.parametrize("name", NAMES)
def test_unrolled_differentiable_steps_have_torchs_gradients(name):
    """Three steps, then backward through all of them (meta-learning's unrolled loop): the
    param and its gradients (and the lr's) equal torch's, or autograd refuses both alike
    (torch's RMSprop, Adam with L2 decay and Adamax change recorded state in place)."""
    theirs = unrolled(getattr(torch.optim, name), name)
    ours = unrolled(getattr(adamkit, name), name)
    if isinstance(theirs, str):
        assert ours == theirs
    else:
        assert not isinstance(ours, str), ours
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_a_hyperparameter_the_step_does_not_differentiate_is_refused(name):
    """Under ``differentiable=True`` a hyperparameter that requires grad and that the step
    does not differentiate raises (its gradient would silently be None); without the flag
    the step reads its value, as torch's does."""
    differentiated = HYPERGRADIENTS.get(name, ({}, []))[1]
    key = {"SGD": "momentum"}.get(name, "eps" if "lr" in differentiated else "lr")
    value = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    param, grad, state, kwargs = differentiable_inputs(name)
    with pytest.raises(ValueError, match=f"^{key} requires grad, but {name}'s"):
        one_step(param, grad, state, getattr(adamkit, name), {**kwargs, key: value})
    steps = []
    for module in (torch.optim, adamkit):
        model = params()
        model[0].grad = torch.ones(3, 4)
        getattr(module, name)(model, **{key: value}).step()
        steps.append(model[0].detach())
    assert torch.equal(*steps)


@pytest.mark.parametrize("name", NAMES)
def test_a_differentiable_step_of_a_leaf_raises_as_torchs(name):
    """Autograd refuses an in-place update of a leaf that requires grad: the same error."""
    errors = []
    for cls in (getattr(torch.optim, name), getattr(adamkit, name)):
        model = params()
        model[0].grad = torch.ones(3, 4)
        with pytest.raises(RuntimeError) as error:
            cls(model, differentiable=True).step()
        errors.append(str(error.value))
    assert errors[0] == errors[1]


# ---------------------------------------------------------------- load_state_dict hooks


def trained(name, make):
    model = params()
    optimizer = make(model)
    for step in range(2):
        model[0].grad = torch.randn(3, 4, generator=torch.Generator().manual_seed(step))
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("name", NAMES)
def test_load_hooks_see_what_torchs_see(name):
    """A pre-hook edits the dict, another returns a new one; a post-hook stores a bool in
    the state and records what it sees: the same on torch's optimizer and adamkit's."""
    seen = []
    for module in (torch.optim, adamkit):
        optimizer = trained(name, lambda p, module=module: getattr(module, name)(p))
        saved = optimizer.state_dict()
        log = []

        def edit(optimizer, state_dict, log=log):
            log.append(("pre1", state_dict["param_groups"][0]["lr"]))
            state_dict["param_groups"][0]["lr"] = 0.002

        def replace(optimizer, state_dict, log=log):
            log.append(("pre2", state_dict["param_groups"][0]["lr"]))
            return {**state_dict, "param_groups": [{**state_dict["param_groups"][0], "lr": 0.003}]}

        def post(optimizer, log=log):
            param = optimizer.param_groups[0]["params"][0]
            keys = sorted(optimizer.state[param])
            log.append(("post", optimizer.param_groups[0]["lr"], keys))
            optimizer.state["ran_load_state_dict_post_hook"] = True

        optimizer.register_load_state_dict_pre_hook(edit)
        optimizer.register_load_state_dict_pre_hook(replace)
        optimizer.register_load_state_dict_post_hook(post)
        optimizer.load_state_dict(saved)
        assert optimizer.state["ran_load_state_dict_post_hook"] is True
        log.append(("caller's dict after", saved["param_groups"][0]["lr"]))
        seen.append(log)
    assert seen[0] == seen[1]


def test_nadams_post_hook_sees_mu_product():
    optimizer = trained("NAdam", lambda p: adamkit.NAdam(p))
    seen = {}

    def post(optimizer):
        param = optimizer.param_groups[0]["params"][0]
        seen.update(optimizer.state[param])

    optimizer.register_load_state_dict_post_hook(post)
    expected = optimizer.state[optimizer.param_groups[0]["params"][0]]["mu_product"].clone()
    optimizer.load_state_dict(optimizer.state_dict())
    assert torch.equal(seen["mu_product"], expected)
    assert seen["mu_product"].dtype == expected.dtype
