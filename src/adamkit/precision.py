"""Optimizer state in bfloat16 or in 8 bits: the codes, and how a compact state is stored.

A state tensor is stored compact and steps in float32: the backend decodes it, the rule's
update (the same function as for float32 state) advances the float32 copy, and the backend
encodes the result back. So there is one definition of each algorithm's math, whatever the
state's precision.

* ``torch.bfloat16``: the state tensor in bfloat16, rounded stochastically: the float32
  value is rounded up with the probability of its distance to the lower bfloat16 neighbour,
  so the rounding is unbiased and small updates are not lost on average (round to nearest
  would drop every update below half an ulp of the state). The random bits are a hash of the
  value's bfloat16 half, the step and the state's name: reproducible, the same on every
  backend, and a resumed run draws what the uninterrupted one drew.
* ``"8bit"``: block-wise dynamic quantization (Dettmers, Lewis, Shleifer & Zettlemoyer,
  *8-bit Optimizers via Block-wise Quantization*, ICLR 2022). The state is cut into blocks
  of :data:`BLOCK` elements; each block keeps its absolute maximum in float32 and every
  element the code of the block-normalised value x/absmax in [−1, 1]. The code is dynamic
  tree quantization: after the sign bit (signed states), the number of zero bits before the
  first 1 is a decimal exponent e, the bits after it a linear fraction, so a code stands for
  ±10^−e·(0.1 + 0.9·k/2^f) with f fraction bits. Its relative precision is about the same
  from 1 down to 10^−6 (10^−7 unsigned). States that are never negative (second moments,
  Adagrad's sum, Adamax's maximum) use the unsigned code, where the sign bit is one more
  exponent or fraction bit, as the paper does for Adam's second state.

Tensors of fewer than :data:`MIN_ELEMENTS` elements keep float32 state, as bitsandbytes
does: they are a negligible part of the memory, and often biases and norms whose precision
matters most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

BLOCK = 256  # elements per 8-bit block, each with one float32 absolute maximum
MIN_ELEMENTS = 4096  # smaller state tensors stay float32
EIGHT_BIT = "8bit"
STATE_DTYPES = (None, torch.float32, torch.bfloat16, EIGHT_BIT)


def check_state_dtype(value: Any) -> None:
    """Refuse anything but the state precisions on offer, naming the value."""
    if value is not None and not isinstance(value, torch.dtype | str):
        raise TypeError(f"state_dtype must be a torch.dtype, a str or None, got {value!r}")
    if value not in STATE_DTYPES:
        raise ValueError(
            f"Invalid state_dtype value: {value!r} (None for the param's dtype, "
            f"torch.float32, torch.bfloat16 or {EIGHT_BIT!r})"
        )


ABSMAX = "_absmax"  # the state entry of an 8-bit state's block maxima: name + ABSMAX


def storage(state_dtype: Any, dtype: torch.dtype, numel: int) -> Any:
    """How a state tensor of ``numel`` elements, for a param of ``dtype``, is kept under
    ``state_dtype``: None (plain: in the param's dtype, torch's way), torch.float32,
    torch.bfloat16 or ``"8bit"``. float64 and complex params keep plain state; state
    tensors of fewer than :data:`MIN_ELEMENTS` elements stay float32."""
    if state_dtype is None or dtype == torch.float64 or dtype.is_complex:
        return None
    if state_dtype == torch.float32 or numel < MIN_ELEMENTS:
        return None if dtype == torch.float32 else torch.float32
    return state_dtype


def decode(stored: Sequence[Tensor], signed: bool) -> Tensor:
    """The float32 value of a state kept as ``stored``: (8-bit codes, block maxima) are
    dequantized, a bfloat16 tensor upcast (both new tensors); a float32 tensor is itself."""
    if len(stored) == 2:
        return dequantize(stored[0], stored[1], signed)
    return stored[0].float()


def encode(value: Tensor, kept: Any, signed: bool, key: Tensor | int) -> tuple[Tensor, ...]:
    """``value`` (float32) in the form ``kept`` (see :func:`storage`): (codes, block maxima)
    for ``"8bit"``, (bfloat16 rounded stochastically with ``key``,) or (``value``,)."""
    if kept == EIGHT_BIT:
        return quantize(value, signed)
    if kept == torch.bfloat16:
        return (round_bfloat16(value, key),)
    return (value,)


def stored_parts(state: dict[str, Any], name: str) -> tuple[Tensor, ...]:
    """The entries state ``name`` is kept in: its codes and block maxima, or itself."""
    if state[name].dtype == torch.uint8:
        return state[name], state[name + ABSMAX]
    return (state[name],)


def unpack(state: dict[str, Any], name: str, signed: bool) -> Tensor:
    """The float32 value of state ``name`` as it is stored (see :func:`decode`)."""
    return decode(stored_parts(state, name), signed)


def pack(
    state: dict[str, Any], name: str, value: Tensor, kept: Any, signed: bool, key: int
) -> None:
    """Store ``value`` (float32) as state ``name`` kept as ``kept`` (see :func:`storage`;
    not None): in place where the state already has that form, else replacing it (a state
    loaded in another precision takes the group's at its first step)."""
    if kept == torch.float32 and value is state.get(name):
        return  # float32 state, updated in place
    names = (name, name + ABSMAX) if kept == EIGHT_BIT else (name,)
    if kept != EIGHT_BIT:
        state.pop(name + ABSMAX, None)
    for entry, new in zip(names, encode(value, kept, signed, key), strict=True):
        old = state.get(entry)
        if old is not None and old.dtype == new.dtype and old.shape == new.shape:
            old.copy_(new)
        else:
            state[entry] = new


# bfloat16, rounded stochastically ----------------------------------------------------------

_MASK32 = 0xFFFFFFFF


def _mix(x: Tensor) -> Tensor:
    """A 32-bit integer hash (xorshift-multiply rounds) of int32 tensors; products wrap
    around, as int32 arithmetic does in torch and in vector registers."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x1B873593
    return x ^ (x >> 16)


def salt(step: int, name: str) -> int:
    """The per-step, per-state key of the rounding's random bits (below 2^31)."""
    key = sum(ord(c) * 31**i for i, c in enumerate(name)) & _MASK32
    return (step * 0x9E3779B9 + key) & 0x7FFFFFFF


def round_bfloat16(value: Tensor, key: Tensor | int) -> Tensor:
    """``value`` (float32) rounded stochastically to bfloat16: 16 random bits are added to
    its low half, which is then cut off. ``key`` (:func:`salt`) picks the random bits; the
    same value and key always round the same way. NaN stays NaN, ±Inf stays ±Inf."""
    bits = value.view(torch.int32)
    # a hash of the kept half only: values one float32 ulp apart (two backends' roundings
    # of the same sum) round the same way, except where their cut half straddles the draw
    noise = _mix((bits >> 16) ^ key) & 0xFFFF
    # two's complement addition is the unsigned one: the carry runs into the magnitude bits
    rounded = ((bits + noise) & -65536).view(torch.float32)
    return torch.where(value == value, rounded, value).to(torch.bfloat16)


# 8 bits, block-wise dynamic tree quantization ------------------------------------------------


def _decades(signed: bool) -> int:
    """Decimal exponents of the code: 7 after a sign bit, 8 without one."""
    return 7 if signed else 8


def dynamic_code(signed: bool) -> Tensor:
    """The 256 values of the dynamic tree code, float32, indexed by the code (an unsigned
    byte). Unsigned: code j > 0 has its highest set bit at position f, so e = 7 − f zero
    bits before it and the fraction k − 1 = j − 2^f in the f bits after; value
    10^−e·(0.1 + 0.9·k/2^f). Signed: the same on 7 bits, bit 7 the sign."""
    return decode_codes(torch.arange(256, dtype=torch.uint8), signed)


def _pick(index: Tensor, values: list[float]) -> Tensor:
    """``values[index]`` for a float tensor of small whole numbers, by comparisons (a
    gather does not vectorise on the CPU): exactly one term is not 0."""
    return sum((index == i) * value for i, value in enumerate(values))  # type: ignore[return-value]


def decode_codes(codes: Tensor, signed: bool) -> Tensor:
    """The code's values (float32, in [−1, 1]) of uint8 ``codes``, computed from the bits:
    j the magnitude bits, 2^f its highest set bit (by comparisons, exact), e = E − 1 − f."""
    decades = _decades(signed)
    j = codes.float()
    if signed:
        negative = j >= 128
        j = torch.where(negative, j - 128, j)
    top = sum((j >= 2**i) * float(2 ** (i - 1) if i else 1) for i in range(decades))
    f = sum((j >= 2**i) * 1.0 for i in range(1, decades))
    scale = _pick(f, [10.0 ** -(decades - 1 - i) for i in range(decades)])
    magnitude = torch.where(j > 0, scale * (0.1 + 0.9 * (j - top + 1) / top), 0.0)
    return torch.where(negative, -magnitude, magnitude) if signed else magnitude


def encode_magnitude(y: Tensor, signed: bool) -> Tensor:
    """The code (float, a whole number) of the value in the dynamic code nearest to
    ``y`` ∈ [0, 1]: the decade e by comparisons with the powers of 10, then the nearest of
    its 2^f linear steps. A value in the gap below a decade's first step rounds to that
    step or to the next decade's top, both codes of the same formula (k = 0 is the top of
    the decade below)."""
    decades = _decades(signed)
    e = sum((y < 10.0**-i) * 1.0 for i in range(1, decades))
    levels = _pick(e, [2.0 ** (decades - 1 - i) for i in range(decades)])  # 2^f
    k = torch.round((y * _pick(e, [10.0**i for i in range(decades)]) - 0.1) * levels / 0.9)
    code = levels + torch.minimum(k.clamp(min=0), levels) - 1
    # unsigned (second moments): a value above 0 never rounds to 0, where Adam's step
    # m/(√v + ε) would be m/ε (the zero-point problem, Li, Chen & Zhu 2023)
    return code.clamp(min=0) if signed else torch.where(y > 0, code.clamp(min=1), 0.0)


def blocks(flat: Tensor) -> Tensor:
    """``flat`` (1-D) as rows of :data:`BLOCK` elements, the last padded with zeros."""
    padding = -flat.numel() % BLOCK
    if padding:
        flat = torch.nn.functional.pad(flat, (0, padding))
    return flat.view(-1, BLOCK)


def quantize(value: Tensor, signed: bool) -> tuple[Tensor, Tensor]:
    """``value`` (float32) as 8-bit codes shaped like it and one float32 absolute maximum
    per block of its elements in row-major order."""
    rows = blocks(value.reshape(-1))
    absmax = rows.abs().amax(dim=1, keepdim=True)
    y = torch.where(absmax > 0, rows / absmax, 0.0)
    code = encode_magnitude(y.abs(), signed)
    if signed:
        code = code + 128.0 * (y < 0)
    codes = code.to(torch.uint8).view(-1)[: value.numel()].view(value.shape)
    return codes, absmax.view(-1)


def dequantize(codes: Tensor, absmax: Tensor, signed: bool) -> Tensor:
    """The float32 values that ``codes`` and the blocks' ``absmax`` stand for."""
    rows = blocks(decode_codes(codes.reshape(-1), signed))
    return (rows * absmax.view(-1, 1)).view(-1)[: codes.numel()].view(codes.shape)


def blocks_of(numel: int) -> int:
    return math.ceil(numel / BLOCK)


def loaded_entries(
    entries: dict[str, Tensor], param: Tensor, state_dtype: Any, signed: dict[str, bool]
) -> dict[str, Tensor]:
    """State entries of ``param`` as a loaded state dict held them, kept in their own dtype
    on the param's device; 8-bit codes that the group keeps plain (``state_dtype`` None)
    are decoded into the param's dtype, the state torch would hold."""
    loaded = {}
    for name, value in entries.items():
        if name.endswith(ABSMAX) and name[: -len(ABSMAX)] in entries:
            continue  # with its codes
        if value.dtype == torch.uint8 and name + ABSMAX in entries:
            absmax = entries[name + ABSMAX]
            if storage(state_dtype, param.dtype, value.numel()) is None:
                loaded[name] = dequantize(value, absmax, signed[name]).to(param.dtype)
            else:
                loaded[name + ABSMAX] = absmax.to(param.device)
        loaded[name] = loaded.get(name, value).to(param.device)
    return loaded
