"""The fused backend against the eager one (TESTING.md N3, A2): every optimizer and option of
the registry, the awkward param sets, checkpoints between the backends, no recompiles."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import adamkit
from adamkit.backends import fused as fused_backend
from adamkit.backends.fused import FusedBackend

from harness import gradient_script, leaves, multipliers, run, snapshot
from registry import OPTIM_DB, sweep_cases

FUSABLE = OPTIM_DB  # every optimizer runs fused
# ‖fused − eager‖ / ‖eager‖ per tensor. Both backends step bfloat16 in float32 and round once,
# but single entries may still differ by an ulp (up to 2^-7 relative) where the float32
# results straddle a rounding boundary: an entry-wise bound at 5e-3 cannot hold, the tensor's
# relative error does.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 5e-3}


def assert_close_to(ours, reference, dtype, what=""):
    """Both snapshots hold the same state names; every tensor agrees within the dtype's
    tolerance, relative to the tensor's scale; plain values are equal."""
    for index, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        assert set(mine) == set(theirs), f"{what} param {index}: {set(mine)} vs {set(theirs)}"
        for name, expected in theirs.items():
            value = mine[name]
            if isinstance(expected, float):  # SWATS' λ, Λ and lr at the switch
                assert abs(value - expected) <= TOLERANCE[dtype] * abs(expected), name
                continue
            if not isinstance(expected, torch.Tensor):
                assert value == expected, name
                continue
            assert value.shape == expected.shape and value.dtype == expected.dtype
            if expected.numel() == 0:
                continue
            error = torch.linalg.vector_norm(value.double() - expected.double())
            scale = torch.linalg.vector_norm(expected.double())
            assert error <= TOLERANCE[dtype] * scale, f"{what} param {index} {name}: {error}"


def twin_runs(info, config, dtype, steps=20, params=None, feed=None):
    """The same script through an eager and a fused optimizer; snapshots per step."""
    histories = []
    for backend in ("eager", "fused"):
        tensors = leaves(dtype) if params is None else params(dtype)
        optimizer = info.cls(tensors, backend=backend, **config)
        if feed is None:
            script = gradient_script(steps, dtype, shapes=[tuple(p.shape) for p in tensors])
            run(optimizer, tensors, script, multipliers(steps))
            histories.append(snapshot(optimizer, tensors))
        else:
            histories.append(feed(optimizer, tensors))
    return histories


# Inductor may lower addcmul on the CPU as fma(t1·t2, value, self) where eager computes
# fma(value·t1, t2, self), depending on the instruction set (AVX2 and AVX-512 machines
# differ). The one-ulp difference this leaves in v at step 1 grows, by cancellation in the
# momentum buffer of the 0-dim param (7.3 → −0.09 at the ×500 gradient of step 14), to 6e-6
# relative in float32. These configs are compared in float64, where the same ulp stays far
# below the tolerance on every machine: the test's outcome never depends on the CPU.
CANCELLING = {
    "RMSprop(momentum=0.9)",
    "RMSprop(momentum=0.9,centered=True,weight_decay=0.1,maximize=True)",
}


def sweep(dtypes_for_all, dtypes_for_first):
    cases = []
    for info in FUSABLE:
        for index, config in enumerate(info.sweep):
            dtypes = dtypes_for_all + (dtypes_for_first if index == 0 else [])
            if info.id(config) in CANCELLING:
                dtypes = [torch.float64 if d == torch.float32 else d for d in dtypes]
            for dtype in dict.fromkeys(dtypes):
                name = f"{info.id(config)}-{dtype}"
                cases.append(pytest.param(info, config, dtype, id=name))
    return cases


@pytest.mark.parametrize(
    "info, config, dtype", sweep([torch.float32], [torch.float64, torch.bfloat16])
)
def test_fused_equals_eager(info, config, dtype):
    """Params and every state tensor after 20 steps under a changing lr (N3)."""
    eager, fused = twin_runs(info, config, dtype)
    assert_close_to(fused, eager, dtype, info.id(config))


def awkward_params(dtype, complex_params=True):
    """A transposed (non-contiguous) matrix, a channels_last conv weight (their rows of
    unit norm, for ND-Adam), a complex param and a 0-element param last."""
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(4, 3, generator=generator, dtype=dtype).t()
    conv = torch.randn(2, 3, 2, 2, generator=generator, dtype=dtype)
    conv = conv.contiguous(memory_format=torch.channels_last)
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    cplx = torch.randn(5, generator=generator, dtype=complex_dtype)
    empty = torch.zeros(0, dtype=dtype)
    adamkit.normalize_vectors_([matrix, conv])
    params = (matrix, conv, cplx, empty) if complex_params else (matrix, conv, empty)
    return [p.requires_grad_() for p in params]


