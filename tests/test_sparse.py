"""Sparse gradients (``nn.Embedding(sparse=True)``): SGD and Adagrad step them as torch's do,
with torch's errors; the other optimizers refuse them (issue 17)."""

from __future__ import annotations

import pytest
import torch

import adamkit

CONFIGS = [
    ("SGD", {"lr": 0.01}),
    ("SGD", {"lr": 0.01, "maximize": True}),
    ("SGD", {"lr": 0.01, "momentum": 0.9}),
    ("SGD", {"lr": 0.01, "momentum": 0.9, "dampening": 0.5}),
    ("SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.01, "momentum": 0.9, "foreach": True}),
    ("SGD", {"lr": 0.01, "weight_decay": 0.1}),  # torch: add(sparse, dense) refused
    ("Adagrad", {"lr": 0.01}),
    ("Adagrad", {"lr": 0.01, "lr_decay": 0.5, "maximize": True}),
    ("Adagrad", {"lr": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-3}),
    ("Adagrad", {"lr": 0.01, "foreach": True}),
    ("Adagrad", {"lr": 0.01, "weight_decay": 0.1}),  # torch: refused
]


def train(module, name, kwargs, backend=None, steps=50):
    """50 steps of an embedding (sparse gradients, repeated indices) and a dense linear
    layer: the params and state after each step, or the error a step raised."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {"embedding": torch.nn.Embedding(20, 4, sparse=True), "head": torch.nn.Linear(4, 1)}
    ).double()
    extra = {} if backend is None else {"backend": backend}
    optimizer = getattr(module, name)(model.parameters(), **kwargs, **extra)
    generator = torch.Generator().manual_seed(1)
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        indices = torch.randint(0, 20, (8,), generator=generator)
        model["head"](model["embedding"](indices)).square().mean().backward()
        try:
            optimizer.step()
        except RuntimeError as error:
            return error
        history.append(
            [
                {"param": p.detach().clone()}
                | {k: v.detach().clone() for k, v in optimizer.state[p].items()}
                for p in model.parameters()
            ]
        )
    return history


def dense(value):
    return value.to_dense() if value.is_sparse else value


@pytest.mark.parametrize("backend", ["eager", "auto"])
@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_sparse_gradients_step_as_torchs(name, kwargs, backend):
    """Params and state bitwise torch's after each of 50 steps (a sparse buffer where
    torch's is sparse), or torch's error."""
    theirs = train(torch.optim, name, kwargs)
    ours = train(adamkit, name, kwargs, backend)
    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs) and str(ours) == str(theirs), (theirs, ours)
        return
    assert not isinstance(ours, Exception), ours
    for step, (mine, torchs) in enumerate(zip(ours, theirs, strict=True), start=1):
        for a, b in zip(mine, torchs, strict=True):
            assert sorted(a) == sorted(b), step
            for key in b:
                assert a[key].layout == b[key].layout, (step, key)
                expected = dense(b[key])
                # backend="auto": dense params step by torch's fused kernels, an ulp off
                tolerance = 1e-12 * expected.norm().item() if backend == "auto" else 0.0
                torch.testing.assert_close(
                    dense(a[key]), expected, rtol=0, atol=tolerance, equal_nan=True
                )


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("Adam", {}),
        ("NAdam", {}),
        ("RMSprop", {}),
        ("SGD", {"momentum": 0.9, "momentum_form": "ema"}),
    ],
)
def test_other_optimizers_refuse_sparse_gradients(name, kwargs):
    error = train(adamkit, name, kwargs, steps=1)
    assert isinstance(error, RuntimeError) and "does not support sparse gradients" in str(error)


@pytest.mark.parametrize("name", ["SGD", "Adagrad"])
def test_the_fused_backend_refuses_sparse_gradients(name):
    error = train(adamkit, name, {"lr": 0.01}, backend="fused", steps=1)
    assert isinstance(error, RuntimeError) and "sparse" in str(error)
