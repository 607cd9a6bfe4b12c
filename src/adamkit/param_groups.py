"""Param groups for weight decay: decay the weight matrices, not the biases and norms."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from adamkit.algorithms.common import as_float

__all__ = ["weight_decay_groups"]


def weight_decay_groups(
    model: nn.Module, weight_decay: float, *, exclude: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed param group.

    A parameter is not decayed when it has at most one dimension (biases, norm weights and
    scales), when it is a ``bias`` (``….bias``), or when its name (relative to ``model``) matches
    a name or ``fnmatch`` pattern in ``exclude`` or in ``model.no_weight_decay()``, where the
    model defines that method (timm's convention, e.g. ``{"pos_embed", "cls_token"}``). Every
    other parameter, embedding tables included, is decayed. Frozen parameters
    (``requires_grad=False``) are left out; a parameter shared under two names counts once.

    Returns:
        ``[{"params", "param_names", "weight_decay": weight_decay},
        {"params", "param_names", "weight_decay": 0.0}]``, without a group that would be
        empty: the ``params`` argument of any ``torch.optim`` or adamkit optimizer.
    """
    if not 0.0 <= as_float("weight_decay", weight_decay):
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if isinstance(exclude, str):
        raise TypeError(f"exclude must be an iterable of names or patterns, not a str: {exclude!r}")
    patterns = list(exclude)
    if hasattr(model, "no_weight_decay"):
        patterns.extend(model.no_weight_decay())
    decay: dict[str, list[Any]] = {"params": [], "param_names": []}
    no_decay: dict[str, list[Any]] = {"params": [], "param_names": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = (
            param.ndim <= 1
            or name.rpartition(".")[2] == "bias"
            or any(fnmatchcase(name, pattern) for pattern in patterns)
        )
        group = no_decay if skip else decay
        group["params"].append(param)
        group["param_names"].append(name)
    groups = [{**decay, "weight_decay": weight_decay}, {**no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]