def awkward_steps(optimizer, params):
    """20 steps: param 1 has no gradient on steps 5–9 (frozen, then unfrozen), param 0 none
    on step 12; every step replaces p.grad by a new tensor, and on step 15 the model's
    zero_grad() sets them to None first."""
    generator = torch.Generator().manual_seed(1)
    for step in range(1, 21):
        if step == 15:
            optimizer.zero_grad()
        for index, param in enumerate(params):
            frozen = (index == 1 and 5 <= step <= 9) or (index == 0 and step == 12)
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.grad = None if frozen else noise
        optimizer.step()
    return snapshot(optimizer, params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("info", [pytest.param(info, id=info.name) for info in FUSABLE])
def test_fused_handles_frozen_empty_and_non_contiguous_params(info, dtype):
    """Some params without grad, layers frozen and unfrozen mid-run, a 0-element param last,
    non-contiguous and complex params (N3, A2): as eager, and the layouts stay."""

    def params(dtype):
        return awkward_params(dtype, info.cls.rule.supports_complex)

    eager, fused = twin_runs(info, {}, dtype, params=params, feed=awkward_steps)
    assert_close_to(fused, eager, dtype, info.name)


def large_params(dtype, complex_params=True):
    """Params of 64 k elements or more, which step one kernel call each where they lie: a
    vector with a tail after the last full SIMD width, a matrix, a channels_last conv
    weight, a transposed matrix (another memory order than its state: eager's loop) and a
    complex vector (its real view); ND-Adam's rows of unit norm."""
    generator = torch.Generator().manual_seed(2)
    vector = torch.randn(70_001, generator=generator, dtype=dtype)
    matrix = torch.randn(257, 260, generator=generator, dtype=dtype)
    conv = torch.randn(8, 9, 30, 31, generator=generator, dtype=dtype)
    conv = conv.contiguous(memory_format=torch.channels_last)
    transposed = torch.randn(300, 230, generator=generator, dtype=dtype).t()
    params = [vector, matrix, conv, transposed]
    if complex_params:
        params.append(torch.randn(33_000, generator=generator, dtype=dtype.to_complex()))
    adamkit.normalize_vectors_(params[1:4])
    return [p.requires_grad_() for p in params]


def large_steps(optimizer, params):
    """5 steps of new gradients; the matrix frozen on step 2, the vector's storage replaced
    (``p.data = p.data.clone()``) before step 4."""
    generator = torch.Generator().manual_seed(3)
    for step in range(1, 6):
        if step == 4:
            params[0].data = params[0].data.clone()
        for index, param in enumerate(params):
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.grad = None if (index == 1 and step == 2) else noise
        optimizer.step()
    return snapshot(optimizer, params)


@pytest.mark.parametrize("info", [pytest.param(info, id=info.name) for info in FUSABLE])
def test_large_params_step_where_they_lie_as_on_eager(info):
    """The kernel's direct call of its C loop on large params, each read and written in
    memory order where it lies (the size, the pointers and the layouts right): as eager."""

    def params(dtype):
        return large_params(dtype, info.cls.rule.supports_complex)

    eager, fused = twin_runs(info, {}, torch.float32, params=params, feed=large_steps)
    assert_close_to(fused, eager, torch.float32, info.name)


def test_large_params_step_as_on_eager_through_the_compiled_graph(monkeypatch):
    """Where the graph's C loop cannot be called alone (another torch's code, on another
    device), the compiled graph itself is called, on the tensors' flat views: as eager."""
    from adamkit.backends import fused

    monkeypatch.setattr(fused, "_KERNELS", {})
    monkeypatch.setattr(fused, "find_loop", lambda *arguments: None)
    monkeypatch.setattr(fused, "stored_loop", lambda name: None)  # none from other processes
    info = next(info for info in FUSABLE if info.name == "NAdam")
    eager, ours = twin_runs(info, {}, torch.float32, params=large_params, feed=large_steps)
    assert_close_to(ours, eager, torch.float32, info.name)
    assert all(kernel.loop is False for kernel in fused._KERNELS.values())


def small_params(dtype):
    """More small params than a pack needs (fused.PACKED), of several shapes: a vector, a
    one-element param, matrices, a 3-D weight."""
    from adamkit.backends import fused

    generator = torch.Generator().manual_seed(4)
    shapes = [(3,), (1,), (5, 7), (2, 3, 4), (40,), (6, 6)]
    shapes = [shapes[index % len(shapes)] for index in range(fused.PACKED + 4)]
    params = [torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes]
    adamkit.normalize_vectors_([p for p in params if p.dim() > 1])  # for ND-Adam
    return [p.requires_grad_() for p in params]


def pack_steps(optimizer, params):
    """9 steps of new gradients, between which a script does what breaks a pack: a param
    without a gradient (step 4), gradients of matrices in another memory order (step 5)
    and of vectors as negated views (step 6; the step copies such gradients, where it
    otherwise reads them where they lie), in-place edits of
    one param's state and a reset of its step (before step 6), a param's storage replaced
    (``p.data = ...``, before step 7), a state tensor's storage (and a step count's)
    replaced in place (before step 8), a state_dict round trip (before step 9), and a
    param's whole state dict replaced by a new one (before step 3). Each replacement holds
    other values, which the step must read."""
    generator = torch.Generator().manual_seed(5)
    for step in range(1, 10):
        if step == 3:
            optimizer.state[params[5]] = {
                name: (value * 0.5 if value.dim() else value + 1)
                if isinstance(value, torch.Tensor)
                else value
                for name, value in optimizer.state[params[5]].items()
            }
        if step == 6:
            for name, value in optimizer.state[params[2]].items():
                if isinstance(value, torch.Tensor):
                    value.fill_(1.0) if name == "step" else value.mul_(0.5)
        if step == 7:
            params[3].data = params[3].data * 0.5
        if step == 8:
            for value in optimizer.state[params[4]].values():
                if isinstance(value, torch.Tensor):
                    value.data = value.data * 0.5 if value.dim() else value.data + 1
        if step == 9:
            optimizer.load_state_dict(optimizer.state_dict())
        for index, param in enumerate(params):
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if step == 5 and param.dim() == 2:
                noise = noise.t().contiguous().t()  # the same values, column-major
            if step == 6 and param.dim() == 1:  # (params[0], a step behind since step 4,
                # steps alone: not by torch's kernel for Adam, which refuses such views)
                noise = torch._neg_view(noise.neg())  # the same values, negated lazily
            param.grad = None if (index == 0 and step == 4) else noise
        optimizer.step()
    if isinstance(optimizer._runner, FusedBackend) and optimizer.rule.multi_tensor:
        # one pack, of the one group: none left behind by the group the reload replaced
        assert len(optimizer._runner.packs) == 1, "the params did not step as one pack"
        (_, _, pack), *_ = optimizer._runner.packs.values()
        assert pack.table is not None, "the pack did not step where its params lie"
    return snapshot(optimizer, params)


def count_steps(optimizer, params):
    """6 steps of new gradients on large params, whose step counts and scalar state the
    fused backend keeps in one buffer (fused.Counts) from step 2: one param's 0-dim state
    replaced by other values (``.data = ...``) before step 4, and another's step count
    reset in place before step 5."""
    generator = torch.Generator().manual_seed(6)
    for step in range(1, 7):
        if step == 5 and "step" in optimizer.state[params[1]]:
            optimizer.state[params[1]]["step"].fill_(1.0)
        if step == 4:
            for value in optimizer.state[params[2]].values():
                if isinstance(value, torch.Tensor) and not value.dim():
                    value.data = value.data * 0.5
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator, dtype=param.dtype)
        optimizer.step()
    return snapshot(optimizer, params)


