"""The step bounds and scale invariance of Adam and Adamax (Kingma & Ba, *Adam: A Method for
Stochastic Optimization*, ICLR 2015, §2.1 and §7.1).

Many independent coordinates (one float64 parameter tensor, each coordinate with its own
gradient stream) are stepped by :class:`adamkit.Adam` with ε = 0 and by
:class:`adamkit.Adamax`; every step's largest |θ_t − θ_{t−1}| is recorded. The gradient
streams are normal, Cauchy (heavy-tailed), sparse, constant, and sign-alternating with a
magnitude spread over two decades. The trajectory under gradients scaled by 10^k is compared
with the unscaled one, at ε = 0 and at the default ε = 1e-8.

§2.1 makes two statements. The **approximate** one, |Δ_t| ≲ α "in more common scenarios", is
the verdict's: it is decided on the normal and the heavy-tailed streams with a tolerance fixed
in advance (:data:`APPROXIMATE`). The **literal** bounds, |Δ_t| ≤ α·(1−β1)/√(1−β2) when
1−β1 > √(1−β2) and |Δ_t| ≤ α otherwise, are false, and the run shows it with a counterexample
rather than voting on it. By Cauchy–Schwarz, Adam's step at step t is at most

    α·(1−β1)/(1−β1^t)·√((1−β2^t)/(1−β2))·√(Σ_{k<t} (β1²/β2)^k),

with equality for gradients growing by β2/β1 per step (g_{t−k} ∝ (β1/β2)^k, the same sequence
for every t); that is α at t = 1 and tends to α·(1−β1)/√((1−β2)(1−β1²/β2)), e.g. 2.35α for
(0.9, 0.99) and 7.27α for (0.9, 0.999). Adamax's step is at most
α·(1−β1)/(1−β1^t)·Σ_{k<t} (β1/β2)^k (as u_t ≥ β2^k |g_{t−k}|), reached by g_t ∝ β2^t: up to
1.009α for (0.9, 0.999), so its |Δ_t| ≤ α is false too, by less than 1 %.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

import adamkit
from adamkit.lab.frame import Experiment, Settings, verdict_of

LR = 1e-3
COORDINATES = 4096
DISTRIBUTIONS = ("normal", "cauchy", "sparse", "constant", "alternating")
NAMES = {"cauchy": "heavy-tailed (Cauchy)"}
# the streams the approximate bound is decided on: random and dense. Sparse gradients are the
# paper's own exception (its larger bound when 1−β1 > √(1−β2)); constant gradients step
# exactly α (m̂ = g, v̂ = g²) and alternating ones at most α (at step 1), whatever Adam does
DECIDING = ("normal", "cauchy")
BETAS = ((0.9, 0.999), (0.9, 0.99), (0.99, 0.999))
EXPONENTS = tuple(range(-4, 5))
EPSILONS = (0.0, 1e-8)
SPARSE_DENSITY = 0.01
ADAMAX_BETAS = (0.9, 0.999)
APPROXIMATE = 0.5  # |Δ_t| ≲ α holds when no step exceeds (1 + APPROXIMATE)·α
ROUNDING = 1e-9  # relative: a step over a literal bound by more than this exceeds it
ZERO_DRAWN_AT = 1e-18
DTYPE = torch.float64

CLAIM = (
    "Adam's effective step |Δ_t| = |θ_t − θ_{t−1}| is approximately bounded by the step size, "
    "|Δ_t| ≲ α, in common scenarios (with ε = 0 the paper gives the bounds "
    "α·(1−β1)/√(1−β2) when (1−β1) > √(1−β2), reached only with the most severe sparsity, and "
    "α otherwise); the step is invariant to rescaling the gradient (g → c·g); Adamax's step is "
    "bounded by α (Kingma & Ba 2015, §2.1 and §7.1)."
)
PAPER = (
    "Kingma & Ba state, as properties of the update rule rather than a measurement, that with "
    "ε = 0 the effective step has the two upper bounds α·(1−β1)/√(1−β2) (reached only in the "
    "most severe sparsity, a gradient zero at every step but the current one) and α, that in "
    "more common scenarios m̂_t/√v̂_t ≈ ±1, so that |Δ_t| ≲ α sets a 'trust region' around the "
    "current parameters, and that the step is invariant to (diagonal) rescaling of the "
    "gradients; for AdaMax they state |Δ_t| ≤ α."
)
RULE = (
    "The approximate bound |Δ_t| ≲ α (§2.1) is read as: no step larger than "
    f"{1 + APPROXIMATE:g}α (tolerance fixed before the run, lenient towards the paper: its own "
    "bound for sparse gradients at the default betas is 3.16α). One check per gradient stream "
    "it is decided on, normal and heavy-tailed (Cauchy), each over 4096 coordinates and the "
    "run's steps at every β of (0.9, 0.999), (0.9, 0.99), (0.99, 0.999), ε = 0: it holds when "
    "the largest step of every β is at most 1.5α. Reproduced when both hold, partly when one "
    "does, not reproduced when neither does. Reported, not counted: sparse gradients (the "
    "paper's own exception when 1−β1 > √(1−β2)); constant and sign-alternating gradients "
    "(their largest step is α by construction: a check of the measurement); the literal bounds "
    "and Adamax's |Δ_t| ≤ α, which are false, shown by the gradient sequence that reaches the "
    "Cauchy–Schwarz worst case (a step over a bound by more than 1e-9 relative exceeds it); "
    "scale invariance, an identity at ε = 0 (c cancels in m̂/√v̂), also measured at ε = 1e-8."
)


def steps(settings: Settings) -> int:
    return 300 if settings.quick else 3000


def adam_bound(beta1: float, beta2: float, lr: float = LR) -> float:
    """The paper's literal bound on Adam's |Δ_t| at ε = 0 (§2.1)."""
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


def adam_limit(beta1: float, beta2: float) -> float:
    """The worst case's limit as t → ∞, over α: (1−β1)/√((1−β2)(1−β1²/β2))."""
    return (1 - beta1) / math.sqrt((1 - beta2) * (1 - beta1**2 / beta2))


