"""Optimizer state in bfloat16 and in 8 bits (issue 8; TESTING.md N4, S4's own-dtype rule):
the codes against an independent float64 reading of the paper's bit layout, the round-trip
bounds the block-wise code guarantees on normal, heavy-tailed and outlier-block tensors,
stochastic rounding's unbiasedness, the bytes of state per parameter, checkpoints that keep
the state's dtype and resume bit for bit, and training that tracks float32 state."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

import adamkit
from adamkit import precision

from reference.dynamic_code import code_table
from registry import OPTIM_DB

COMPACT = [torch.bfloat16, "8bit"]
# every optimizer with per-element state: SGD's sweep[0] has no momentum, so momentum is set
WITH_STATE = [
    pytest.param(
        info, {**info.sweep[0], **({"momentum": 0.9} if "SGD" in info.name else {})}, id=info.name
    )
    for info in OPTIM_DB
]
SIZE = (64, 96)  # 6144 elements: above MIN_ELEMENTS, 24 blocks


# the code -------------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_code_table_is_the_papers_bit_layout(signed):
    """Every byte decodes to the value the paper's bit layout gives it (float64 reference
    read bit by bit), within a float32 rounding; the unsigned code is 256 distinct values in [0, 1]
    with 1 and 1e-7 in it, the signed one ±1 and ±1e-6."""
    table = precision.dynamic_code(signed)
    expected = torch.tensor(code_table(signed), dtype=torch.float32)
    # the decoder evaluates the formula in float32: within one float32 rounding
    torch.testing.assert_close(table, expected, rtol=2**-23, atol=0)
    smallest = 1e-6 if signed else 1e-7
    assert table.abs().max() == 1.0
    assert table.abs()[table != 0].min() == torch.tensor(smallest, dtype=torch.float32)
    assert len(set(table.tolist())) == (255 if signed else 256)  # ±0 in the signed code


def distribution(kind: str, generator: torch.Generator, signed: bool) -> torch.Tensor:
    n = 256 * 200 + 77  # a partial last block
    if kind == "normal":
        x = torch.randn(n, generator=generator)
    elif kind == "heavy-tailed":  # Cauchy: most blocks hold a value far above the rest
        x = torch.tan(torch.pi * (torch.rand(n, generator=generator) - 0.5))
    else:  # outlier blocks: a few blocks 1e6 larger, one all zero, one with a single spike
        x = torch.randn(n, generator=generator)
        x[256 * 3 : 256 * 4] *= 1e6
        x[256 * 10 : 256 * 11] = 0.0
        x[256 * 20 + 5] = 1e4
        x[256 * 30 : 256 * 31] *= 1e-30
    return x if signed else x.square()


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("kind", ["normal", "heavy-tailed", "outlier-blocks"])
def test_round_trip_within_the_codes_bound(kind, signed):
    """Block-wise quantization then dequantization of normal, Cauchy and outlier-block
    tensors (and their squares, for the unsigned code): each element comes back as the code
    nearest to x/absmax (brute force over the 256 values; float32 ties aside), so within
    half the gap between the two codes around it, times its block's absmax. The unsigned
    code never rounds a positive value to 0: below its smallest value 1e-7 it comes back
    as 1e-7·absmax. Each block's absmax comes back exactly."""
    generator = torch.Generator().manual_seed(hash(kind) % 2**31)
    x = distribution(kind, generator, signed)
    codes, absmax = precision.quantize(x, signed)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape
    assert absmax.shape == (precision.blocks_of(x.numel()),)
    back = precision.dequantize(codes, absmax, signed).double()

    table = np.sort(code_table(signed))
    rows = np.zeros(absmax.numel() * 256)
    rows[: x.numel()] = x.double().numpy()
    scale = np.repeat(np.abs(rows.reshape(-1, 256)).max(axis=1), 256)[: x.numel()]
    assert np.array_equal(absmax.double().numpy(), scale[::256][: absmax.numel()])
    y = np.divide(x.double().numpy(), scale, out=np.zeros(x.numel()), where=scale > 0)
    above = np.clip(np.searchsorted(table, y), 1, 255)
    gap = table[above] - table[above - 1]
    bound = 0.5 * gap * scale
    if not signed:
        tiny = (y > 0) & (y < table[1])
        bound[tiny] = table[1] * scale[tiny]
    error = np.abs(back.numpy() - x.double().numpy())
    slack = 1e-6 * scale  # float32 arithmetic in the encoder
    assert (error <= bound + slack).all(), (error - bound - slack).max()
    if not signed:
        assert (back.numpy()[x.numpy() > 0] > 0).all()
    nearest = table[np.abs(y[:, None] - table[None, :]).argmin(axis=1)]
    got = back.numpy() / np.where(scale > 0, scale, 1)
    closer = np.abs(got - y) - np.abs(nearest - y)
    tiny = (~signed) & (y > 0) & (y < table[1] / 2)
    assert (closer[~tiny] <= 2e-7).all()


def neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two bfloat16 values around float32 ``x``: its bits cut to the high half (toward
    0), and the next one away from 0."""
    bits = x.view(torch.int32)
    toward = (bits & -65536).view(torch.float32)
    away = ((bits & -65536) + 65536).view(torch.float32)
    return toward.double(), away.double()


def test_stochastic_rounding_is_unbiased_and_reproducible():
    """Each value rounds to one of its two bfloat16 neighbours, and over 4000 steps' keys
    to both; the mean of the rounded values is the value within 4 standard errors of the
    mean (round to nearest is off by up to half the gap); the same value and key round the
    same way; NaN, ±Inf and values bfloat16 holds exactly come back as they are."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, generator=generator) * 10.0 ** torch.randint(-20, 20, (64,)).float()
    rounded = torch.stack(
        [precision.round_bfloat16(x, precision.salt(step, "exp_avg")) for step in range(4000)]
    ).double()
    toward, away = neighbours(x)
    assert ((rounded == toward) | (rounded == away)).all()
    assert ((rounded == toward).any(0) & (rounded == away).any(0)).all()
    gap = (away - toward).abs()
    assert ((rounded.mean(0) - x.double()).abs() <= 4 * gap / (2 * 4000**0.5)).all()
    key = precision.salt(7, "exp_avg_sq")
    assert torch.equal(precision.round_bfloat16(x, key), precision.round_bfloat16(x.clone(), key))
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.5, -3.0])
    out = precision.round_bfloat16(special, 12345).float()
    assert out[0].isnan() and torch.equal(out[1:], special[1:])


# the optimizers ---------------------------------------------------------------------------


def train(
    info, config, state_dtype, steps, params=None, optimizer=None, start=0, seed=0, backend="eager"
):
    """``steps`` steps of ``info``'s optimizer on a 64×96 matrix of unit rows (ND-Adam's
    vectors) and a 96-element bias, gradients of ¼‖θ − 0.1‖² plus noise from a fixed
    stream; the params and the optimizer."""
    if params is None:
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(SIZE, generator=generator)
        weight /= weight.norm(dim=1, keepdim=True)
        params = [weight.requires_grad_(), torch.zeros(96).requires_grad_()]
        optimizer = info.cls(params, **config, state_dtype=state_dtype, backend=backend)
    generator = torch.Generator().manual_seed(seed + 1)
    for index in range(start + steps):
        noise = [torch.randn(p.shape, generator=generator) * 0.1 for p in params]
        grads = [n + 0.5 * (p.detach() - 0.1) for n, p in zip(noise, params, strict=True)]
        if index >= start:
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            optimizer.step()
    return params, optimizer


def compact_entries(state):
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.dim() > 0}


@pytest.mark.parametrize("backend", ["eager", "fused"])
@pytest.mark.parametrize("state_dtype", COMPACT, ids=["bf16", "8bit"])
@pytest.mark.parametrize("info, config", WITH_STATE)
def test_state_keeps_its_dtype_and_resumes_bit_for_bit(info, config, state_dtype, backend):
    """N4 (a), (b), (d) and the resume criterion: the large param's per-element state is
    bfloat16, or uint8 codes with one float32 absmax per block; the small bias's stays
    float32; params keep their dtype and ``step`` its own; a checkpoint written with
    ``torch.save`` and read with ``weights_only=True`` at step 10 gives back every state
    tensor in its own dtype and continues, bit for bit, to the uninterrupted run's params
    and state at step 20. On both backends (the fused one keeps the codes in flat buffers,
    each param's blocks its own; ND-Adam's rows step alone, through the eager step)."""
    (weight, bias), optimizer = train(info, config, state_dtype, 20, backend=backend)
    names = optimizer.rule.state_names(optimizer.rule.options(optimizer.param_groups[0]))
    state = optimizer.state[weight]
    for name in names:
        if state[name].shape != weight.shape:
            continue  # ND-Adam's per-row v: 64 values, float32
        if state_dtype == "8bit":
            assert state[name].dtype == torch.uint8
            assert state[name + "_absmax"].shape == (24,)
        else:
            assert state[name].dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 for v in compact_entries(optimizer.state[bias]).values())
    assert weight.dtype == bias.dtype == torch.float32
    assert state["step"].dtype == torch.float32

    params, half = train(info, config, state_dtype, 10, backend=backend)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "optimizer": half.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = [p.clone().requires_grad_() for p in saved["params"]]
    optimizer2 = info.cls(resumed, **config, state_dtype=state_dtype, backend=backend)
    optimizer2.load_state_dict(saved["optimizer"])
    for param, original in zip(resumed, params, strict=True):
        for name, value in compact_entries(half.state[original]).items():
            assert optimizer2.state[param][name].dtype == value.dtype, name
    train(info, config, state_dtype, 10, resumed, optimizer2, start=10)
    assert torch.equal(resumed[0], weight) and torch.equal(resumed[1], bias)
    for name, value in compact_entries(state).items():
        assert torch.equal(optimizer2.state[resumed[0]][name], value), name


