"""The step bounds and scale invariance of Adam and Adamax (Kingma & Ba, *Adam: A Method for
Stochastic Optimization*, ICLR 2015, §2.1 and §7.1).

Many independent coordinates (one float64 parameter tensor, each coordinate with its own
gradient stream) are stepped by :class:`adamkit.Adam` with ε = 0 and by
:class:`adamkit.Adamax`; every step's largest |θ_t − θ_{t−1}| is compared with the paper's
bound. The gradient streams are normal, Cauchy (heavy-tailed), sparse, constant, and
sign-alternating with a magnitude spread over two decades. The trajectory under gradients
scaled by 10^k is compared with the unscaled one.

The paper's bounds are not worst cases. By Cauchy–Schwarz, Adam's step at step t is at most

    α·(1−β1)/(1−β1^t)·√((1−β2^t)/(1−β2))·√(Σ_{k<t} (β1²/β2)^k),

reached by gradients growing by β2/β1 per step (g_{t−k} ∝ (β1/β2)^k); that is α at t = 1 and
tends to α·(1−β1)/√((1−β2)(1−β1²/β2)), e.g. 2.35α for (0.9, 0.99). Adamax's step is at most
α·(1−β1)/(1−β1^t)·Σ_{k<t} (β1/β2)^k (as u_t ≥ β2^k |g_{t−k}|), up to 1.009α for (0.9, 0.999).
Both worst cases are measured against as well, as a check of the measurement.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

import adamkit
from adamkit.lab.frame import Experiment, Settings, verdict_of

LR = 1e-3
COORDINATES = 4096
DISTRIBUTIONS = ("normal", "cauchy", "sparse", "constant", "alternating")
BETAS = ((0.9, 0.999), (0.9, 0.99), (0.99, 0.999))
EXPONENTS = tuple(range(-4, 5))
SPARSE_DENSITY = 0.01
ADAMAX_BETAS = (0.9, 0.999)
BOUND_TOLERANCE = 1e-9
SCALING_TOLERANCE = 1e-6
ZERO_DRAWN_AT = 1e-18
DTYPE = torch.float64

CLAIM = (
    "Adam's effective step |Δ_t| = |θ_t − θ_{t−1}| is bounded: with ε = 0, "
    "|Δ_t| ≤ α·(1−β1)/√(1−β2) when (1−β1) > √(1−β2), and |Δ_t| ≤ α otherwise; the step is "
    "invariant to rescaling the gradient (g → c·g leaves the trajectory unchanged at ε = 0); "
    "Adamax's step is bounded by α (Kingma & Ba 2015, §2.1 and §7.1)."
)
PAPER = (
    "Kingma & Ba state, as properties of the update rule rather than a measurement, that with "
    "ε = 0 the effective step has the two upper bounds α·(1−β1)/√(1−β2) (reached only in the "
    "most severe sparsity, a gradient zero at every step but the current one) and α, so that "
    "|Δ_t| ≲ α sets a 'trust region' around the current parameters, and that the step is "
    "invariant to (diagonal) rescaling of the gradients; for AdaMax they state |Δ_t| ≤ α."
)


def steps(settings: Settings) -> int:
    return 300 if settings.quick else 3000


def adam_bound(beta1: float, beta2: float, lr: float = LR) -> float:
    """The paper's bound on Adam's |Δ_t| at ε = 0 (§2.1)."""
    if 1 - beta1 > math.sqrt(1 - beta2):
        return lr * (1 - beta1) / math.sqrt(1 - beta2)
    return lr


def adam_worst_case(beta1: float, beta2: float, count: int, lr: float = LR) -> torch.Tensor:
    """The largest |Δ_t| Adam can take at ε = 0, for t = 1..count (Cauchy–Schwarz)."""
    t = torch.arange(1, count + 1, dtype=DTYPE)
    ratio = beta1**2 / beta2
    geometric = (1 - ratio**t) / (1 - ratio)
    return (
        lr * (1 - beta1) / (1 - beta1**t) * ((1 - beta2**t) / (1 - beta2)).sqrt()
    ) * geometric.sqrt()


def adamax_worst_case(beta1: float, beta2: float, count: int, lr: float = LR) -> torch.Tensor:
    """The largest |Δ_t| Adamax can take, for t = 1..count (u_t ≥ β2^k |g_{t−k}|)."""
    t = torch.arange(1, count + 1, dtype=DTYPE)
    ratio = beta1 / beta2
    return lr * (1 - beta1) / (1 - beta1**t) * (1 - ratio**t) / (1 - ratio)


def gradient_stream(
    distribution: str, coordinates: int, count: int, seed: int
) -> Iterator[torch.Tensor]:
    """``count`` gradients of one distribution, one independent stream per coordinate."""
    generator = torch.Generator().manual_seed(seed)

    def normal() -> torch.Tensor:
        return torch.randn(coordinates, generator=generator, dtype=DTYPE)

    def uniform() -> torch.Tensor:
        return torch.rand(coordinates, generator=generator, dtype=DTYPE)

    constant = normal()
    sign = torch.where(uniform() < 0.5, -1.0, 1.0).to(DTYPE)
    for step in range(1, count + 1):
        if distribution == "normal":
            yield normal()
        elif distribution == "cauchy":  # Student-t with one degree of freedom
            yield torch.empty(coordinates, dtype=DTYPE).cauchy_(generator=generator)
        elif distribution == "sparse":  # every coordinate nonzero at step 1: v_t > 0 after
            gradient = normal()
            yield gradient if step == 1 else gradient * (uniform() < SPARSE_DENSITY)
        elif distribution == "constant":
            yield constant.clone()
        elif distribution == "alternating":  # ±, magnitude log-uniform in [0.1, 10]
            yield sign * (-1.0) ** step * 10.0 ** (2 * uniform() - 1)
        else:
            raise ValueError(f"unknown distribution {distribution!r}")


def stacked_gradients(count: int, seed: int) -> Iterator[torch.Tensor]:
    """Every distribution's gradient at each step, one row per distribution."""
    streams = [
        gradient_stream(distribution, COORDINATES, count, seed * 1000 + index)
        for index, distribution in enumerate(DISTRIBUTIONS)
    ]
    yield from (torch.stack(rows) for rows in zip(*streams, strict=True))


