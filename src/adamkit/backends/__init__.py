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


BACKENDS: dict[str, type[Backend]] = {"eager": EagerBackend, "fused": fused.FusedBackend}
CHOICES = (*BACKENDS, "auto")
# backend="auto" compiles only for optimizers of at least this many parameter elements:
# a kernel compiles in 2–3 s (8 s for the first one of a process) and saves about 1.7 ns per
# element and step on 2 CPU cores (Adam: 0.4 → 1.3 Gparam/s), so 1 M elements repay the
# compile within about 1 500 steps; smaller models never wait for one
AUTO_MIN_PARAMS = 1_000_000


def check_backend(name: str) -> None:
    if name not in CHOICES:
        raise ValueError(f"Invalid backend: {name!r}, expected one of {CHOICES}")


def choose_backend(name: str, size: int) -> str:
    """The backend that runs: ``name``, or for ``"auto"`` the fused one where the
    optimizer's ``size`` (parameter elements) repays the compile."""
    if name != "auto":
        return name
    return "fused" if size >= AUTO_MIN_PARAMS else "eager"
