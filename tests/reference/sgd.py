"""SGD with heavy-ball, Sutskever or EMA momentum (ALGORITHMS.md §1, §2, §12)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import check_choice, decay, prepare, record

MOMENTUM_FORMS = ("heavy_ball", "torch", "sutskever", "ema")


def sgd(
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    *,
    lr_multipliers: Sequence[float] | None = None,
    lr: float = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    momentum_form: str = "heavy_ball",
    bias_correction: bool = False,
    weight_decay_mode: str = "l2",
) -> list[dict[str, np.ndarray | float]]:
    """SGD, ALGORITHMS.md §1 (plain), §2a (heavy ball, torch), §2b (EMA), §2c, §12 (Sutskever/SGDW).

    With lr_t = lr·η_t and μ = momentum, τ = dampening:
    μ = 0: θ ← θ - lr_t g (no buffer, form irrelevant).
    "heavy_ball" (alias "torch", the §24a name): b_1 = g_1, b_t = μ b_{t-1} + (1-τ) g_t;
    d = g + μ b if nesterov else b; θ ← θ - lr_t d.
    "sutskever": v_0 = 0, v_t = μ v_{t-1} + (1-τ) lr_t g_t;
    θ ← θ - (lr_t g + μ v) if nesterov else θ - v.
    "ema": m_0 = 0, m_t = μ m_{t-1} + (1-μ) g_t; θ ← θ - lr_t m_t/(1-μ^t) with bias_correction,
    else θ - lr_t m_t. nesterov and dampening are not used by this form.
    "momentum_buffer" holds b, v or the uncorrected m; bias_correction is used only by "ema".
    """
    check_choice("momentum_form", momentum_form, MOMENTUM_FORMS)
    theta, grads, etas = prepare(theta0, grads, lr_multipliers, weight_decay_mode)
    buf = np.zeros_like(theta)
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
        if momentum == 0:
            theta = theta - lr_t * g
            history.append(record(t, theta))
            continue
        if momentum_form in ("heavy_ball", "torch"):
            buf = g.copy() if t == 1 else momentum * buf + (1 - dampening) * g
            direction = g + momentum * buf if nesterov else buf
            theta = theta - lr_t * direction
        elif momentum_form == "sutskever":
            buf = momentum * buf + (1 - dampening) * lr_t * g
            theta = theta - (lr_t * g + momentum * buf) if nesterov else theta - buf
        else:
            buf = momentum * buf + (1 - momentum) * g
            m_hat = buf / (1 - momentum**t) if bias_correction else buf
            theta = theta - lr_t * m_hat
        history.append(record(t, theta, momentum_buffer=buf))
    return history
