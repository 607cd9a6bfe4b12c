"""The ``torch.optim.Optimizer`` subclass that runs a rule over param groups via a backend."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any, ClassVar

import torch
from torch import Tensor

from adamkit.backends import BACKENDS, Backend, check_backend, choose_backend
from adamkit.backends.fused import FusedBackend
from adamkit.rule import GroupStep, Rule, scalar_dtype

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


class RuleOptimizer(torch.optim.Optimizer):
    """Runs ``rule`` over every param group: drop-in for ``torch.optim``.

    Subclasses set ``rule`` and pass their hyperparameters as ``defaults``. Every group is
    validated when it is added (constructor and :meth:`add_param_group`), so a bad value in
    a per-group dict fails as early as a bad constructor argument.
    """

    rule: ClassVar[Rule]
    # torch.amp.GradScaler then sets ``grad_scale`` and ``found_inf`` instead of unscaling
    _step_supports_amp_scaling = True

    def __init__(self, params: Params, defaults: dict[str, Any], *, backend: str = "eager"):
        self.rule.validate(defaults)
        check_backend(backend)
        self.backend = backend
        self._runner: Backend | None = None
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group, dict):
            self.rule.complete(param_group, self.defaults)
        super().add_param_group(param_group)
        try:
            group = self.param_groups[-1]
            self.rule.validate(group)
            seen: set[int] = set()
            for index, param in enumerate(group["params"]):
                if id(param) in seen:
                    # torch warns and steps it twice (the fused backend could not): refused
                    raise ValueError(f"parameter {index} of the group appears in it twice")
                seen.add(id(param))
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, with two differences.

        It works on a copy: torch keeps the passed ``step`` tensors (and any tensor already of
        the param's dtype and device) by reference, so the next step would advance the
        caller's dict, or a second optimizer loaded from it. And scalar state such as
        ``mu_product`` keeps its dtype, like ``step``: torch casts it to the param's dtype,
        which in bf16 changes the step size after a resume.
        """
        state_dict = copy.deepcopy(state_dict)
        names = self.rule.scalar_state_names
        scalar_state = {
            key: {name: values.pop(name) for name in names if name in values}
            for key, values in state_dict.get("state", {}).items()
        }
        super().load_state_dict(state_dict)
        saved_ids = chain.from_iterable(group["params"] for group in state_dict["param_groups"])
        params = chain.from_iterable(group["params"] for group in self.param_groups)
        for key, param in zip(saved_ids, params, strict=True):
            self.state[param].update(scalar_state.get(key, {}))
        for param_state in self.state.values():
            for name in ("step", *names):
                if name in param_state and not isinstance(param_state[name], Tensor):
                    # state dicts of torch < 1.12 hold the step as a Python number
                    param_state[name] = torch.tensor(float(param_state[name]), dtype=scalar_dtype())

    def __getstate__(self) -> dict[str, Any]:
        # the runner's caches (flat buffers) are rebuilt on the copy's first step
        return {**super().__getstate__(), "backend": self.backend, "_runner": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "backend" in state:  # pickling; load_state_dict keeps the optimizer's backend
            self.backend = state.pop("backend")
            self._runner = state.pop("_runner", None)
        super().__setstate__(state)
        for group in self.param_groups:
            self.rule.complete(group, self.defaults)
            self.rule.validate(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad``. On the fused backend, ``set_to_none=False`` also makes each
        gradient a view of the flat gradient buffer (zeroed), so that backward accumulates
        into it and the step copies no gradient."""
        super().zero_grad(set_to_none)
        if not set_to_none and isinstance(self._runner, FusedBackend):
            self._runner.adopt_grads([p for g in self.param_groups for p in g["params"]])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Under ``torch.amp.GradScaler`` (``scaler.step(optimizer)``), the scaler sets
        ``grad_scale`` and ``found_inf`` as for torch's fused optimizers: gradients are
        divided by the scale inside the step (``p.grad`` is left as it is), and a step whose
        gradients held an inf or NaN changes nothing, the step count included.

        Args:
            closure: re-evaluates the model and returns the loss; run with grad enabled.

        Returns:
            The closure's loss, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and found_inf.item():
            return loss  # GradScaler saw an inf or NaN: params, state and step untouched
        grad_scale = getattr(self, "grad_scale", None)
        if self._runner is None:
            size = sum(p.numel() for group in self.param_groups for p in group["params"])
            self._runner = BACKENDS[choose_backend(self.backend, size)]()
        step_group = self._runner.step_group
        with_grad = [
            [p for p in group["params"] if p.grad is not None] for group in self.param_groups
        ]
        for params in with_grad:
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{self.rule.name} does not support sparse gradients")
                if p.is_complex() and not self.rule.supports_complex:
                    raise RuntimeError(f"{self.rule.name} does not support complex parameters")
        self.rule.prepare_step(self.param_groups, with_grad, self.state)
        stepped = [
            GroupStep(group, params, step_group(self.rule, group, params, self.state, grad_scale))
            for group, params in zip(self.param_groups, with_grad, strict=True)
            if params
        ]
        self.rule.finish_step(self.param_groups, stepped, self.state)
        return loss