def adamax_worst_case(beta1: float, beta2: float, count: int, lr: float = LR) -> torch.Tensor:
    """The largest |Δ_t| Adamax can take, for t = 1..count (u_t ≥ β2^k |g_{t−k}|)."""
    t = torch.arange(1, count + 1, dtype=DTYPE)
    ratio = beta1 / beta2
    return lr * (1 - beta1) / (1 - beta1**t) * (1 - ratio**t) / (1 - ratio)


def adam_counterexample(beta1: float, beta2: float, count: int) -> torch.Tensor:
    """Gradients g_1..g_count of one coordinate growing by β2/β1 per step (the last is 1):
    they make Cauchy–Schwarz an equality, so Adam takes its worst-case step at every t."""
    return (beta1 / beta2) ** torch.arange(count - 1, -1, -1, dtype=DTYPE)


def adamax_counterexample(beta2: float, count: int) -> torch.Tensor:
    """Gradients g_t = β2^t of one coordinate: Adamax's worst-case step at every t."""
    return beta2 ** torch.arange(1, count + 1, dtype=DTYPE)


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


Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


def largest_steps(
    optimizer_factory: Factory, gradients: Iterable[torch.Tensor], count: int
) -> torch.Tensor:
    """Run the optimizer built by ``optimizer_factory([param])`` on a zero parameter shaped
    like each gradient (rows × coordinates) for ``count`` steps; return each step's largest
    |Δ_t| per row, shape (count, rows)."""
    remaining = iter(gradients)
    first = next(remaining)
    param = torch.zeros_like(first, requires_grad=True)
    optimizer = optimizer_factory([param])
    previous = param.detach().clone()
    largest = torch.empty(count, len(first), dtype=DTYPE)
    for step, gradient in enumerate(itertools.chain([first], remaining)):
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
    largest: torch.Tensor, worst_case: torch.Tensor, per_step: bool
) -> dict[str, dict[str, Any]]:
    """Per distribution: the largest |Δ_t|/α, its step (from 1), the largest |Δ_t|/worst
    case, and (if ``per_step``) each step's largest |Δ_t|/α."""
    cases = {}
    for index, distribution in enumerate(DISTRIBUTIONS):
        column = largest[:, index] / LR
        case: dict[str, Any] = {
            "max_over_lr": float(column.max()),
            "step": int(column.argmax()) + 1,
            "max_vs_worst_case": float((largest[:, index] / worst_case).max()),
        }
        if per_step:
            case["per_step"] = compact(column)
        cases[distribution] = case
    return cases