@pytest.mark.parametrize("state_dtype", COMPACT, ids=["bf16", "8bit"])
@pytest.mark.parametrize("info, config", WITH_STATE)
def test_compact_state_tracks_float32_state(info, config, state_dtype):
    """N4 (c): after 100 steps the params of the compact-state run are within 1e-2
    (bfloat16) or 5e-2 (8 bits) of the float32-state run's, relative to how far the
    float32 run moved them (Frobenius norms, per param)."""
    start, _ = train(info, config, None, 0)
    expected, _ = train(info, config, None, 100)
    got, _ = train(info, config, state_dtype, 100)
    bound = 1e-2 if state_dtype == torch.bfloat16 else 5e-2
    for a, b, origin in zip(got, expected, start, strict=True):
        moved = (b - origin).norm()
        assert (a - b).norm() <= bound * moved, ((a - b).norm() / moved).item()


@pytest.mark.parametrize("state_dtype", COMPACT, ids=["bf16", "8bit"])
@pytest.mark.parametrize("info, config", WITH_STATE)
def test_fused_equals_eager_with_compact_state(info, config, state_dtype):
    """N3 for compact state: after 20 steps the fused backend's params are within 1e-3 of
    the eager backend's, relative to how far they moved. Both decode, step and encode with
    the same functions; float32 sums that differ in their last bit can still quantize or
    round (stochastically) to neighbouring codes, which the next steps carry on."""
    start, _ = train(info, config, None, 0)
    eager, _ = train(info, config, state_dtype, 20)
    fused, _ = train(info, config, state_dtype, 20, backend="fused")
    for a, b, origin in zip(fused, eager, start, strict=True):
        moved = (b - origin).norm()
        assert (a - b).norm() <= 1e-3 * moved, ((a - b).norm() / moved).item()


@pytest.mark.parametrize(
    "state_dtype, expected",
    [(None, 8.0), (torch.float32, 8.0), (torch.bfloat16, 4.0), ("8bit", 2.1)],
    ids=["plain", "fp32", "bf16", "8bit"],
)
def test_bytes_of_state_per_parameter(state_dtype, expected):
    """Adam's persistent state per parameter, measured over the state tensors of a model of
    1 M params in 8 matrices (``step`` aside): float32 8.0 bytes, bfloat16 4.0, 8 bits at
    most 2.1 (two codes and two absmax per 256-element block: 2 + 8/256 = 2.03)."""
    params = [torch.zeros(512, 256, requires_grad=True) for _ in range(8)]
    optimizer = adamkit.Adam(params, state_dtype=state_dtype)
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    total = sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in compact_entries(state).values()
    )
    per_param = total / sum(p.numel() for p in params)
    if state_dtype == "8bit":
        assert per_param == pytest.approx(2 + 8 / 256) and per_param <= expected
    else:
        assert per_param == expected


def test_a_default_optimizer_decodes_8bit_state_it_loads():
    """An 8-bit state dict loaded into an optimizer whose groups keep plain state (the
    group saved without ``state_dtype``) holds float32 state, the decoded codes."""
    (weight, _), optimizer = train(OPTIM_DB[3], {}, "8bit", 5)
    saved = copy.deepcopy(optimizer.state_dict())
    for group in saved["param_groups"]:
        del group["state_dtype"]
    plain = adamkit.Adam([weight.detach().clone().requires_grad_(), torch.zeros(96)])
    plain.load_state_dict(saved)
    state = plain.state[plain.param_groups[0]["params"][0]]
    codes = optimizer.state[weight]
    for name, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        decoded = precision.dequantize(codes[name], codes[name + "_absmax"], signed)
        assert state[name].dtype == torch.float32 and torch.equal(state[name], decoded)
        assert name + "_absmax" not in state


