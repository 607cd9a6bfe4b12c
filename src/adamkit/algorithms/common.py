"""Pieces several algorithms share: hyperparameter checks, weight-decay modes, moment EMAs.

Each piece is written once here; the algorithms compose them.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from adamkit.backends.multi import TensorList
from adamkit.rule import Group

WEIGHT_DECAY_MODES = ("l2", "decoupled_lr", "decoupled_schedule")


# ---------------------------------------------------------------- hyperparameter checks


def as_float(name: str, value: Any) -> float:
    """A hyperparameter as a Python float; a Tensor must have exactly one element."""
    if type(value) is float:  # the common case, without the checks' cost on every step
        return value
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a float or a 1-element Tensor, got {value!r}")
    return float(value)


def hyperparameter(group: Group, name: str, value: Any = None) -> float | Tensor:
    """``group[name]`` (or ``value``, one of its entries) as a Python float, or as the 0-dim
    Tensor itself where the step differentiates it: a Tensor that requires grad under
    ``differentiable=True`` (torch's differentiable SGD, Adam and AdamW; the optimizer
    refuses one elsewhere, :meth:`Rule.hypergradients`)."""
    value = group[name] if value is None else value
    if isinstance(value, Tensor) and value.requires_grad and group.get("differentiable"):
        return value.squeeze()
    return as_float(name, value)


def check_lr(group: Group) -> None:
    if not 0.0 <= as_float("lr", group["lr"]):
        raise ValueError(f"Invalid learning rate: {group['lr']}")


def check_at_least_zero(group: Group, name: str) -> None:
    """torch's wording: ``Invalid <name> value: <value>`` for a negative value."""
    if not 0.0 <= as_float(name, group[name]):
        raise ValueError(f"Invalid {name} value: {group[name]}")


def check_eps(group: Group) -> None:
    if not 0.0 <= as_float("eps", group["eps"]):
        raise ValueError(f"Invalid epsilon value: {group['eps']}")


def check_betas(group: Group) -> None:
    betas = group["betas"]
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
        raise ValueError(f"betas must be a pair of floats, got {betas!r}")
    for index, beta in enumerate(betas):
        if not 0.0 <= as_float(f"betas[{index}]", beta) < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")


def check_choice(group: Group, name: str, choices: Sequence[Any]) -> None:
    if group[name] not in choices:
        raise ValueError(f"Invalid {name}: {group[name]!r}, expected one of {tuple(choices)}")


def check_bool(group: Group, name: str) -> None:
    if not isinstance(group[name], bool):
        raise TypeError(f"{name} must be a bool, got {group[name]!r}")


def check_weight_decay(group: Group) -> None:
    check_at_least_zero(group, "weight_decay")
    check_choice(group, "weight_decay_mode", WEIGHT_DECAY_MODES)
    if group.get("decoupled_weight_decay", False) and group["weight_decay_mode"] == "l2":
        raise ValueError("decoupled_weight_decay=True contradicts weight_decay_mode='l2'")


def check_adam_family(group: Group) -> None:
    """The checks every Adam-family rule shares: lr, eps, betas, weight decay, maximize."""
    check_lr(group)
    check_eps(group)
    check_betas(group)
    check_weight_decay(group)
    check_bool(group, "maximize")


# ---------------------------------------------------------------- weight decay


def weight_decay_mode(group: Group) -> str | None:
    """The group's weight-decay mode, or None when ``weight_decay`` is 0."""
    if as_float("weight_decay", group["weight_decay"]) == 0.0:
        return None
    return group["weight_decay_mode"]


def schedule_multiplier(group: Group) -> float:
    """η_t of Loshchilov & Hutter: the group's lr over the schedule's peak lr.

    The peak is ``max_lr`` where torch's OneCycleLR records it, else ``initial_lr``, which
    every torch LR scheduler records; without a scheduler η_t = 1, except at lr 0, where
    η_t = 0: a step at lr 0 with zero gradients changes nothing, which
    torch.distributed.checkpoint's ``set_optimizer_state_dict`` relies on (it creates the
    state of a fresh optimizer with such a step)."""
    lr = as_float("lr", group["lr"])
    peak = group.get("max_lr", group.get("initial_lr"))
    if peak is None:
        return 1.0 if lr else 0.0
    peak = as_float("max_lr", peak)
    return lr / peak if peak else 1.0


def weight_decay_scalar(group: Group, mode: str | None) -> float | Tensor:
    """The number :func:`apply_weight_decay` reads: λ for L2, the shrink factor otherwise.

    decoupled_lr:        θ ← θ·(1 − lr·λ)     (torch AdamW)
    decoupled_schedule:  θ ← θ·(1 − η_t·λ)    (Loshchilov & Hutter, Algorithms 1–2)

    With a Tensor lr the factor stays a 0-dim tensor, as in torch.optim: for a 0-dim
    float32 (or lower) param its dtype takes part in the product, and torch's numbers there
    depend on it.
    """
    weight_decay = hyperparameter(group, "weight_decay")
    if mode == "decoupled_lr":
        lr = group["lr"]
        return 1.0 - (lr.squeeze() if isinstance(lr, Tensor) else float(lr)) * weight_decay
    if mode == "decoupled_schedule":
        return 1.0 - schedule_multiplier(group) * weight_decay
    return weight_decay