def counterexample(
    optimizer_factory: Factory, gradients: torch.Tensor, bound: float
) -> dict[str, Any]:
    """The optimizer's steps on the one-coordinate ``gradients``: the largest |Δ_t|/α, its
    step, the first step over ``bound`` (None if none) and each step's |Δ_t|/α."""
    taken = largest_steps(optimizer_factory, gradients.view(-1, 1, 1), len(gradients))[:, 0]
    over = (taken > bound * (1 + ROUNDING)).nonzero()
    return {
        "growth_per_step": float(gradients[-1] / gradients[-2]),
        "max_over_lr": float(taken.max()) / LR,
        "step": int(taken.argmax()) + 1,
        "first_over_bound": int(over[0, 0]) + 1 if len(over) else None,
        "per_step": compact(taken / LR),
    }


def adam_bounds(settings: Settings) -> list[dict[str, Any]]:
    count = steps(settings)
    results = []
    for beta1, beta2 in BETAS:
        bound = adam_bound(beta1, beta2)
        worst_case = adam_worst_case(beta1, beta2, count)

        def make(params: list[torch.Tensor], betas: tuple[float, float] = (beta1, beta2)) -> Any:
            return adamkit.Adam(params, lr=LR, betas=betas, eps=0.0)

        label = f"Adam β=({beta1}, {beta2})"
        largest = largest_steps(
            make, settings.progress(stacked_gradients(count, settings.seed), label, count), count
        )
        results.append(
            {
                "betas": [beta1, beta2],
                "bound_over_lr": bound / LR,
                "worst_case_over_lr": float(worst_case.max()) / LR,
                "limit_over_lr": adam_limit(beta1, beta2),
                "cases": summary(largest, worst_case, per_step=True),
                "counterexample": counterexample(
                    make, adam_counterexample(beta1, beta2, count), bound
                ),
            }
        )
    return results


def adamax_bound(settings: Settings) -> dict[str, Any]:
    count = steps(settings)
    worst_case = adamax_worst_case(*ADAMAX_BETAS, count)

    def make(params: list[torch.Tensor]) -> Any:
        return adamkit.Adamax(params, lr=LR, betas=ADAMAX_BETAS)

    largest = largest_steps(
        make, settings.progress(stacked_gradients(count, settings.seed), "Adamax", count), count
    )
    return {
        "betas": list(ADAMAX_BETAS),
        "eps": 1e-8,
        "eps_mode": "in_max",
        "worst_case_over_lr": float(worst_case.max()) / LR,
        "cases": summary(largest, worst_case, per_step=False),
        "counterexample": counterexample(make, adamax_counterexample(ADAMAX_BETAS[1], count), LR),
    }


def scaling(settings: Settings) -> dict[str, Any]:
    """Adam (default betas) on normal gradients times 10^k, one row per k, at each ε of
    :data:`EPSILONS`. The difference per k: max over steps of ‖θ_t^(k) − θ_t^(0)‖_∞ /
    ‖θ_t^(0)‖_∞."""
    count = steps(settings)
    scales = torch.tensor([10.0**k for k in EXPONENTS], dtype=DTYPE).unsqueeze(1)
    reference = EXPONENTS.index(0)
    differences = []
    for eps in EPSILONS:
        param = torch.zeros(len(EXPONENTS), COORDINATES, dtype=DTYPE, requires_grad=True)
        optimizer = adamkit.Adam([param], lr=LR, eps=eps)
        worst = torch.zeros(len(EXPONENTS), dtype=DTYPE)
        gradients = gradient_stream("normal", COORDINATES, count, settings.seed * 1000 + 999)
        for gradient in settings.progress(gradients, f"Adam, scaled gradients, ε={eps:g}", count):
            param.grad = scales * gradient
            optimizer.step()
            theta = param.detach()
            difference = (theta - theta[reference]).abs().amax(dim=1)
            worst = torch.maximum(worst, difference / theta[reference].abs().max())
        differences.append(worst.tolist())
    return {
        "distribution": "normal",
        "betas": [0.9, 0.999],
        "exponents": list(EXPONENTS),
        "eps": list(EPSILONS),
        "max_relative_difference": differences,
    }


