"""SWATS, switching from Adam to SGD (Keskar & Socher 2017; ALGORITHMS.md §17, §17a, §24a, §24b).

Unlike the other references this works on a whole param GROUP, because the switch is decided
jointly for the group's params when granularity="group".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import check_choice, decay, prepare, record

GRANULARITIES = ("group", "tensor")


def swats(
    theta0: Sequence[np.ndarray],
    grads: Sequence[Sequence[np.ndarray]],
    *,
    lr_multipliers: Sequence[float] | None = None,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-9,
    weight_decay: float = 0.0,
    weight_decay_mode: str = "l2",
    maximize: bool = False,
    eps_mode: str = "efficient",
    switch_tolerance: float = 1e-9,
    switch_rtol: float | None = None,
    granularity: str = "group",
) -> list[list[dict[str, np.ndarray | float]]]:
    """SWATS, ALGORITHMS.md §17a (paper Algorithm 1 as reconstructed), on one param group.

    theta0: the group's params [θ_1, ..., θ_n]; grads[k-1][i]: gradient of param i at step k;
    lr_multipliers: η_1..η_T (None → all 1). Returns history[k-1][i], the record of param i after
    step k: "step", "param", "exp_avg", "exp_avg_sq", "sgd_lr_average", "sgd_lr", "switch_step".

    A "unit" is the whole group (granularity="group") or each param alone ("tensor"); every unit
    has its own λ, Λ, switch step s and η_s. At step k, for every param, first maximize and
    weight decay exactly as _common.decay (l2: g ← g + wθ; decoupled_lr: θ ← θ(1 - lr η_k w);
    decoupled_schedule: θ ← θ(1 - η_k w)), in both phases. Then:

    Adam phase (unit not switched before step k), α_k = lr·η_k:
        m ← β1 m + (1-β1) g;  a ← β2 a + (1-β2) g²
        "efficient": p = -α_k sqrt(1-β2^k)/(1-β1^k) · m/(sqrt(a) + ε)
        "paper":     p = -α_k (m/(1-β1^k)) / (sqrt(a/(1-β2^k)) + ε)
        θ ← θ + p
    then over the unit's params P = Σ p·p, Q = Σ p·g (g after maximize and L2). If Q ≠ 0:
        γ_k = P/(-Q);  λ ← β2 λ + (1-β2) γ_k;  Λ̂ = λ/(1-β2^k)
        if k > 1 and Λ̂ > 0 and the test holds: switch, s = k, Λ = Λ̂, η_s = η_k, v = 0 for
        the unit's params. The test is the paper's |Λ̂ - γ_k| < switch_tolerance, or, with
        switch_rtol given (not the paper's: relative, as torch.allclose(Λ̂, γ_k, rtol, atol=0)),
        |Λ̂ - γ_k| <= switch_rtol |γ_k|.
    If Q = 0, λ is unchanged and there is no switch test.

    SGD phase (steps k > s; never switches back; m, a no longer updated):
        v ← β1 v + g;  θ ← θ - (1-β1) Λ (η_k/η_s) v

    Records: "exp_avg" = m in the Adam phase, (1-β1) v from the switch step on (0 at k = s);
    "exp_avg_sq" = a (frozen after the switch); "sgd_lr_average" = λ (not bias-corrected);
    "sgd_lr" = Λ (0 before the switch); "switch_step" = s (0 before the switch).
    """
    check_choice("eps_mode", eps_mode, ("efficient", "paper"))
    check_choice("granularity", granularity, GRANULARITIES)
    if isinstance(theta0, np.ndarray):
        raise ValueError("theta0 must be a list of the group's params, not one array")
    n = len(theta0)
    if n == 0:
        raise ValueError("theta0 must hold at least one param")
    for k, step_grads in enumerate(grads, start=1):
        if isinstance(step_grads, np.ndarray) or len(step_grads) != n:
            raise ValueError(f"grads[{k - 1}] must be a list of {n} gradients, one per param")
    thetas: list[np.ndarray] = []
    param_grads: list[list[np.ndarray]] = []
    etas: list[float] = []
    for i in range(n):
        theta, g_i, etas = prepare(
            theta0[i], [step[i] for step in grads], lr_multipliers, weight_decay_mode
        )
        thetas.append(theta)
        param_grads.append(g_i)

    beta1, beta2 = betas
    units = [list(range(n))] if granularity == "group" else [[i] for i in range(n)]
    unit_of = {i: u for u, members in enumerate(units) for i in members}
    ema = [0.0] * len(units)  # λ
    sgd_lr = [0.0] * len(units)  # Λ
    switch_step = [0] * len(units)  # s
    eta_switch = [1.0] * len(units)  # η_s
    exp_avg = [np.zeros_like(theta) for theta in thetas]
    exp_avg_sq = [np.zeros_like(theta) for theta in thetas]
    sgd_buf = [np.zeros_like(theta) for theta in thetas]  # v, heavy-ball form

    history = []
    for k, eta in enumerate(etas, start=1):
        lr_k = lr * eta
        bc1 = 1 - beta1**k
        bc2 = 1 - beta2**k
        for u, members in enumerate(units):
            in_sgd = switch_step[u] > 0
            pp = 0.0
            pg = 0.0
            for i in members:
                theta, g = decay(
                    thetas[i],
                    param_grads[i][k - 1],
                    weight_decay=weight_decay,
                    mode=weight_decay_mode,
                    lr_t=lr_k,
                    eta_t=eta,
                    maximize=maximize,
                )
                if in_sgd:
                    sgd_buf[i] = beta1 * sgd_buf[i] + g
                    theta = theta - (1 - beta1) * sgd_lr[u] * (eta / eta_switch[u]) * sgd_buf[i]
                else:
                    exp_avg[i] = beta1 * exp_avg[i] + (1 - beta1) * g
                    exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1 - beta2) * g * g
                    if eps_mode == "efficient":
                        step_size = lr_k * np.sqrt(bc2) / bc1
                        p = -step_size * exp_avg[i] / (np.sqrt(exp_avg_sq[i]) + eps)
                    else:
                        p = -lr_k * (exp_avg[i] / bc1) / (np.sqrt(exp_avg_sq[i] / bc2) + eps)
                    theta = theta + p
                    pp += float(np.sum(p * p))
                    pg += float(np.sum(p * g))
                thetas[i] = theta
            if in_sgd or pg == 0:
                continue
            gamma = pp / -pg
            ema[u] = beta2 * ema[u] + (1 - beta2) * gamma
            corrected = ema[u] / bc2
            if switch_rtol is None:
                close = abs(corrected - gamma) < switch_tolerance
            else:
                close = abs(corrected - gamma) <= switch_rtol * abs(gamma)
            if k > 1 and close and corrected > 0:
                switch_step[u] = k
                sgd_lr[u] = corrected
                eta_switch[u] = eta
                for i in members:
                    sgd_buf[i] = np.zeros_like(thetas[i])

        records = []
        for i in range(n):
            u = unit_of[i]
            first = (1 - beta1) * sgd_buf[i] if switch_step[u] > 0 else exp_avg[i]
            records.append(
                record(
                    k,
                    thetas[i],
                    exp_avg=first,
                    exp_avg_sq=exp_avg_sq[i],
                    sgd_lr_average=ema[u],
                    sgd_lr=sgd_lr[u],
                    switch_step=switch_step[u],
                )
            )
        history.append(records)
    return history
