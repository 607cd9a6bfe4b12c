"""ND-Adam: conv and linear vectors against the reference, the unit sphere, Adam outside the
vectors, the initialisation contract and vec_axes (TESTING.md N2, N7, A6, B1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import adamkit

from harness import gradient_script, make_params, multipliers, run, snapshot
from reference import ndadam as reference_ndadam

# a conv weight, a linear weight, a bias, a scalar
SHAPES = [(4, 3, 2, 2), (5, 3), (5,), ()]


def unit_leaves(dtype, shapes=SHAPES, vec_axes=None):
    params = [p.requires_grad_() for p in make_params(torch.float64, seed=3, shapes=shapes)]
    adamkit.normalize_vectors_(params, vec_axes)
    return [p.detach().to(dtype).requires_grad_() for p in params]


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"eps_mode": "paper", "lr": 0.05, "weight_decay": 0.1},
        {"betas": (0.5, 0.9), "maximize": True, "weight_decay": 0.1},
    ],
)
def test_conv_and_linear_vectors_match_the_reference(config, float64_default):
    """200 steps under a changing lr, float64: params and state equal the transcription of
    §18b (rtol 1e-10) for a conv filter bank, a linear weight, a bias and a scalar."""
    params = unit_leaves(torch.float64)
    initial = [p.detach().numpy().copy() for p in params]
    script = gradient_script(200, torch.float64, shapes=SHAPES)
    etas = multipliers(200)
    optimizer = adamkit.NDAdam(params, **config)
    history = run(optimizer, params, script, etas, lambda t: snapshot(optimizer, params))
    for index, theta0 in enumerate(initial):
        expected = reference_ndadam(
            theta0, [g[index].numpy() for g in script], lr_multipliers=etas, **config
        )
        for t, (ours, ref) in enumerate(zip(history, expected, strict=True), start=1):
            for name in ("param", "exp_avg", "exp_avg_sq"):
                np.testing.assert_allclose(
                    ours[index][name].numpy(),
                    ref[name],
                    rtol=1e-10,
                    atol=0,
                    err_msg=f"param {index}, {name}, step {t}",
                )


def test_explicit_vec_axes_per_group_match_the_reference(float64_default):
    """vec_axes set per group: (0, 2) on one param, () (plain Adam) on another."""
    (conv,) = unit_leaves(torch.float64, shapes=[(4, 3, 2, 2)], vec_axes=(0, 2))
    linear = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)).requires_grad_()
    initial = [conv.detach().numpy().copy(), linear.detach().numpy().copy()]
    optimizer = adamkit.NDAdam(
        [{"params": [conv], "vec_axes": (0, 2)}, {"params": [linear], "vec_axes": ()}], lr=0.01
    )
    script = gradient_script(100, torch.float64, shapes=[(4, 3, 2, 2), (5, 3)])
    run(optimizer, [conv, linear], script)
    for index, (param, axes) in enumerate([(conv, (0, 2)), (linear, ())]):
        expected = reference_ndadam(
            initial[index], [g[index].numpy() for g in script], lr=0.01, vec_axes=axes
        )[-1]
        np.testing.assert_allclose(param.detach().numpy(), expected["param"], rtol=1e-10, atol=0)
    assert optimizer.state[conv]["exp_avg_sq"].shape == (1, 3, 1, 2)
    assert optimizer.state[linear]["exp_avg_sq"].shape == (5, 3)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple),
    lr=st.sampled_from([1e-3, 0.1, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_vectors_stay_on_the_unit_sphere_in_float32(shape, lr, seed):
    """Every vector has norm 1 within 1e-6 after every step, and exp_avg_sq has the param's
    shape with 1 on the vector axes (A6)."""
    (param,) = unit_leaves(torch.float32, shapes=[shape])
    optimizer = adamkit.NDAdam([param], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(20):
        param.grad = torch.randn(shape, generator=generator) * 10.0 ** torch.randint(
            -3, 3, (), generator=generator
        )
        optimizer.step()
        norms = param.detach().flatten(1).norm(dim=1)
        assert (norms - 1).abs().max() <= 1e-6, norms
    assert optimizer.state[param]["exp_avg_sq"].shape == (shape[0],) + (1,) * (len(shape) - 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_params_outside_the_vector_rule_are_adam_bit_for_bit(weight_decay, dtype):
    """Biases and scalars step as adamkit.Adam with L2 weight decay in the same eps form (N7)."""
    ours, theirs = unit_leaves(dtype), unit_leaves(dtype)
    ndadam = adamkit.NDAdam(ours, lr=0.01, weight_decay=weight_decay)
    adam = adamkit.Adam(theirs[2:], lr=0.01, weight_decay=weight_decay, eps_mode="efficient")
    for grads in gradient_script(50, dtype, shapes=SHAPES):
        for p, g in zip(ours, grads, strict=True):
            p.grad = g.clone()
        for p, g in zip(theirs[2:], grads[2:], strict=True):
            p.grad = g.clone()
        ndadam.step()
        adam.step()
        for p, q in zip(ours[2:], theirs[2:], strict=True):
            assert torch.equal(p, q)
            assert torch.equal(ndadam.state[p]["exp_avg_sq"], adam.state[q]["exp_avg_sq"])


def test_non_unit_vectors_are_refused_until_normalized():
    """The constructor and add_param_group name the param and its norms; normalize_vectors_
    on the model (Linear and Conv weights, not biases) makes it acceptable."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 5))
    with pytest.raises(ValueError, match=r"parameter 0 of the group \(shape \(4, 3, 3, 3\)\)"):
        adamkit.NDAdam(model.parameters())
    optimizer = adamkit.NDAdam([torch.zeros(3, requires_grad=True)])
    refused = r"\(shape \(5, 16\)\) has vector norms from 0\.\d+ to 0\.\d+; call adamkit\.normalize"
    with pytest.raises(ValueError, match=refused):
        optimizer.add_param_group({"params": [model[2].weight]})
    assert len(optimizer.param_groups) == 1
    bias = model[0].bias.detach().clone()
    adamkit.normalize_vectors_(model)
    assert torch.equal(model[0].bias, bias)
    for weight in (model[0].weight, model[2].weight):
        torch.testing.assert_close(weight.detach().flatten(1).norm(dim=1), torch.ones(len(weight)))
    adamkit.NDAdam(model.parameters())