def run(settings: Settings) -> dict[str, Any]:
    return {
        "lr": LR,
        "coordinates": COORDINATES,
        "steps": steps(settings),
        "distributions": list(DISTRIBUTIONS),
        "tolerance": APPROXIMATE,
        "adam": adam_bounds(settings),
        "scaling": scaling(settings),
        "adamax": adamax_bound(settings),
    }


# --- verdict -------------------------------------------------------------------------------


def largest_over_lr(numbers: dict[str, Any], distribution: str) -> float:
    """Adam's largest |Δ_t|/α on one stream, over every β."""
    return max(pair["cases"][distribution]["max_over_lr"] for pair in numbers["adam"])


def checks(numbers: dict[str, Any]) -> list[bool]:
    """Per stream of :data:`DECIDING`: whether the approximate bound held at every β."""
    return [largest_over_lr(numbers, name) <= 1 + APPROXIMATE for name in DECIDING]


def per_beta(numbers: dict[str, Any], distribution: str) -> str:
    """A stream's largest |Δ_t|/α at each β, "a / b / c"."""
    return " / ".join(
        f"{pair['cases'][distribution]['max_over_lr']:.3f}α" for pair in numbers["adam"]
    )


def literal(pair: dict[str, Any]) -> str:
    """The counterexample to the literal bound at one β, in words."""
    beta1, beta2 = pair["betas"]
    example = pair["counterexample"]
    first = example["first_over_bound"]
    over = f"over it from step {first}" if first is not None else "never over it"
    name, case = max(pair["cases"].items(), key=lambda item: item[1]["max_over_lr"])
    random = (
        f", and the {NAMES.get(name, name)} stream {case['max_over_lr']:.6g}α at step "
        f"{case['step']}"
        if case["max_over_lr"] > pair["bound_over_lr"] * (1 + ROUNDING)
        else ""
    )
    return (
        f"{example['max_over_lr']:.3g}α at step {example['step']} against the bound "
        f"{pair['bound_over_lr']:.3g}α at β = ({beta1}, {beta2}) ({over}; "
        f"{pair['limit_over_lr']:.3g}α in the limit{random})"
    )


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    """The approximate bound decides (:data:`RULE`); the rest is reported."""
    held = checks(numbers)
    betas = " / ".join(f"({b1}, {b2})" for b1, b2 in (pair["betas"] for pair in numbers["adam"]))
    decided = "; ".join(
        f"{NAMES.get(name, name)} {per_beta(numbers, name)}: "
        + ("within it" if hold else "exceeds it")
        for name, hold in zip(DECIDING, held, strict=True)
    )
    adamax = numbers["adamax"]
    adamax_example = adamax["counterexample"]["max_over_lr"]
    growth = " / ".join(
        f"{pair['counterexample']['growth_per_step']:.3g}" for pair in numbers["adam"]
    )
    scaled = numbers["scaling"]
    eps_zero, eps_default = (max(row) for row in scaled["max_relative_difference"])
    at = scaled["exponents"][scaled["max_relative_difference"][1].index(eps_default)]
    broken = all(pair["counterexample"]["first_over_bound"] for pair in numbers["adam"])
    worst_case = max(
        case["max_vs_worst_case"]
        for pair in [*numbers["adam"], adamax]
        for case in pair["cases"].values()
    )
    sentence = (
        f"Adam, ε = 0, largest step over {numbers['steps']} steps of {numbers['coordinates']} "
        f"coordinates at β = {betas}, against |Δ_t| ≲ α read as at most "
        f"{1 + APPROXIMATE:g}α: {decided}. Not counted: sparse gradients (the paper's "
        f"exception when 1−β1 > √(1−β2)) {per_beta(numbers, 'sparse')}, constant "
        f"{per_beta(numbers, 'constant')} and sign-alternating "
        f"{per_beta(numbers, 'alternating')}. "
        + ("The literal bounds are false" if broken else "The literal bounds held in part")
        + f": one coordinate's gradients growing by β2/β1 per step ({growth}) reach "
        + "; ".join(literal(pair) for pair in numbers["adam"])
        + f"; Adamax's |Δ_t| ≤ α: g_t = β2^t reaches {adamax_example:.4g}α (the random "
        f"streams {max(c['max_over_lr'] for c in adamax['cases'].values()):.5g}α). "
        f"Scale invariance (gradients × 10^-4 … 10^4, normal): an identity at ε = 0 (largest "
        f"relative change {eps_zero:.2g}); at ε = 1e-8 it changes the trajectory by up to "
        f"{eps_default:.2g} of ‖θ‖∞ (at × 10^{at}). "
        + ("No step exceeded" if worst_case <= 1 + ROUNDING else "Some steps EXCEEDED")
        + f" the Cauchy–Schwarz worst case (largest ratio {worst_case:.6g})."
    )
    return verdict_of(held), sentence