def largest_steps(
    optimizer_factory: Any, gradients: Iterator[torch.Tensor], settings: Settings, label: str
) -> torch.Tensor:
    """Run the optimizer built by ``optimizer_factory([param])`` on a zero parameter with
    the given gradients; return each step's largest |Δ_t| per row, shape (steps, rows)."""
    count = steps(settings)
    param = torch.zeros(len(DISTRIBUTIONS), COORDINATES, dtype=DTYPE, requires_grad=True)
    optimizer = optimizer_factory([param])
    previous = param.detach().clone()
    largest = torch.empty(count, len(DISTRIBUTIONS), dtype=DTYPE)
    for step, gradient in enumerate(settings.progress(gradients, label, count)):
        param.grad = gradient
        optimizer.step()
        current = param.detach()
        largest[step] = (current - previous).abs().amax(dim=1)
        previous.copy_(current)
    return largest


def compact(values: torch.Tensor) -> list[float]:
    """Per-step values with 6 significant digits (the maxima are kept exact elsewhere)."""
    return [float(f"{value:.6g}") for value in values.tolist()]


def summary(
    largest: torch.Tensor, bound: float, worst_case: torch.Tensor, per_step: bool
) -> dict[str, dict[str, Any]]:
    """Per distribution: the largest |Δ_t|/bound, its step (from 1), the largest
    |Δ_t|/worst case, and (if ``per_step``) each step's largest |Δ_t|/bound."""
    cases = {}
    for index, distribution in enumerate(DISTRIBUTIONS):
        column = largest[:, index] / bound
        case: dict[str, Any] = {
            "max": float(column.max()),
            "step": int(column.argmax()) + 1,
            "max_vs_worst_case": float((largest[:, index] / worst_case).max()),
        }
        if per_step:
            case["per_step"] = compact(column)
        cases[distribution] = case
    return cases


