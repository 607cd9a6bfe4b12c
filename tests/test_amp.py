"""torch.amp.GradScaler's contract with optimizers that unscale inside the step (as torch's
fused ones): both backends."""

from __future__ import annotations

import copy

import pytest
import torch

import adamkit
from test_contracts import assert_same

from harness import snapshot

# SGD's step is linear in the gradient: a missing or doubled unscale shows at once
OPTIMIZER = (adamkit.SGD, {"lr": 0.01, "momentum": 0.9})


def train(backend, inf_at=3, steps=8, optimizer=OPTIMIZER):
    """A small model in a GradScaler loop; the gradient of step ``inf_at`` gets an inf."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    cls, kwargs = optimizer
    optimizer = cls(model.parameters(), backend=backend, **kwargs)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    snapshots = []
    for step in range(steps):
        optimizer.zero_grad()
        scaler.scale(model(x).square().mean()).backward()
        if step == inf_at:
            model[0].weight.grad[0, 0] = float("inf")
        before = copy.deepcopy(snapshot(optimizer, list(model.parameters())))
        scaler.step(optimizer)
        scaler.update()
        after = snapshot(optimizer, list(model.parameters()))
        snapshots.append((before, after))
    return model, optimizer, snapshots


@pytest.mark.parametrize("backend", ["eager", "fused"])
@pytest.mark.parametrize("cls", [adamkit.SGD, adamkit.Adam])
def test_found_inf_step_changes_nothing(backend, cls):
    """Nothing changes, the step count of a rule that keeps one included (torch's SGD
    keeps none)."""
    model, optimizer, snapshots = train(
        backend, optimizer=(cls, OPTIMIZER[1] if cls is adamkit.SGD else {})
    )
    before, after = snapshots[3]
    assert_same(after, before)
    state = optimizer.state[model[0].weight]
    assert "step" not in state if cls is adamkit.SGD else state["step"].item() == 7
    assert not any(p.grad is None for p in model.parameters())


def test_amp_loop_equals_the_unscaled_eager_loop():
    """Scaled gradients, unscaled inside the step, with one skipped step: the fused loop
    gives the eager loop's params, and the eager loop the params of a loop without scaling
    that skips the same step."""
    fused, _, _ = train("fused")
    eager, _, _ = train("eager")
    for a, b in zip(fused.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    cls, kwargs = OPTIMIZER
    optimizer = cls(plain.parameters(), **kwargs)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    for step in range(8):
        optimizer.zero_grad()
        plain(x).square().mean().backward()
        if step != 3:
            optimizer.step()
    for a, b in zip(plain.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["eager", "fused"])
def test_grad_scale_on_a_0_dim_bfloat16_param(backend):
    param = torch.ones((), dtype=torch.bfloat16, requires_grad=True)
    optimizer = adamkit.Adam([param], lr=0.1, backend=backend)
    param.grad = torch.tensor(4.0, dtype=torch.bfloat16)
    optimizer.grad_scale = torch.tensor(2.0)
    optimizer.step()
    assert param.dtype == torch.bfloat16 and param.item() == pytest.approx(0.9, abs=1e-2)


def test_a_new_scale_tensor_at_each_step_is_read_by_a_pack():
    """A scale handed as another tensor at each step (a new GradScaler, another script's):
    the fused backend's pack (many small params stepped in one call, whose table of
    pointers lives across steps) divides by each, as eager does."""
    from adamkit.backends import fused

    generator = torch.Generator().manual_seed(2)
    start = [torch.randn(5, generator=generator) for _ in range(fused.PACKED + 2)]
    sides = []
    for backend in ("eager", "fused"):
        params = [tensor.clone().requires_grad_() for tensor in start]
        sides.append((params, adamkit.Adam(params, lr=0.1, backend=backend)))
    scales = []  # each alive to the end: a stale pointer would read a live, other value
    for scale in (2.0, 8.0, 0.5, 4.0):
        grads = [torch.randn(5, generator=generator) for _ in start]
        scales.append(torch.tensor(scale))
        for params, optimizer in sides:
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad * scale
            optimizer.grad_scale = scales[-1]
            optimizer.step()
        (eager, _), (ours, optimizer) = sides
        for a, b in zip(ours, eager, strict=True):
            assert torch.linalg.vector_norm(a - b) <= 1e-6 * torch.linalg.vector_norm(b)
    (_, _, pack), *_ = optimizer._runner.packs.values()
    assert pack.table is not None, "the params did not step as a pack, where they lie"