@pytest.mark.parametrize("info", [pytest.param(info, id=info.name) for info in FUSABLE])
def test_step_counts_kept_together_read_edits_as_on_eager(info):
    """The 0-dim state of large params in one buffer (fused.Counts): an in-place reset of
    one step count and a replaced one are read, as on eager."""

    def params(dtype):
        generator = torch.Generator().manual_seed(7)
        tensors = [torch.randn(70_001, generator=generator, dtype=dtype) for _ in range(3)]
        return [tensor.requires_grad_() for tensor in tensors]

    eager, fused = twin_runs(info, {}, torch.float32, params=params, feed=count_steps)
    assert_close_to(fused, eager, torch.float32, info.name)


@pytest.mark.parametrize("info", [pytest.param(info, id=info.name) for info in FUSABLE])
def test_many_small_params_step_as_one_pack_as_on_eager(info):
    """A group's many small params step as one tensor (fused.Pack), their state in the
    pack's buffers: as eager, through what breaks a pack and makes it again."""
    eager, fused = twin_runs(info, {}, torch.float32, params=small_params, feed=pack_steps)
    assert_close_to(fused, eager, torch.float32, info.name)


@pytest.mark.parametrize(
    "info, config", [case for case in sweep_cases() if case.values[0].name in ("SGD", "SGDW")]
)
def test_a_pack_steps_every_sgd_config_as_on_eager(info, config):
    """SGD's first step differs (the buffer is the gradient, not dampened): a pack of small
    params, first stepped as eager steps them, then as one pack, over every SGD config."""
    eager, fused = twin_runs(info, config, torch.float32, steps=4, params=small_params)
    assert_close_to(fused, eager, torch.float32, info.id(config))


def small_and_large_params(dtype):
    """small_params and two params of more elements than a row of the pack's driver
    (fused.ROW; neither a multiple of it nor of a vector's width)."""
    generator = torch.Generator().manual_seed(6)
    large = [torch.randn(70_001, generator=generator, dtype=dtype)]
    large.append(torch.randn(251, 300, generator=generator, dtype=dtype))
    adamkit.normalize_vectors_(large[1:])  # for ND-Adam
    return [*small_params(dtype), *(p.requires_grad_() for p in large)]


@pytest.mark.parametrize("info", [pytest.param(info, id=info.name) for info in FUSABLE])
def test_large_params_join_the_pack_on_the_cpu(info):
    """On the CPU a pack takes a group's large params too, each stepped by the driver in
    rows (fused.ROW) where it lies: as eager, through what breaks a pack."""
    eager, fused = twin_runs(
        info, {}, torch.float32, params=small_and_large_params, feed=pack_steps
    )
    assert_close_to(fused, eager, torch.float32, info.name)


def sharing_params(dtype):
    """Small params of a pack, and params over one memory: a 300 k-element weight (ten of
    the driver's rows), its tie made as another Parameter over the same tensor, and a param
    viewing its second half."""
    weight = torch.randn(300_000, generator=torch.Generator().manual_seed(7), dtype=dtype)
    shared = [weight, weight.detach(), weight.detach()[150_000:]]
    return [*small_params(dtype), *(torch.nn.Parameter(p) for p in shared)]


