"""The ``torch.optim.Optimizer`` subclass that runs a rule over param groups via a backend."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from adamkit.backends import get_backend
from adamkit.rule import Rule, scalar_dtype

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


class RuleOptimizer(torch.optim.Optimizer):
    """Runs ``rule`` over every param group: drop-in for ``torch.optim``.

    Subclasses set ``rule`` and pass their hyperparameters as ``defaults``. Every group is
    validated when it is added (constructor and :meth:`add_param_group`), so a bad value in
    a per-group dict fails as early as a bad constructor argument.
    """

    rule: ClassVar[Rule]

    def __init__(self, params: Params, defaults: dict[str, Any], *, backend: str = "eager"):
        self.rule.validate(defaults)
        self.backend = backend
        self._step_group = get_backend(backend)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self.rule.validate(group)
            if not self.rule.supports_complex and any(p.is_complex() for p in group["params"]):
                raise ValueError(f"{self.rule.name} does not support complex parameters")
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, on a copy: torch keeps the passed ``step`` tensors (and
        any tensor already of the param's dtype and device) by reference, so the next step
        would advance the caller's dict, or a second optimizer loaded from it."""
        super().load_state_dict(copy.deepcopy(state_dict))

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            self.rule.complete(group, self.defaults)
        for param_state in self.state.values():
            # torch's SGD keeps no step counter: a loaded state that holds tensors has taken
            # at least one step, which is all its momentum buffer needs to know.
            if param_state and "step" not in param_state:
                param_state["step"] = torch.tensor(1.0, dtype=scalar_dtype())

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Args:
            closure: re-evaluates the model and returns the loss; run with grad enabled.

        Returns:
            The closure's loss, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with_grad = [
            [p for p in group["params"] if p.grad is not None] for group in self.param_groups
        ]
        for params in with_grad:
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{self.rule.name} does not support sparse gradients")
        for group, params in zip(self.param_groups, with_grad, strict=True):
            if params:
                self._step_group(self.rule, group, params, self.state)
        return loss
