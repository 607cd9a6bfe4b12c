"""Adam, Adam-L2, AdamW and AMSGrad (ALGORITHMS.md §5, §6, §7, §10, §13)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import check_choice, decay, prepare, record


def adam(
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    *,
    lr_multipliers: Sequence[float] | None = None,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    weight_decay_mode: str = "l2",
    bias_correction: bool = True,
    eps_mode: str = "paper",
    amsgrad_max: str = "raw",
    eps_root: float = 0.0,
) -> list[dict[str, np.ndarray | float]]:
    """Adam, ALGORITHMS.md §5a (Algorithm 1), §5b (efficient form), §6/§7 (decay), §10 (AMSGrad).

    m_t = β1 m_{t-1} + (1-β1) g; v_t = β2 v_{t-1} + (1-β2) g²;
    bc1 = 1 - β1^t, bc2 = 1 - β2^t (both 1 when bias_correction is False).
    Second moment used: V_raw = v, V = v/bc2; with amsgrad,
    "raw" (torch §10b): vmax_t = max(vmax_{t-1}, v_t), V_raw = vmax, V = vmax/bc2;
    "corrected" (optax): vmax_t = max(vmax_{t-1}, v_t/bc2), V = vmax, V_raw = vmax·bc2.
    eps_mode "paper": θ ← θ - lr_t (m/bc1)/(sqrt(V) + ε);
    "efficient" (§5b, literally): θ ← θ - lr_t sqrt(bc2)/bc1 · m/(sqrt(V_raw) + ε̂), ε̂ = eps.
    With "corrected" the efficient form is therefore the paper form with ε replaced by
    ε̂/sqrt(bc2), exactly as without amsgrad. Paper AMSGrad (§10a) is amsgrad=True,
    bias_correction=False, eps=0 (no projection). "max_exp_avg_sq" stores vmax.
    eps_root (optax scale_by_adam): θ ← θ - lr_t (m/bc1)/(sqrt(V + eps_root) + ε), paper
    form only.
    """
    if eps_root and eps_mode != "paper":
        raise ValueError("eps_root is defined for the paper form only")
    check_choice("eps_mode", eps_mode, ("paper", "efficient"))
    check_choice("amsgrad_max", amsgrad_max, ("raw", "corrected"))
    beta1, beta2 = betas
    theta, grads, etas = prepare(theta0, grads, lr_multipliers, weight_decay_mode)
    exp_avg = np.zeros_like(theta)
    exp_avg_sq = np.zeros_like(theta)
    max_exp_avg_sq = np.zeros_like(theta)
    history = []
    for t, (g, eta) in enumerate(zip(grads, etas, strict=True), start=1):
        lr_t = lr * eta
        theta, g = decay(
            theta,
            g,
            weight_decay=weight_decay,
            mode=weight_decay_mode,
            lr_t=lr_t,
            eta_t=eta,
            maximize=maximize,
        )
        exp_avg = beta1 * exp_avg + (1 - beta1) * g
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
        bc1 = 1 - beta1**t if bias_correction else 1.0
        bc2 = 1 - beta2**t if bias_correction else 1.0
        if not amsgrad:
            second_raw = exp_avg_sq
            second = exp_avg_sq / bc2
        elif amsgrad_max == "raw":
            max_exp_avg_sq = np.maximum(max_exp_avg_sq, exp_avg_sq)
            second_raw = max_exp_avg_sq
            second = max_exp_avg_sq / bc2
        else:
            max_exp_avg_sq = np.maximum(max_exp_avg_sq, exp_avg_sq / bc2)
            second_raw = max_exp_avg_sq * bc2
            second = max_exp_avg_sq
        if eps_mode == "paper":  # optax's eps_root inside the root (0: Algorithm 1)
            theta = theta - lr_t * (exp_avg / bc1) / (np.sqrt(second + eps_root) + eps)
        else:
            step_size = lr_t * np.sqrt(bc2) / bc1
            theta = theta - step_size * exp_avg / (np.sqrt(second_raw) + eps)
        state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        if amsgrad:
            state["max_exp_avg_sq"] = max_exp_avg_sq
        history.append(record(t, theta, **state))
    return history


def adamw(
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    *,
    lr_multipliers: Sequence[float] | None = None,
    weight_decay: float = 1e-2,
    weight_decay_mode: str = "decoupled_lr",
    **hyperparameters,
) -> list[dict[str, np.ndarray | float]]:
    """AdamW, ALGORITHMS.md §7a (torch): adam() with weight_decay=1e-2 and decoupled decay.

    Pass weight_decay_mode="decoupled_schedule" for the paper form (§7b, §13).
    """
    return adam(
        theta0,
        grads,
        lr_multipliers=lr_multipliers,
        weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
        **hyperparameters,
    )


def amsgrad(
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    *,
    lr_multipliers: Sequence[float] | None = None,
    **hyperparameters,
) -> list[dict[str, np.ndarray | float]]:
    """AMSGrad, ALGORITHMS.md §10: adam() with amsgrad=True (torch form §10b by default).

    Paper form (§10a): amsgrad(..., bias_correction=False, eps=0.0).
    """
    return adam(theta0, grads, lr_multipliers=lr_multipliers, amsgrad=True, **hyperparameters)