@pytest.mark.parametrize("info", [pytest.param(info, id=info.name) for info in FUSABLE])
def test_params_sharing_memory_step_one_after_the_other_as_on_eager(info):
    """Params over one memory step one after the other on the eager backend, each reading
    what the one before wrote; a pack would step them at once (the driver's rows on two
    threads): the fused backend leaves them out of its pack and gives eager's numbers."""
    generator = torch.Generator().manual_seed(8)
    runs = []
    for backend in ("eager", "fused"):
        params = sharing_params(torch.float32)
        optimizer = info.cls(params, backend=backend)
        for _ in range(4):
            for param in params:
                param.grad = torch.randn(param.shape, generator=generator)
            optimizer.step()
        runs.append([{"param": p.detach(), **optimizer.state[p]} for p in params])
        generator = torch.Generator().manual_seed(8)
    if info.cls.rule.multi_tensor:
        (_, _, pack), *_ = optimizer._runner.packs.values()
        assert not {id(p) for p in params[-3:]} & {id(p) for p in pack.members}
    assert_close_to(runs[1], runs[0], torch.float32, info.name)


@pytest.mark.parametrize("cls", [adamkit.AdamW, adamkit.NAdam])
def test_a_pack_resumes_bit_for_bit(cls, tmp_path):
    """6 steps of a pack, or 3, torch.save and torch.load into a new optimizer, and 3: the
    same params and state bit for bit (the resumed pack is built from the loaded state)."""
    script = gradient_script(
        6, torch.float32, shapes=[p.shape for p in small_params(torch.float32)]
    )
    ends = []
    for resume in (False, True):
        params = small_params(torch.float32)
        optimizer = cls(params, backend="fused", weight_decay=0.1)
        for index, grads in enumerate(script):
            if resume and index == 3:
                torch.save(optimizer.state_dict(), tmp_path / "opt.pt")
                optimizer = cls(params, backend="fused", weight_decay=0.1)
                optimizer.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
        assert optimizer._runner.packs
        ends.append(snapshot(optimizer, params))
    for ours, theirs in zip(*ends, strict=True):
        for name, value in theirs.items():
            assert torch.equal(ours[name], value), name


def test_params_keep_their_strides_and_identity():
    params = awkward_params(torch.float32)
    strides = [p.stride() for p in params]
    pointers = [p.data_ptr() for p in params]
    optimizer = adamkit.Adam(params, backend="fused")
    awkward_steps(optimizer, params)
    assert [p.data_ptr() for p in params] == pointers  # stepped where they lie
    assert [p.stride() for p in params] == strides
    assert params[1].is_contiguous(memory_format=torch.channels_last)
    assert optimizer.param_groups[0]["params"] == params


def test_gradients_are_neither_changed_nor_replaced():
    params = leaves(torch.float32)
    optimizer = adamkit.Adam(params, backend="fused", maximize=True, weight_decay=0.1)
    for grads in gradient_script(3, torch.float32):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        before = [p.grad for p in params]
        optimizer.step()
        for p, g, b in zip(params, grads, before, strict=True):
            assert p.grad is b and torch.equal(p.grad, g)


@pytest.mark.parametrize("source, target", [("fused", "eager"), ("eager", "fused")])
def test_checkpoints_move_between_backends(source, target, tmp_path):
    """10 steps on one backend, torch.save/load(weights_only=True), 10 more on the other:
    as 20 on the eager backend, within float32 tolerance."""
    script = gradient_script(20, torch.float32)
    reference = leaves(torch.float32)
    eager = adamkit.NAdam(reference, weight_decay=0.1)
    run(eager, reference, script)
    params = leaves(torch.float32)
    first = adamkit.NAdam(params, weight_decay=0.1, backend=source)
    run(first, params, script[:10])
    torch.save(first.state_dict(), tmp_path / "opt.pt")
    clones = [p.detach().clone().requires_grad_() for p in params]
    second = adamkit.NAdam(clones, weight_decay=0.1, backend=target)
    second.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    run(second, clones, script[10:])
    assert_close_to(snapshot(second, clones), snapshot(eager, reference), torch.float32)


def test_changing_lr_and_betas_every_step_does_not_recompile():
    """A scheduler, a tensor lr and OneCycle's β1 change numbers, never the kernel."""
    counters = torch._dynamo.utils.counters["stats"]
    for lr in (1e-3, torch.tensor(1e-3)):
        params = leaves(torch.float32)
        optimizer = adamkit.AdamW(params, lr=lr, backend="fused")
        scheduler = adamkit.schedules.OneCycle(optimizer, max_lr=1e-2, total_steps=30)
        script = gradient_script(30, torch.float32)
        run(optimizer, params, script[:2])
        scheduler.step()
        compiled = counters["unique_graphs"]
        for grads in script[2:]:
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
            scheduler.step()
        assert counters["unique_graphs"] == compiled