def test_a_zero_vector_stays_zero_then_joins_the_sphere():
    """normalize_vectors_ leaves a zero row at 0 (no NaN); the optimizer accepts it (an
    embedding's padding row), keeps it at 0 under a zero gradient and puts it on the unit
    sphere at its first non-zero gradient (F4)."""
    weight = torch.ones(3, 4, requires_grad=True)
    with torch.no_grad():
        weight[1] = 0.0
    adamkit.normalize_vectors_([weight])
    assert torch.isfinite(weight).all() and not weight[1].any()
    optimizer = adamkit.NDAdam([weight], lr=0.1)
    for row_grad in (0.0, 1.0):
        weight.grad = torch.ones(3, 4)
        weight.grad[1] = row_grad
        optimizer.step()
        assert torch.isfinite(weight).all()
        norms = weight.detach().norm(dim=1)
        expected = [1.0, row_grad, 1.0]
        torch.testing.assert_close(norms, torch.tensor(expected), rtol=1e-6, atol=0)


def test_meta_params_are_accepted():
    """No data to check on the meta device (models built before materialising)."""
    adamkit.NDAdam([torch.empty(4, 3, device="meta", requires_grad=True)])


@pytest.mark.parametrize(
    "vec_axes, match",
    [
        ((2,), r"Invalid vec_axes \(2,\) for parameter 1 of the group: it has 2 dimensions"),
        ((-3,), r"Invalid vec_axes \(-3,\) for parameter 1 of the group: it has 2 dimensions"),
        ((1, -1), r"Invalid vec_axes \(1, -1\) for parameter 1 .* must be distinct dims"),
    ],
)
def test_vec_axes_out_of_range_name_the_param_and_its_dims(vec_axes, match):
    """Param 0 (3 dims) takes the axes, param 1 (2 dims) cannot: the error names it (B1)."""
    first = torch.ones(2, 3, 4, requires_grad=True)
    adamkit.normalize_vectors_([first], vec_axes)
    with pytest.raises(ValueError, match=match):
        adamkit.NDAdam([first, torch.ones(2, 1, requires_grad=True)], vec_axes=vec_axes)


def test_normalize_vectors_checks_explicit_axes():
    """normalize_vectors_ refuses what NDAdam refuses: a 1-D bias under vec_axes=(1,)."""
    with pytest.raises(ValueError, match=r"Invalid vec_axes \(1,\) for parameter 1: it has 1"):
        adamkit.normalize_vectors_([torch.ones(2, 3), torch.ones(3)], vec_axes=(1,))