# --- plots ---------------------------------------------------------------------------------


def plot_adam(numbers: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(numbers["adam"]), figsize=(13, 4.4), sharey=True)
    steps_axis = list(range(1, numbers["steps"] + 1))
    for axis, pair in zip(axes, numbers["adam"], strict=True):
        beta1, beta2 = pair["betas"]
        for name, case in pair["cases"].items():
            axis.plot(steps_axis, case["per_step"], label=NAMES.get(name, name), linewidth=1)
        axis.plot(
            steps_axis,
            pair["counterexample"]["per_step"],
            color="grey",
            linestyle=":",
            label="gradients growing by β2/β1 (worst case)",
        )
        axis.axhline(
            1 + APPROXIMATE,
            color="black",
            linestyle="-.",
            linewidth=1,
            label=f"{1 + APPROXIMATE:g}α",
        )
        axis.axhline(
            pair["bound_over_lr"], color="black", linestyle="--", linewidth=1, label="literal bound"
        )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("step t")
        axis.set_title(f"β1={beta1}, β2={beta2}: literal bound {pair['bound_over_lr']:.3g}α")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("max over coordinates of |Δ_t| / α")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=9)
    figure.subplots_adjust(bottom=0.27)
    figure.suptitle(f"Adam, ε = 0, α = {numbers['lr']:g}: largest step relative to α")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_scaling_and_adamax(numbers: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    scaled = numbers["scaling"]
    for eps, row in zip(scaled["eps"], scaled["max_relative_difference"], strict=True):
        pairs = [
            (k, max(value, ZERO_DRAWN_AT))
            for k, value in zip(scaled["exponents"], row, strict=True)
            if k != 0
        ]
        left.semilogy(*zip(*pairs, strict=True), "o-", label=f"Adam, ε = {eps:g}")
    left.set_xlabel(
        f"k (gradients multiplied by 10^k; k = 0 is the reference; 0 drawn at {ZERO_DRAWN_AT:g})"
    )
    left.set_ylabel("max over t of ‖θ_t(k) − θ_t(0)‖∞ / ‖θ_t(0)‖∞")
    left.set_title("Scale invariance (normal gradients)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)

    adamax = numbers["adamax"]
    names = list(adamax["cases"])
    values = [case["max_over_lr"] for case in adamax["cases"].values()]
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
        adamax["counterexample"]["max_over_lr"],
        color="grey",
        linestyle=":",
        label="g_t = β2^t (worst case)",
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
    name="properties",
    claim=CLAIM,
    paper=PAPER,
    run=run,
    plot=plot,
    verdict=verdict,
    rule=RULE,
)