def test_zero_grad_without_none_steps_as_eager_and_keeps_the_gradients():
    """zero_grad(set_to_none=False), backward accumulating into the zeroed gradients: the
    steps equal eager's, and each p.grad stays the tensor backward wrote (the backend
    neither replaces nor re-points it)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    models = [model, copy.deepcopy(model)]
    optimizers = [adamkit.Adam(models[0].parameters(), lr=0.01)]
    optimizers.append(adamkit.Adam(models[1].parameters(), lr=0.01, backend="fused"))
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    grads = None
    for _ in range(5):
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad(set_to_none=False)
            model(x).square().mean().backward()
            optimizer.step()
        now = [p.grad for p in models[1].parameters()]
        assert grads is None or all(a is b for a, b in zip(now, grads, strict=True))
        grads = now
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", [adamkit.AdamW, adamkit.NAdam])
def test_auto_uses_torchs_kernel_or_the_eager_backend_and_compiles_nothing(cls, monkeypatch):
    """backend="auto" on a group of fewer than AUTO_FUSED elements: torch's fused kernel
    where torch has the update (AdamW), the eager backend's numbers bit for bit elsewhere
    (NAdam); never a compile."""
    calls = []
    original = torch._fused_adamw_
    monkeypatch.setattr(torch, "_fused_adamw_", lambda *a, **k: calls.append(original(*a, **k)))
    counters = torch._dynamo.utils.counters["stats"]
    before = counters["unique_graphs"]
    generator = torch.Generator().manual_seed(0)
    base = [torch.randn(size, generator=generator) for size in (10, 100_000)]
    sides = []
    for backend in ("eager", "auto"):
        params = [p.clone().requires_grad_() for p in base]
        sides.append((params, cls(params, backend=backend)))
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=generator) for p in base]
        for params, optimizer in sides:
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    assert counters["unique_graphs"] == before
    assert len(calls) == (3 if cls is adamkit.AdamW else 0)
    for p, q in zip(sides[0][0], sides[1][0], strict=True):
        if calls:  # torch's kernel: the fused tolerance, per tensor (entries near 0 may
            # differ by more than 1e-6 of themselves where its vector code is AVX2's)
            error = torch.linalg.vector_norm(q.double() - p.double())
            assert error <= TOLERANCE[torch.float32] * torch.linalg.vector_norm(p.double())
        else:
            assert torch.equal(q, p)


@pytest.mark.parametrize("found", [True, False])
def test_auto_steps_a_large_group_fused_where_torch_has_no_kernel(found, monkeypatch):
    """backend="auto" on a CPU group of AUTO_FUSED elements or more whose update torch has
    no kernel for (NAdam): the fused backend's numbers bit for bit, its first step compiling;
    one element fewer, without a C++ compiler, or under autograd (differentiable=True): the
    eager backend's, bit for bit, compiling nothing."""
    monkeypatch.setattr(fused_backend, "compiler_found", lambda: found)
    generator = torch.Generator().manual_seed(0)
    threshold = fused_backend.AUTO_FUSED
    large = [(10, threshold - 10), (10, threshold - 11)]
    for sizes, flags in [(large[0], {}), (large[1], {}), (large[0], {"differentiable": True})]:
        base = [torch.randn(size, generator=generator) for size in sizes]
        sides = {}
        for backend in ("eager", "fused", "auto"):
            # (a differentiable step updates leaves that require grad in place: refused)
            params = [p.clone().requires_grad_(not flags) for p in base]
            extra = flags if backend != "fused" else {}
            sides[backend] = (params, adamkit.NAdam(params, backend=backend, **extra))
        for _ in range(2):
            grads = [torch.randn(p.shape, generator=generator) for p in base]
            for params, optimizer in sides.values():
                for p, g in zip(params, grads, strict=True):
                    p.grad = g.clone()
                optimizer.step()
        compiled = found and sizes == large[0] and not flags
        # which backend stepped (their numbers may agree where inductor rounds as eager)
        assert bool(sides["auto"][1]._runner.fused.counts) == compiled, (sizes, flags, found)
        twin = sides["fused" if compiled else "eager"][0]
        for p, q in zip(twin, sides["auto"][0], strict=True):
            assert torch.equal(q, p), (sizes, flags, found)


@pytest.mark.parametrize("platform", ["darwin", "freebsd14"])
def test_auto_compiles_on_linux_only(platform, monkeypatch):
    """Off Linux (a macOS compiler without OpenMP fails inductor's build; the fused backend
    has run on Linux only), backend="auto" finds no compiler, and steps on eager (on a
    faked FreeBSD inductor still finds g++: only adamkit's check refuses there)."""
    monkeypatch.setattr(fused_backend.sys, "platform", platform)
    fused_backend.compiler_found.cache_clear()
    try:
        assert not fused_backend.compiler_found()
    finally:
        fused_backend.compiler_found.cache_clear()