def apply_weight_decay(
    param: Tensor, grad: Tensor, mode: str | None, value: float | Tensor
) -> Tensor:
    """L2 adds λθ to the gradient (returned, ``grad`` itself untouched); the decoupled
    modes shrink θ in place before the step. Returns the gradient the step then uses."""
    if mode is None:
        return grad
    if mode == "l2":
        # in place: torch.compile takes the alpha of an out-of-place add as a constant, so
        # a compiled step would keep the first λ it saw
        if differentiated(value):  # recorded with the param as it is now, as torch's
            return grad.addcmul(param.clone(), value)
        return grad.clone().add_(param, alpha=value)
    param.mul_(value)
    return grad


# ---------------------------------------------------------------- moments


def bias_correction(beta: float, step: float) -> float:
    """1 − β^t: the factor that unbiases a zero-initialised EMA (Kingma & Ba §3)."""
    return 1.0 - beta**step


def update_first_moment(exp_avg: Tensor, grad: Tensor, beta1: float) -> None:
    """m ← β1·m + (1 − β1)·g."""
    exp_avg.lerp_(grad, 1.0 - beta1)


def update_second_moment(exp_avg_sq: Tensor, grad: Tensor, beta2: float | Tensor) -> None:
    """v ← β2·v + (1 − β2)·g² (a differentiated β2: as a lerp towards g², as torch)."""
    if differentiated(beta2):
        exp_avg_sq.lerp_(grad.square(), 1.0 - beta2)
    else:
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)


def weight_decay_options(
    decoupled_weight_decay: bool | None, weight_decay_mode: str | None
) -> dict[str, Any]:
    """torch's ``decoupled_weight_decay`` flag (Adam, AdamW, NAdam) and ``weight_decay_mode``,
    either one deciding the other when it is not given: the flag means ``"decoupled_lr"``,
    and every mode but ``"l2"`` sets the flag. Both given and contradicting: left for
    :func:`check_weight_decay` to refuse."""
    if weight_decay_mode is None:
        weight_decay_mode = "decoupled_lr" if decoupled_weight_decay else "l2"
    if decoupled_weight_decay is None:
        decoupled_weight_decay = weight_decay_mode != "l2"
    return {
        "decoupled_weight_decay": decoupled_weight_decay,
        "weight_decay_mode": weight_decay_mode,
    }


def complete_with_decoupled_flag(group: dict[str, Any], defaults: Group) -> None:
    """Rule.complete for optimizers with torch's flag: a group that names only one of the
    two keys (a torch state dict names only the flag) gets the other from it."""
    if "weight_decay_mode" in group or "decoupled_weight_decay" in group:
        group.update(
            weight_decay_options(
                group.get("decoupled_weight_decay"), group.get("weight_decay_mode")
            )
        )
    for name, default in defaults.items():
        group.setdefault(name, default)


def betas(group: Group) -> tuple[float, float]:
    beta1, beta2 = group["betas"]
    return as_float("betas", beta1), as_float("betas", beta2)


# ---------------------------------------------------------------- in place, unless recorded


def differentiated(value: Any) -> bool:
    """Whether a number of the step is a Tensor that autograd differentiates (a
    :func:`hyperparameter` or a number computed from one); the fused backend's numbers
    never are."""
    return isinstance(value, Tensor) and value.requires_grad


def add_scaled_(target: Tensor, tensor: Tensor, scale: float | Tensor) -> Tensor:
    """``target`` += scale·``tensor`` in place; a differentiated scale as a product, which
    autograd records (torch's differentiable SGD: ``addcmul_``)."""
    if differentiated(scale):
        return target.addcmul_(tensor, scale)
    return target.add_(tensor, alpha=scale)


def addcdiv_scaled_(target: Tensor, tensor: Tensor, denom: Tensor, scale: Any) -> Tensor:
    """``target`` += scale·``tensor``/``denom`` in place; a differentiated scale
    multiplies the numerator first, which autograd records. Where the division is recorded,
    ``tensor`` (state, which the next step changes in place) is recorded as a copy, as in
    torch's differentiable steps."""
    if differentiated(scale):
        return target.addcdiv_(tensor * scale, denom)
    recorded = tensor.requires_grad or denom.requires_grad
    return target.addcdiv_(tensor.clone() if recorded else tensor, denom, value=scale)


def add_eps(root: Tensor, eps: Any) -> Tensor:
    """``root`` + ε for a fresh square root: in its memory, or out of place where autograd
    records the step (``differentiable=True``: the root's gradient needs its output)."""
    return root + eps if root.requires_grad else root.add_(eps)


def maximum_(tensor: Tensor, other: Tensor) -> Tensor:
    """``tensor`` ← max(``tensor``, ``other``) in place. Where autograd records the step
    (no ``out=`` there), max's backward keeps a copy of the old ``tensor``."""
    if isinstance(tensor, TensorList):
        return tensor.maximum_(other)
    if tensor.requires_grad or other.requires_grad:
        return tensor.copy_(torch.maximum(tensor.clone(), other))
    return torch.maximum(tensor, other, out=tensor)