def adam_bounds(settings: Settings) -> list[dict[str, Any]]:
    results = []
    for beta1, beta2 in BETAS:
        bound = adam_bound(beta1, beta2)
        worst_case = adam_worst_case(beta1, beta2, steps(settings))
        largest = largest_steps(
            lambda params, betas=(beta1, beta2): adamkit.Adam(params, lr=LR, betas=betas, eps=0.0),
            stacked_gradients(steps(settings), settings.seed),
            settings,
            f"Adam β=({beta1}, {beta2})",
        )
        results.append(
            {
                "betas": [beta1, beta2],
                "bound": bound,
                "bound_over_lr": bound / LR,
                "worst_case_over_lr": float(worst_case.max()) / LR,
                "cases": summary(largest, bound, worst_case, per_step=True),
            }
        )
    return results


def adamax_bound(settings: Settings) -> dict[str, Any]:
    worst_case = adamax_worst_case(*ADAMAX_BETAS, steps(settings))
    largest = largest_steps(
        lambda params: adamkit.Adamax(params, lr=LR, betas=ADAMAX_BETAS),
        stacked_gradients(steps(settings), settings.seed),
        settings,
        "Adamax",
    )
    return {
        "betas": list(ADAMAX_BETAS),
        "eps": 1e-8,
        "eps_mode": "in_max",
        "worst_case_over_lr": float(worst_case.max()) / LR,
        "cases": summary(largest, LR, worst_case, per_step=False),
    }


def scaling(settings: Settings) -> dict[str, Any]:
    """Adam (ε = 0, default betas) on normal gradients times 10^k, one row per k. The
    difference per k: max over steps of ‖θ_t^(k) − θ_t^(0)‖_∞ / ‖θ_t^(0)‖_∞."""
    count = steps(settings)
    scales = torch.tensor([10.0**k for k in EXPONENTS], dtype=DTYPE).unsqueeze(1)
    reference = EXPONENTS.index(0)
    param = torch.zeros(len(EXPONENTS), COORDINATES, dtype=DTYPE, requires_grad=True)
    optimizer = adamkit.Adam([param], lr=LR, eps=0.0)
    worst = torch.zeros(len(EXPONENTS), dtype=DTYPE)
    gradients = gradient_stream("normal", COORDINATES, count, settings.seed * 1000 + 999)
    for gradient in settings.progress(gradients, "Adam, scaled gradients", count):
        param.grad = scales * gradient
        optimizer.step()
        theta = param.detach()
        difference = (theta - theta[reference]).abs().amax(dim=1)
        worst = torch.maximum(worst, difference / theta[reference].abs().max())
    return {
        "distribution": "normal",
        "betas": [0.9, 0.999],
        "exponents": list(EXPONENTS),
        "max_relative_difference": worst.tolist(),
    }


def run(settings: Settings) -> dict[str, Any]:
    return {
        "lr": LR,
        "coordinates": COORDINATES,
        "steps": steps(settings),
        "distributions": list(DISTRIBUTIONS),
        "adam": adam_bounds(settings),
        "scaling": scaling(settings),
        "adamax": adamax_bound(settings),
    }


def checks(numbers: dict[str, Any]) -> tuple[bool, bool, bool]:
    """Whether Adam's bounds, the scale invariance and Adamax's bound held."""
    adam = all(
        case["max"] <= 1 + BOUND_TOLERANCE
        for pair in numbers["adam"]
        for case in pair["cases"].values()
    )
    scaled = max(numbers["scaling"]["max_relative_difference"]) <= SCALING_TOLERANCE
    adamax = all(case["max"] <= 1 + BOUND_TOLERANCE for case in numbers["adamax"]["cases"].values())
    return adam, scaled, adamax


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    held = checks(numbers)
    outcome = verdict_of(held)
    pairs = "; ".join(
        f"β=({pair['betas'][0]}, {pair['betas'][1]}), bound {pair['bound_over_lr']:.3g}α: "
        + ", ".join(f"{name} {case['max']:.4g}" for name, case in pair["cases"].items())
        for pair in numbers["adam"]
    )
    adamax = ", ".join(
        f"{name} {case['max']:.6g}" for name, case in numbers["adamax"]["cases"].items()
    )
    worst_case = max(
        case["max_vs_worst_case"]
        for pair in [*numbers["adam"], numbers["adamax"]]
        for case in pair["cases"].values()
    )
    scaled = max(numbers["scaling"]["max_relative_difference"])
    sentence = (
        f"Over {numbers['steps']} steps of {numbers['coordinates']} coordinates, Adam's "
        f"largest |Δ_t|/bound was {pairs}; gradients scaled by 10^-4…10^4 changed the "
        f"trajectory by at most {scaled:.2g} (relative); Adamax's largest |Δ_t|/α was "
        f"{adamax}; "
        + ("no step exceeded" if worst_case <= 1 + 1e-9 else "some steps EXCEEDED")
        + f" the exact worst case from Cauchy–Schwarz (largest ratio {worst_case:.6g})."
    )
    return outcome, sentence