AUTO_WITH_A_BROKEN_COMPILER = textwrap.dedent(
    """
    import torch
    import adamkit
    from adamkit.backends import fused

    assert fused.compiler_found()  # inductor finds the compiler: only its builds fail
    generator = torch.Generator().manual_seed(0)
    base = [torch.randn(size, generator=generator) for size in (10, fused.AUTO_FUSED - 10)]
    sides = []
    for backend in ("eager", "auto"):
        params = [p.clone().requires_grad_() for p in base]
        sides.append((params, adamkit.NAdam(params, backend=backend, weight_decay=0.1)))
    for _ in range(2):
        grads = [torch.randn(p.shape, generator=generator) for p in base]
        for params, optimizer in sides:
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    assert not sides[1][1]._runner.fused.counts  # nothing stepped on the fused backend
    for p, q in zip(sides[0][0], sides[1][0]):
        assert torch.equal(p, q)
    print("eager")
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auto compiles on Linux only")
@pytest.mark.skipif(shutil.which("g++") is None, reason="the broken compiler wraps g++")
def test_auto_steps_eager_where_the_compiler_cannot_build(tmp_path):
    """Where inductor finds a C++ compiler that cannot build what it compiles (a g++ without
    Python's headers, as on a machine without python3-dev), backend="auto" steps a large
    group needing a compile on the eager backend, to its bits, from the first step on:
    it raised there before (the compile failed inside the first step)."""
    compiler = tmp_path / "g++"
    compiler.write_text(  # answers inductor's questions as g++ does; fails every build
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in -shared|-c)\n'
        '  echo "fatal error: Python.h: No such file or directory" >&2; exit 1;; esac; done\n'
        'exec g++ "$@"\n'
    )
    compiler.chmod(0o755)
    env = {**os.environ, "CXX": str(compiler), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", AUTO_WITH_A_BROKEN_COMPILER],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "eager"


def random_feed(steps, seed, before=None):
    """A ``feed`` for :func:`twin_runs`: new random gradients at each step, ``before(step,
    optimizer, tensors)`` called first; the snapshot at the end."""

    def feed(optimizer, tensors):
        generator = torch.Generator().manual_seed(seed)
        for step in range(steps):
            if before is not None:
                before(step, optimizer, tensors)
            for tensor in tensors:
                tensor.grad = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            optimizer.step()
        return snapshot(optimizer, tensors)

    return feed


def test_ndadam_vectors_of_several_lengths_equal_eager():
    """ND-Adam's fused backend: matrices of several vector lengths (packed by length), 1-D
    params, a param whose vectors are not contiguous rows (a transposed matrix)."""

    def params(dtype):
        generator = torch.Generator().manual_seed(3)
        shapes = [(4, 8), (5,), (3, 8), (5, 6), (2, 2, 2, 1), (8,)]
        tensors = [torch.randn(s, generator=generator, dtype=dtype) for s in shapes]
        tensors.append(torch.randn(8, 4, generator=generator, dtype=dtype).t())
        adamkit.normalize_vectors_(tensors)
        return [t.requires_grad_() for t in tensors]

    feed = random_feed(20, 4)
    info = next(info for info in OPTIM_DB if info.cls is adamkit.NDAdam)
    eager, fused = twin_runs(info, {}, torch.float64, params=params, feed=feed)
    assert_close_to(fused, eager, torch.float64)


def test_params_without_grad_stay_out_of_zero_grad_and_step():
    """zero_grad(set_to_none=False) leaves a None gradient None: that param is not stepped,
    even with weight decay."""
    frozen, trained = torch.ones(4, requires_grad=True), torch.ones(4, requires_grad=True)
    optimizer = adamkit.AdamW([frozen, trained], weight_decay=0.1, backend="fused")
    for _ in range(3):
        optimizer.zero_grad(set_to_none=False)
        trained.grad = torch.ones(4) if trained.grad is None else trained.grad.fill_(1.0)
        optimizer.step()
    assert frozen.grad is None and torch.equal(frozen, torch.ones(4))
    assert not torch.equal(trained, torch.ones(4))


def test_gradient_data_replaced_after_zero_grad_is_read():
    """An old idiom (p.grad.data = clipped) after zero_grad(set_to_none=False): the step reads
    the new gradient, as eager does."""
    results = []
    for backend in ("eager", "fused"):
        param = torch.ones(5, requires_grad=True)
        optimizer = adamkit.SGD([param], lr=0.1, backend=backend)
        for step in range(4):
            optimizer.zero_grad(set_to_none=False)
            if param.grad is None:
                param.grad = torch.zeros(5)
            param.grad.data = torch.full((5,), float(step + 1))
            optimizer.step()
        results.append(param.detach().clone())
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("backend", ["fused", "auto"])
@pytest.mark.parametrize("cls", [adamkit.SGD, adamkit.NAdam])
def test_step_moves_the_params_autograd_versions(backend, cls):
    """Backward through a graph built before the step raises, as with eager (the kernel,
    torch's for SGD, compiled for NAdam, writes the params in place)."""
    param = torch.ones(3, requires_grad=True)
    optimizer = cls([param], lr=0.1, backend=backend)
    loss = (param * param).sum()
    param.grad = torch.ones(3)
    optimizer.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_complex_param_after_an_odd_sized_real_one():
    params = [torch.randn(3, requires_grad=True), torch.randn(4, dtype=torch.complex64)]
    params[1].requires_grad_()
    twins = [p.detach().clone().requires_grad_() for p in params]
    optimizers = [adamkit.Adam(params, lr=0.1), adamkit.Adam(twins, lr=0.1, backend="fused")]
    for _ in range(3):
        for group in (params, twins):
            for p in group:
                p.grad = torch.ones_like(p)
        for optimizer in optimizers:
            optimizer.step()
    for a, b in zip(params, twins, strict=True):
        torch.testing.assert_close(b, a)


def test_sporadic_gradients_compile_at_most_twice():
    """Params of several sizes, each with a gradient on a random 60 % of the steps: the
    kernels have dynamic sizes, so the changing set of params compiles nothing new after
    the first steps (NAdam, which torch has no fused kernel for: one kernel for the large
    params, and at most one for a small param stepped alone)."""
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters["stats"]
    sizes = [3, 17, 100, 1000, 5000, 70_000, 100_000, 300_000]
    params = [torch.zeros(size, requires_grad=True) for size in sizes]
    twins = [p.detach().clone().requires_grad_() for p in params]
    optimizers = [adamkit.NAdam(params, backend="fused"), adamkit.NAdam(twins)]
    generator = torch.Generator().manual_seed(0)
    before = counters["unique_graphs"]
    for _ in range(60):
        chosen = (torch.rand(len(params), generator=generator) < 0.6).tolist()
        for param, twin, on in zip(params, twins, chosen, strict=True):
            grad = torch.randn(param.shape, generator=generator) if on else None
            param.grad, twin.grad = grad, None if grad is None else grad.clone()
        for optimizer in optimizers:
            optimizer.step()
    assert counters["unique_graphs"] - before <= 2
    for param, twin in zip(params, twins, strict=True):
        torch.testing.assert_close(param, twin, rtol=1e-6, atol=1e-7)


def test_swats_granularity_changed_mid_run_equals_eager():
    info = next(info for info in OPTIM_DB if info.cls is adamkit.SWATS)

    def switch(step, optimizer, tensors):
        if step == 4:
            optimizer.param_groups[0]["granularity"] = "tensor"

    eager, fused = twin_runs(info, {}, torch.float64, feed=random_feed(12, 5, switch))
    assert_close_to(fused, eager, torch.float64)


def test_ndadam_awkward_vectors_equal_eager():
    """An empty matrix, and a square matrix whose ``.data`` is replaced by its transpose
    (same storage, other strides) mid-run."""

    def params(dtype):
        generator = torch.Generator().manual_seed(6)
        tensors = [torch.randn(40, 8, generator=generator, dtype=dtype), torch.zeros(5, 0)]
        tensors.append(torch.randn(3, 3, generator=generator, dtype=dtype))
        tensors[1] = tensors[1].to(dtype)
        adamkit.normalize_vectors_(tensors)
        return [t.requires_grad_() for t in tensors]

    def transpose(step, optimizer, tensors):
        if step == 4:
            tensors[2].data = tensors[2].data.t()

    info = next(info for info in OPTIM_DB if info.cls is adamkit.NDAdam)
    feed = random_feed(8, 7, transpose)
    eager, fused = twin_runs(info, {}, torch.float64, params=params, feed=feed)
    assert_close_to(fused, eager, torch.float64)


@pytest.mark.parametrize("info", [pytest.param(info, id=info.name) for info in FUSABLE])
def test_mixed_dtypes_in_one_group(info):
    """A3: float64, float32, bfloat16 and float16 params in one group, with an integer
    tensor that has no gradient: the fused backend splits them by dtype and each steps as
    on the eager backend, within five times its dtype's tolerance (float16 as bfloat16's);
    the integer tensor stays as it was."""
    dtypes = (torch.float64, torch.float32, torch.bfloat16, torch.float16)

    def params(_):
        mixed = [
            p.to(dtype) for p, dtype in zip((leaves(torch.float64) * 2)[:4], dtypes, strict=True)
        ]
        counts = torch.arange(3)
        return [p.detach().requires_grad_() for p in mixed] + [counts]

    def steps(optimizer, tensors):
        generator = torch.Generator().manual_seed(2)
        for _ in range(10):
            for param in tensors[:-1]:
                param.grad = torch.randn(param.shape, generator=generator).to(param.dtype)
            optimizer.step()
        assert torch.equal(tensors[-1], torch.arange(3)) and not optimizer.state[tensors[-1]]
        return snapshot(optimizer, tensors[:-1])

    eager, fused = twin_runs(info, {}, None, params=params, feed=steps)
    for index, dtype in enumerate(dtypes):
        tolerance = TOLERANCE[torch.bfloat16 if dtype == torch.float16 else dtype]
        for name, expected in eager[index].items():
            value = fused[index][name]
            if isinstance(expected, torch.Tensor) and expected.numel():
                error = torch.linalg.vector_norm(value.double() - expected.double())
                scale = torch.linalg.vector_norm(expected.double())
                assert error <= 5 * tolerance * scale, (dtype, name, error)


TORCH_KERNELS = [
    (adamkit.Adam, {}, "_fused_adam_"),
    (adamkit.Adam, {"weight_decay": 0.1, "amsgrad": True, "maximize": True}, "_fused_adam_"),
    (adamkit.Adam, {"weight_decay": 0.1, "decoupled_weight_decay": True}, "_fused_adamw_"),
    (adamkit.AdamW, {}, "_fused_adamw_"),
    (adamkit.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}, "_fused_sgd_"),
    (adamkit.SGD, {"lr": 0.1, "weight_decay": 0.1}, "_fused_sgd_"),
    (adamkit.Adagrad, {"lr_decay": 0.01, "weight_decay": 0.1}, "_fused_adagrad_"),
    (adamkit.AdamW, {"weight_decay_mode": "decoupled_schedule"}, None),
    (adamkit.Adam, {"eps_mode": "efficient"}, None),
    (adamkit.Adam, {"bias_correction": False}, None),
    (adamkit.Adam, {"amsgrad": True, "amsgrad_max": "corrected"}, None),
    (adamkit.SGD, {"lr": 0.1, "momentum": 0.9, "momentum_form": "ema"}, None),
    (adamkit.SGDW, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}, None),
    (adamkit.NAdam, {}, None),
]


@pytest.mark.parametrize("cls, kwargs, kernel", TORCH_KERNELS)
def test_torch_kernel_where_torch_has_the_update(cls, kwargs, kernel, monkeypatch):
    """Where torch has a fused kernel for exactly these options, the fused backend steps
    by it: one call per step for params of one dtype (a complex param as its real view),
    and eager's numbers within the fused tolerance; never under any other options."""
    calls = []
    for name in ("_fused_adam_", "_fused_adamw_", "_fused_sgd_", "_fused_adagrad_"):
        original = getattr(torch, name)

        def counted(*args, _name=name, _original=original, **kw):
            calls.append(_name)
            return _original(*args, **kw)

        monkeypatch.setattr(torch, name, counted)
    generator = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (70_000,), (), (4,)]
    base = [torch.randn(s, generator=generator) for s in shapes]
    base.append(torch.randn(3, dtype=torch.complex64, generator=generator))
    sides = []
    for backend in ("eager", "fused"):
        params = [p.clone().requires_grad_() for p in base]
        sides.append((params, cls(params, backend=backend, **kwargs)))
    for _ in range(3):
        grads = [torch.randn(p.shape, dtype=p.dtype, generator=generator) for p in base]
        for params, optimizer in sides:
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    assert calls == ([kernel] * 3 if kernel else [])
    snapshots = [
        [{"param": p.detach(), **optimizer.state[p]} for p in params] for params, optimizer in sides
    ]
    assert_close_to(snapshots[1], snapshots[0], torch.float32)


