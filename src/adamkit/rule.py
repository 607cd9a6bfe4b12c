"""What a rule is: one optimizer algorithm's math, independent of how it is run.

A rule names and checks its hyperparameters, creates per-parameter state, computes the
per-step scalars and applies the element-wise update in place. Backends run rules over
tensors and never restate the math.

The split between :meth:`Rule.options` and :meth:`Rule.scalars` is what lets a compiled
backend generate one kernel per rule: options are the static choices (booleans and strings
that pick a code path or a state tensor), scalars are every number the update reads
(learning rate, betas, bias corrections). A kernel is compiled once per options value and
receives the scalars as arguments, so changing a number never changes the code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

Group = Mapping[str, Any]
State = dict[str, Any]
Scalars = Mapping[str, Any]
# What an update returns for a group-level decision: named partial sums over its param,
# added up over the group by :meth:`Rule.finish_group` (SWATS' projections)
Sums = Mapping[str, Tensor]


def scalar_dtype() -> torch.dtype:
    """The dtype of 0-dim state such as ``step``: float64 under a float64 default dtype,
    float32 otherwise (torch.optim's convention, so state dicts match)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class Rule(ABC):
    """One optimizer algorithm, as the pieces a backend needs.

    ``step`` is counted by the backend (``state["step"]``, a 0-dim tensor, torch's
    convention) and advanced before :meth:`scalars` is called, so ``t`` starts at 1.
    """

    name: ClassVar[str]
    # 0-dim state besides ``step`` (NAdam's ``mu_product``): created before :meth:`scalars`,
    # kept in :func:`scalar_dtype` and never cast to the param's dtype on load, like ``step``
    scalar_state_names: ClassVar[tuple[str, ...]] = ()
    supports_complex: ClassVar[bool] = True

    @abstractmethod
    def validate(self, group: Group) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first bad hyperparameter."""

    def complete(self, group: dict[str, Any], defaults: Group) -> None:
        """Fill the keys a loaded group lacks (torch.optim's state dicts lack adamkit's
        options) from ``defaults``."""
        for name, default in defaults.items():
            group.setdefault(name, default)

    @abstractmethod
    def options(self, group: Group) -> Hashable:
        """The static choices of this group: hashable, no per-step numbers."""

    @abstractmethod
    def state_names(self, options: Any) -> tuple[str, ...]:
        """The parameter-shaped state tensors these options need."""

    def init_state(self, name: str, param: Tensor, options: Any) -> Tensor:
        """The initial value of state ``name`` for ``param``: zeros shaped like it."""
        return torch.zeros_like(param, memory_format=torch.preserve_format)

    @abstractmethod
    def scalars(self, group: Group, state: State, options: Any) -> Scalars:
        """Every number the update reads, for this parameter at this step.

        Called before missing parameter-shaped state is created, so a rule can tell a
        buffer that starts this step (torch's SGD starts its buffer at the gradient). May
        advance scalar state (``mu_product``); never touches parameter-shaped tensors."""

    @abstractmethod
    def update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: Any
    ) -> Sums | None:
        """Apply one step in place: element-wise torch operations on ``param`` and the
        parameter-shaped entries of ``state``. ``grad`` is read-only (already negated for
        ``maximize``); complex tensors arrive as their real views.

        A rule that decides something over the whole group returns its partial sums over
        this param; they reach :meth:`finish_group`."""

    def prepare_group(  # noqa: B027 (an optional hook: most rules need none)
        self, group: Group, params: Sequence[Tensor], states: Mapping[Tensor, State], options: Any
    ) -> None:
        """Before the group's updates, after each param's step counter advanced: set up the
        group-level state of ``params`` (the group's params that have a gradient)."""

    def finish_group(  # noqa: B027 (an optional hook: most rules need none)
        self,
        group: Group,
        params: Sequence[Tensor],
        states: Mapping[Tensor, State],
        sums: Sequence[Sums | None],
        options: Any,
    ) -> None:
        """After the group's updates: decide what depends on the whole group, from what each
        update of ``params`` returned (in the same order)."""
