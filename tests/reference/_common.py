"""Pieces every float64 reference shares: input handling, weight decay, the step record.

See ALGORITHMS.md §6 (coupled L2), §7 and §13 (decoupled weight decay, torch and paper forms).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WEIGHT_DECAY_MODES = ("l2", "decoupled_lr", "decoupled_schedule")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} (expected one of {tuple(choices)})")


def prepare(
    theta0: np.ndarray,
    grads: Sequence[np.ndarray],
    lr_multipliers: Sequence[float] | None,
    weight_decay_mode: str,
) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    """Return a float64 copy of theta0, the gradients as float64 and the multipliers η_1..η_T."""
    check_choice("weight_decay_mode", weight_decay_mode, WEIGHT_DECAY_MODES)
    theta = np.array(theta0, dtype=np.float64, copy=True)
    grads = [np.array(g, dtype=np.float64, copy=True) for g in grads]
    for t, g in enumerate(grads, start=1):
        if g.shape != theta.shape:
            raise ValueError(f"grads[{t - 1}] has shape {g.shape}, expected {theta.shape}")
    if lr_multipliers is None:
        etas = [1.0] * len(grads)
    else:
        etas = [float(eta) for eta in lr_multipliers]
        if len(etas) != len(grads):
            raise ValueError(f"len(lr_multipliers)={len(etas)} != len(grads)={len(grads)}")
    return theta, grads, etas


def decay(
    theta: np.ndarray,
    g: np.ndarray,
    *,
    weight_decay: float,
    mode: str,
    lr_t: float,
    eta_t: float,
    maximize: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply maximize and weight decay before the optimizer's own step.

    maximize: g ← -g first. Then, when λ ≠ 0:
    "l2": g ← g + λθ (§6); "decoupled_lr": θ ← θ(1 - lr_t λ) (torch AdamW, §7a);
    "decoupled_schedule": θ ← θ(1 - η_t λ) (Loshchilov & Hutter, §7b, §12, §13).
    The decoupled forms multiply θ before the step; the step does not depend on θ, so this equals
    the paper's θ_t = θ_{t-1} - step - η_t λ θ_{t-1}.
    """
    if maximize:
        g = -g
    if weight_decay != 0:
        if mode == "l2":
            g = g + weight_decay * theta
        elif mode == "decoupled_lr":
            theta = theta * (1.0 - lr_t * weight_decay)
        else:
            theta = theta * (1.0 - eta_t * weight_decay)
    return theta, g


def record(t: int, theta: np.ndarray, **state: np.ndarray) -> dict[str, np.ndarray | float]:
    """Snapshot after step t: "step", "param" and the state, as float64 array copies.

    np.array() also turns the NumPy scalars that 0-dim arithmetic yields back into 0-dim arrays.
    """
    out: dict[str, np.ndarray | float] = {"step": t, "param": np.array(theta, dtype=np.float64)}
    for name, value in state.items():
        out[name] = np.array(value, dtype=np.float64)
    return out
