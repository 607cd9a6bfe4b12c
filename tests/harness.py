"""The standard fixtures of the suite: parameters, gradient scripts, a schedule, a runner."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

SHAPES = [(3, 4), (5,), ()]


def make_params(dtype: torch.dtype, seed: int = 0, shapes=SHAPES) -> list[Tensor]:
    """Random params; those of 2 or more dims with unit-norm slices ``p[j]``, the weight
    vectors ND-Adam needs at the start (any other optimizer takes them as they come)."""
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        param = torch.randn(shape, generator=generator, dtype=torch.float64)
        if param.ndim >= 2:
            param /= param.flatten(1).norm(dim=1).view(-1, *[1] * (param.ndim - 1))
        params.append(param.to(dtype))
    return params


def gradient_script(
    steps: int, dtype: torch.dtype, seed: int = 1, shapes=SHAPES
) -> list[list[Tensor]]:
    """Random gradients, with large (×500) values every 7th step and tiny (×1e-3) every 11th."""
    generator = torch.Generator().manual_seed(seed)
    script = []
    for t in range(1, steps + 1):
        scale = 500.0 if t % 7 == 0 else 1e-3 if t % 11 == 0 else 1.0
        script.append([scale * torch.randn(s, generator=generator, dtype=dtype) for s in shapes])
    return script


def default_twin(torch_cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """torch's flags whose numbers adamkit's default (``backend="auto"``) gives for
    ``torch_cls(params, **kwargs)``: ``fused=True`` where torch constructs and steps its
    fused kernel for these options, none (its default) elsewhere."""
    params = [param.requires_grad_() for param in make_params(torch.get_default_dtype())]
    try:
        optimizer = torch_cls(params, **kwargs, fused=True)
        for param in params:
            param.grad = torch.ones_like(param)
        optimizer.step()
    except (RuntimeError, TypeError, ValueError):
        return {}
    return {"fused": True}


def multipliers(steps: int) -> list[float]:
    """A schedule multiplier η_t in [0.5, 1] that changes every step."""
    return [0.75 + 0.25 * math.cos(2 * math.pi * t / 50) for t in range(1, steps + 1)]


def scheduled_lr(base: float | Tensor, eta: float) -> float | Tensor:
    return base * eta if isinstance(base, Tensor) else float(base) * eta


def run(
    optimizer: torch.optim.Optimizer,
    params: list[Tensor],
    script: list[list[Tensor]],
    etas: list[float] | None = None,
    on_step: Callable[[int], Any] | None = None,
) -> list[Any]:
    """Feed ``script`` to ``optimizer``, setting each group's lr to initial_lr·η_t first
    (``initial_lr`` as torch's LR schedulers record it). Returns ``on_step(t)`` per step."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    out = []
    for t, grads in enumerate(script, start=1):
        if etas is not None:
            for group in optimizer.param_groups:
                group["lr"] = scheduled_lr(group["initial_lr"], etas[t - 1])
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad.clone()
        optimizer.step()
        if on_step is not None:
            out.append(on_step(t))
    return out


def snapshot(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> list[dict[str, Any]]:
    """Each param and its state, cloned."""
    return [
        {"param": p.detach().clone(), **{k: _clone(v) for k, v in optimizer.state[p].items()}}
        for p in params
    ]


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, Tensor) else value


def leaves(dtype: torch.dtype, seed: int = 0, shapes=SHAPES) -> list[Tensor]:
    return [p.requires_grad_() for p in make_params(dtype, seed, shapes)]