STEPS_IN_A_PROCESS = textwrap.dedent(
    """
    import sys, torch, adamkit
    generator = torch.Generator().manual_seed(0)
    large = [torch.randn(70_000, generator=generator) for _ in range(2)]
    small = [torch.randn(5, 3, generator=generator) for _ in range(20)]  # a pack
    params = [p.requires_grad_() for p in large + small]
    optimizer = adamkit.NAdam(params, backend="fused", weight_decay=0.1)
    for step in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    torch.save(torch.cat([p.detach().flatten() for p in params]), sys.argv[1])
    print("compiled" if "torch._inductor.compile_fx" in sys.modules else "stored")
    """
)


def test_a_warm_process_steps_by_the_stored_loops_bit_for_bit(tmp_path):
    """A process that finds its kernels' C loops stored by an earlier one (in the inductor
    cache it shares) steps without compiling or importing inductor, to the same bits; where
    the libraries are gone, it compiles again, to the same bits."""
    cache = tmp_path / "inductor"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}

    def steps(name):
        done = subprocess.run(
            [sys.executable, "-c", STEPS_IN_A_PROCESS, str(tmp_path / name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()[-1], torch.load(tmp_path / name)

    first, second = steps("first.pt"), steps("second.pt")
    assert (first[0], second[0]) == ("compiled", "stored")
    assert torch.equal(first[1], second[1])
    for library in cache.rglob("*.so"):
        library.unlink()
    third = steps("third.pt")
    assert third[0] == "compiled"
    assert torch.equal(first[1], third[1])


ISA_PROBES = textwrap.dedent(
    """
    from torch._inductor import cpu_vec_isa
    from adamkit.backends.fused import vector_isa_probes

    vector_isa_probes().join()

    def probed_again(*args):
        raise AssertionError("inductor checked a vector instruction set itself")

    cpu_vec_isa.VecISA.check_build = probed_again
    print(len(cpu_vec_isa.valid_vec_isa_list()))
    """
)


def test_inductor_finds_the_vector_isa_probes_adamkit_ran_side_by_side(tmp_path):
    """Before its first CPU compile the fused backend runs inductor's checks of the CPU's
    vector instruction sets in threads; inductor's own checks then find every answer and
    compile no probe (a process with an empty inductor cache)."""
    cpu_vec_isa = pytest.importorskip("torch._inductor.cpu_vec_isa")
    flags = cpu_vec_isa.x86_isa_checker()
    sets = [i for i in cpu_vec_isa.supported_vec_isa_list if set(str(i).split()) <= set(flags)]
    if len(sets) < 2:
        pytest.skip("fewer than two vector instruction sets to check on this CPU")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = subprocess.run(
        [sys.executable, "-c", ISA_PROBES], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) >= 1