def plot_adam(numbers: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(numbers["adam"]), figsize=(12, 4.2), sharey=True)
    steps_axis = list(range(1, numbers["steps"] + 1))
    for axis, pair in zip(axes, numbers["adam"], strict=True):
        beta1, beta2 = pair["betas"]
        for name, case in pair["cases"].items():
            axis.plot(steps_axis, case["per_step"], label=name, linewidth=1)
        worst_case = adam_worst_case(beta1, beta2, numbers["steps"], numbers["lr"])
        axis.plot(
            steps_axis,
            (worst_case / pair["bound"]).tolist(),
            color="grey",
            linestyle=":",
            label="worst case (Cauchy–Schwarz)",
        )
        axis.axhline(1.0, color="black", linestyle="--", linewidth=1, label="bound")
        axis.set_xscale("log")
        axis.set_xlabel("step t")
        axis.set_title(f"β1={beta1}, β2={beta2}: bound {pair['bound_over_lr']:.3g}α")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("max over coordinates of |Δ_t| / bound")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
    figure.subplots_adjust(bottom=0.22)
    figure.suptitle(f"Adam, ε = 0, α = {numbers['lr']:g}: largest step relative to the bound")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_scaling_and_adamax(numbers: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    scaled = numbers["scaling"]
    pairs = [
        (k, max(value, ZERO_DRAWN_AT))
        for k, value in zip(scaled["exponents"], scaled["max_relative_difference"], strict=True)
        if k != 0
    ]
    left.semilogy(
        *zip(*pairs, strict=True), "o-", label=f"Adam, ε = 0 (0 drawn at {ZERO_DRAWN_AT:g})"
    )
    left.axhline(SCALING_TOLERANCE, color="black", linestyle="--", label="tolerance")
    left.set_xlabel("k (gradients multiplied by 10^k; k = 0 is the reference)")
    left.set_ylabel("max over t of ‖θ_t(k) − θ_t(0)‖∞ / ‖θ_t(0)‖∞")
    left.set_title("Scale invariance (normal gradients)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)

    adamax = numbers["adamax"]
    names = list(adamax["cases"])
    values = [case["max"] for case in adamax["cases"].values()]
    right.plot(names, values, "o", markersize=8, label="largest |Δ_t| / α")
    for name, value in zip(names, values, strict=True):
        right.annotate(
            f"{value:.7g}",
            (name, value),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
        )
    right.axhline(1.0, color="black", linestyle="--", label="bound α")
    right.axhline(
        adamax["worst_case_over_lr"],
        color="grey",
        linestyle=":",
        label="worst case over these steps",
    )
    right.set_ylim(min(0.998, *values) - 0.001, adamax["worst_case_over_lr"] + 0.002)
    right.set_xlabel("gradient distribution")
    right.set_ylabel("max over steps and coordinates of |Δ_t| / α")
    right.set_title(f"Adamax, β = {tuple(adamax['betas'])}, ε = 1e-8 in the max")
    right.legend(fontsize=8, loc="center right")
    right.grid(alpha=0.3, axis="y")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    names = ["adam_step_bounds.png", "scaling_and_adamax.png"]
    plot_adam(numbers, folder / names[0])
    plot_scaling_and_adamax(numbers, folder / names[1])
    return names


EXPERIMENT = Experiment(
    name="properties", claim=CLAIM, paper=PAPER, run=run, plot=plot, verdict=verdict
)
