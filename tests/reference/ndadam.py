"""ND-Adam, normalized direction-preserving Adam (Zhang, Ma, Li & Wu 2017; ALGORITHMS.md §18)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import check_choice, prepare, record
from .adam import adam


def vector_axes(ndim: int, vec_axes: Sequence[int] | None) -> tuple[int, ...]:
    """The axes that span one weight vector (§18a, §24a); () means "not a vector".

    None: all dims but 0 when ndim ≥ 2, else (); otherwise the given axes, negative ones
    normalised (axis + ndim), sorted. Out-of-range or repeated axes raise ValueError.
    """
    if vec_axes is None:
        return tuple(range(1, ndim)) if ndim >= 2 else ()
    axes = []
    for axis in vec_axes:
        axis = int(axis)
        if not -ndim <= axis < ndim:
            raise ValueError(f"vec_axes entry {axis} out of range for a {ndim}-dim param")
        axes.append(axis % ndim)
    if len(set(axes)) != len(axes):
        raise ValueError(f"vec_axes {tuple(vec_axes)} repeats an axis")
    return tuple(sorted(axes))


def ndadam(
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    *,
    lr_multipliers: Sequence[float] | None = None,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mode: str = "l2",
    maximize: bool = False,
    eps_mode: str = "efficient",
    vec_axes: Sequence[int] | None = None,
) -> list[dict[str, np.ndarray | float]]:
    """ND-Adam, ALGORITHMS.md §18a (which params) and §18b (per-vector update).

    Axes from vector_axes(theta0.ndim, vec_axes). Not a vector (no axes): exactly reference
    adam() with the same lr, betas, eps, weight_decay, weight_decay_mode, maximize, eps_mode.

    Vector: the param is a stack of vectors w along the axes, each assumed to have unit norm on
    entry (not renormalised at init). maximize: ḡ ← -ḡ; no weight decay. Sums Σ over the axes
    keep their dims, so v has the param's shape with 1 on the vector axes. α_t = lr·η_t:
        g = ḡ - (Σ ḡ·w) w                            (tangent to the sphere at w = w_{t-1})
        m ← β1 m + (1-β1) g;  v ← β2 v + (1-β2) Σ g²
        "efficient": w̄ = w - α_t sqrt(1-β2^t)/(1-β1^t) · m/(sqrt(v) + ε)
        "paper":     w̄ = w - α_t (m/(1-β1^t)) / (sqrt(v/(1-β2^t)) + ε)
        w ← w̄ / sqrt(Σ w̄²)
    Records: "exp_avg" = m, "exp_avg_sq" = v.
    """
    check_choice("eps_mode", eps_mode, ("efficient", "paper"))
    theta, grads, etas = prepare(theta0, grads, lr_multipliers, weight_decay_mode)
    axes = vector_axes(theta.ndim, vec_axes)
    if not axes:
        return adam(
            theta0,
            grads,
            lr_multipliers=lr_multipliers,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            maximize=maximize,
            eps_mode=eps_mode,
        )
    beta1, beta2 = betas
    exp_avg = np.zeros_like(theta)
    exp_avg_sq = np.zeros_like(np.sum(theta, axis=axes, keepdims=True))
    history = []
    for t, (g, eta) in enumerate(zip(grads, etas, strict=True), start=1):
        lr_t = lr * eta
        if maximize:
            g = -g
        g = g - np.sum(g * theta, axis=axes, keepdims=True) * theta
        exp_avg = beta1 * exp_avg + (1 - beta1) * g
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * np.sum(g * g, axis=axes, keepdims=True)
        bc1 = 1 - beta1**t
        bc2 = 1 - beta2**t
        if eps_mode == "efficient":
            step_size = lr_t * np.sqrt(bc2) / bc1
            theta = theta - step_size * exp_avg / (np.sqrt(exp_avg_sq) + eps)
        else:
            theta = theta - lr_t * (exp_avg / bc1) / (np.sqrt(exp_avg_sq / bc2) + eps)
        theta = theta / np.sqrt(np.sum(theta * theta, axis=axes, keepdims=True))
        history.append(record(t, theta, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq))
    return history