def test_8bit_codes_without_their_block_maxima_are_refused():
    """A state dict whose 8-bit codes lack their absmax entry (or hold one of the wrong
    size) is refused before anything changes, naming the param, the entry and its shape."""
    (weight, _), optimizer = train(OPTIM_DB[3], {}, "8bit", 2)
    for broken in (None, torch.ones(3)):
        saved = copy.deepcopy(optimizer.state_dict())
        if broken is None:
            del saved["state"][0]["exp_avg_absmax"]
        else:
            saved["state"][0]["exp_avg_absmax"] = broken
        before = copy.deepcopy(optimizer.state[weight])
        with pytest.raises(
            ValueError,
            match=r"^group 0, param 0: 8-bit state 'exp_avg' needs "
            r"'exp_avg_absmax' of shape \(24,\)",
        ):
            optimizer.load_state_dict(saved)
        for name, value in before.items():
            assert torch.equal(optimizer.state[weight][name], value)


def test_a_nan_in_one_param_reaches_no_other_param():
    """With compact state the default (torch's) non-finite behaviour holds: a NaN gradient
    in one param reaches that param and its state, never another param's."""
    params = [torch.zeros(SIZE, requires_grad=True) for _ in range(2)]
    optimizer = adamkit.Adam(params, state_dtype="8bit")
    params[0].grad = torch.full(SIZE, float("nan"))
    params[1].grad = torch.ones(SIZE)
    optimizer.step()
    assert params[0].isnan().all()
    assert torch.isfinite(params[1]).all() and (params[1] != 0).all()
    state = optimizer.state[params[1]]
    assert torch.isfinite(state["exp_avg_absmax"]).all()


@pytest.mark.parametrize("state_dtype", COMPACT, ids=["bf16", "8bit"])
def test_float64_and_small_params_keep_plain_state(state_dtype):
    """float64 params keep float64 state and params under MIN_ELEMENTS elements float32
    state, whatever ``state_dtype`` asks: their state is a small part of the memory."""
    big64 = torch.zeros(SIZE, dtype=torch.float64, requires_grad=True)
    small = torch.zeros(precision.MIN_ELEMENTS - 1, requires_grad=True)
    optimizer = adamkit.Adam([big64, small], state_dtype=state_dtype)
    big64.grad, small.grad = torch.ones_like(big64), torch.ones_like(small)
    optimizer.step()
    assert {v.dtype for v in compact_entries(optimizer.state[big64]).values()} == {torch.float64}
    assert {v.dtype for v in compact_entries(optimizer.state[small]).values()} == {torch.float32}


def test_fused_8bit_blocks_are_each_params_own():
    """Two params of 4100 and 5110 elements (not multiples of 256) in one fused layout:
    each starts a block, so its block maxima are those of the eager step (17 and 20 blocks,
    equal within float32 rounding) and the params stay within 1e-6 of the eager run's; a
    block shared by the two params would give the second param the first's maxima."""
    results = []
    for backend in ("eager", "fused"):
        generator = torch.Generator().manual_seed(3)
        params = [
            (torch.randn(4100, generator=generator) * 100).requires_grad_(),
            torch.randn(70, 73, generator=generator).requires_grad_(),
        ]
        optimizer = adamkit.Adam(params, lr=1e-2, state_dtype="8bit", backend=backend)
        for _ in range(10):
            for param in params:
                param.grad = torch.randn(param.shape, generator=generator) * param.detach()
            optimizer.step()
        results.append((params, optimizer))
    (eager, eager_optimizer), (fused, fused_optimizer) = results
    for a, b in zip(fused, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        for name in ("exp_avg_absmax", "exp_avg_sq_absmax"):
            kept, expected = fused_optimizer.state[a][name], eager_optimizer.state[b][name]
            assert kept.shape == expected.shape == (precision.blocks_of(b.numel()),)
            torch.testing.assert_close(kept, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("state_dtype", [torch.float32, *COMPACT], ids=["fp32", "bf16", "8bit"])
def test_bfloat16_params_with_other_state_on_both_backends(state_dtype):
    """bfloat16 params with float32, bfloat16 or 8-bit state: the params stay bfloat16, the
    state takes the asked form, and the fused backend (which steps the param in float32 with
    its decoded state, rounded once, as the eager one does) ends within a bfloat16 rounding
    of the eager backend after 10 steps."""
    results = []
    for backend in ("eager", "fused"):
        generator = torch.Generator().manual_seed(5)
        param = torch.randn(SIZE, generator=generator).bfloat16().requires_grad_()
        optimizer = adamkit.Adam([param], lr=1e-2, state_dtype=state_dtype, backend=backend)
        for _ in range(10):
            param.grad = torch.randn(SIZE, generator=generator).bfloat16()
            optimizer.step()
        state = optimizer.state[param]
        assert param.dtype == torch.bfloat16
        expected = torch.uint8 if state_dtype == "8bit" else state_dtype
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == expected
        results.append(param.detach().float())
    torch.testing.assert_close(results[1], results[0], rtol=2**-7, atol=1e-6)
