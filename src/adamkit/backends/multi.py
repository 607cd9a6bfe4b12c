"""Many tensors as one operand of a rule's update: each op one ``torch._foreach_*`` call.

A rule's :meth:`~adamkit.rule.Rule.update` is written once, for a tensor. Given
:class:`TensorList` operands instead (params, gradients and each state of many params of
one dtype and device), the same code runs every op over all of them at once: one Python
call per op instead of one per op and param, which is what a step over many small params
costs. Each ``torch._foreach_*`` op computes every tensor as the op on that tensor would
(on the CPU it runs that op per tensor), so the numbers are the per-tensor numbers, bit for
bit. Only the ops the rules of :data:`MULTI_TENSOR_RULES` use are provided; reductions
(SWATS, ND-Adam) have no multi-tensor form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

_CONSTANTS: dict[tuple[float, float, torch.dtype], Tensor] = {}


def constant(value: float, dtype: torch.dtype) -> Tensor:
    """``value`` as a 0-dim CPU tensor of ``dtype``, made once: making one costs ≈ 3 µs, and
    the ops that take it only read it. The last 256 values are kept (a schedule's lr
    changes at every step); -0.0 and 0.0 are kept apart."""
    key = (value, math.copysign(1.0, value), dtype)
    tensor = _CONSTANTS.get(key)
    if tensor is None:
        if len(_CONSTANTS) >= 256:
            _CONSTANTS.clear()
        tensor = _CONSTANTS[key] = torch.tensor(value, dtype=dtype)
    return tensor


def _operands(other: Any, like: TensorList) -> Any:
    """The tensors of a TensorList; a number on the CPU as a 0-dim tensor of ``like``'s
    dtype (:func:`constant`), the same product or sum (the op rounds the number to that
    dtype either way) without the per-tensor cost torch pays for a Python number there (≈
    2 µs per tensor on 2 CPU cores: 26 µs against 8 µs for a multiply of 10 small
    tensors); elsewhere as it is."""
    if isinstance(other, TensorList):
        return other.tensors
    if isinstance(other, float) and like.tensors[0].is_cpu:
        return constant(other, like.dtype)
    return other


def _addends(other: Any, like: TensorList) -> Any:
    """:func:`_operands` for an addition: a 0-dim CPU tensor once per tensor, for torch's
    list form of the op, which runs 2-3 times faster there than its form with one tensor
    for all (10 tensors of 1 000 elements: 6 µs against 17.5 µs in place, 10 µs against
    22.5 µs out of place); the same sums."""
    operand = _operands(other, like)
    if isinstance(operand, Tensor) and operand.dim() == 0 and like.tensors[0].is_cpu:
        return [operand] * len(like.tensors)
    return operand


class TensorList:
    """Tensors of one dtype and device, each op applied to every one of them."""

    __slots__ = ("tensors",)
    requires_grad = False  # multi-tensor steps run without autograd only

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self.tensors = list(tensors)

    @property
    def dtype(self) -> torch.dtype:
        return self.tensors[0].dtype

    def clone(self) -> TensorList:
        return TensorList([tensor.clone() for tensor in self.tensors])

    def __neg__(self) -> TensorList:
        return TensorList(torch._foreach_neg(self.tensors))

    def abs(self) -> TensorList:
        return TensorList(torch._foreach_abs(self.tensors))

    def sqrt(self) -> TensorList:
        return TensorList(torch._foreach_sqrt(self.tensors))

    def sqrt_(self) -> TensorList:
        torch._foreach_sqrt_(self.tensors)
        return self

    def add(self, other: Any, *, alpha: float = 1) -> TensorList:
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_add(self.tensors, other.tensors, alpha=alpha))
        return TensorList(torch._foreach_add(self.tensors, _addends(other, self)))

    def add_(self, other: Any, *, alpha: float = 1) -> TensorList:
        if isinstance(other, TensorList):
            torch._foreach_add_(self.tensors, other.tensors, alpha=alpha)
        else:
            torch._foreach_add_(self.tensors, _addends(other, self))
        return self

    def mul(self, other: Any) -> TensorList:
        return TensorList(torch._foreach_mul(self.tensors, _operands(other, self)))

    def mul_(self, other: Any) -> TensorList:
        torch._foreach_mul_(self.tensors, _operands(other, self))
        return self

    def div(self, other: Any) -> TensorList:
        return TensorList(torch._foreach_div(self.tensors, _operands(other, self)))

    __truediv__ = div

    def lerp_(self, end: TensorList, weight: float) -> TensorList:
        torch._foreach_lerp_(self.tensors, end.tensors, weight)
        return self

    def addcmul(self, first: TensorList, second: TensorList, *, value: float = 1) -> TensorList:
        return TensorList(
            torch._foreach_addcmul(self.tensors, first.tensors, second.tensors, value)
        )

    def addcmul_(self, first: TensorList, second: TensorList, *, value: float = 1) -> TensorList:
        torch._foreach_addcmul_(self.tensors, first.tensors, second.tensors, value)
        return self

    def addcdiv_(self, first: TensorList, second: TensorList, *, value: float = 1) -> TensorList:
        torch._foreach_addcdiv_(self.tensors, first.tensors, second.tensors, value)
        return self

    def maximum_(self, other: TensorList) -> TensorList:
        torch._foreach_maximum_(self.tensors, other.tensors)
        return self
