"""Backends run any rule over tensors; they know no algorithm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from torch import Tensor

from adamkit.backends import eager, fused
from adamkit.rule import Group, Rule, Sums


class Backend(Protocol):
    def step_group(
        self,
        rule: Rule,
        group: Group,
        params: Sequence[Tensor],
        states: Any,
        grad_scale: Tensor | None = None,
    ) -> list[Sums | None]:
        """One step of ``rule`` for ``params`` (all with a gradient) of ``group``, their
        gradients divided by ``grad_scale`` where given; returns what each param's update
        returned, for :meth:`Rule.finish_step`."""
        ...


class EagerBackend:
    """Per tensor, plain torch operations: :func:`adamkit.backends.eager.step_group`."""

    step_group = staticmethod(eager.step_group)


BACKENDS: dict[str, type[Backend]] = {
    "eager": EagerBackend,
    "fused": fused.FusedBackend,
    "auto": fused.AutoBackend,
}
CHOICES = tuple(BACKENDS)


def check_backend(name: str) -> None:
    if name not in CHOICES:
        raise ValueError(f"Invalid backend: {name!r}, expected one of {CHOICES}")
