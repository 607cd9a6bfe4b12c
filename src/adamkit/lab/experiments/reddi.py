"""Reddi, Kale & Kumar (ICLR 2018), *On the Convergence of Adam and Beyond*: Adam fails on
simple convex online problems, AMSGrad does not.

Three problems on F = [−1, 1] (the iterate clipped after each step, the 1-D form of the
paper's projection), each a linear loss f_t(x) = g_t·x whose best fixed point is x* = −1:

* ``analytic`` (§3, Theorem 1): g_t = C when t mod 3 = 1, else −1, with C = 3; β1 = 0,
  β2 = 1/(1 + C²), α_t = α/√t; the paper's Algorithm 1 and 2 (no bias correction, no ε).
  SGD (α_t = α/√t) and AdaGrad, whose effective step never grows, are the methods that do
  not fail.
* ``online`` (§5): g_t = 1010 when t mod 101 = 1, else −10; β = (0.9, 0.99), lr 1e-3, in
  torch's form (bias correction, ε = 1e-8), as torchbearer's reproduction runs it.
* ``stochastic`` (§5): g_t = 1010 with probability 0.01, else −10; as ``online``.

Recorded at log-spaced steps: the iterate x_t and the average regret
R_t/t = (1/t) Σ_s f_s(x_s) − f_s(x*); and the mean iterate over the last 1 % of the steps
(the online problem's iterate swings within each period of 101 steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import adamkit
from adamkit.lab.frame import Experiment, Settings, pyplot, save, verdict_of

C = 3.0
ALPHA = 0.1  # the analytic problem's α in α_t = α/√t
STEPS = {  # per problem: quick, full
    "analytic": (20_000, 100_000),
    "online": (50_000, 1_500_000),
    "stochastic": (50_000, 1_500_000),
}
PROBLEMS = {
    "analytic": f"analytic (C = {C:g}, β1 = 0, β2 = 1/(1+C²), α_t = {ALPHA}/√t)",
    "online": "online (1010 every 101st step, else −10; β = (0.9, 0.99), lr 1e-3)",
    "stochastic": "stochastic (1010 with p = 0.01, else −10; β = (0.9, 0.99), lr 1e-3)",
}


def gradients(problem: str, steps: int, seed: int) -> list[float]:
    """g_1 … g_steps of ``problem``."""
    if problem == "analytic":
        return [C if t % 3 == 1 else -1.0 for t in range(1, steps + 1)]
    if problem == "online":
        return [1010.0 if t % 101 == 1 else -10.0 for t in range(1, steps + 1)]
    generator = torch.Generator().manual_seed(seed)
    spikes = torch.rand(steps, generator=generator, dtype=torch.float64) < 0.01
    return torch.where(spikes, 1010.0, -10.0).tolist()


def optimizers(problem: str) -> dict[str, Callable[[list[torch.Tensor]], Any]]:
    """The methods run on ``problem``, each a constructor taking the one param."""
    if problem == "analytic":
        paper = {"betas": (0.0, 1.0 / (1.0 + C**2)), "eps": 0.0, "bias_correction": False}
        return {
            "Adam": lambda p: adamkit.Adam(p, lr=ALPHA, **paper),
            "AMSGrad": lambda p: adamkit.AMSGrad(p, lr=ALPHA, **paper),
            "SGD": lambda p: adamkit.SGD(p, lr=ALPHA),
            "AdaGrad": lambda p: adamkit.Adagrad(p, lr=ALPHA),
        }
    return {
        "Adam": lambda p: adamkit.Adam(p, lr=1e-3, betas=(0.9, 0.99)),
        "AMSGrad": lambda p: adamkit.AMSGrad(p, lr=1e-3, betas=(0.9, 0.99)),
    }


def checkpoints(steps: int, count: int = 200) -> set[int]:
    """About ``count`` log-spaced steps from 1 to ``steps``."""
    return {round(math.exp(i * math.log(steps) / (count - 1))) for i in range(count)}


def follow(
    make: Callable[[list[torch.Tensor]], Any],
    grads: list[float],
    decay_lr: bool,
    progress: Callable[..., Any],
    label: str,
) -> dict[str, Any]:
    """Run one method over the gradient sequence, x_0 = 0, clipping to [−1, 1]; the
    iterate and the average regret at log-spaced steps, the mean iterate at the end."""
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = make([x])
    group = optimizer.param_groups[0]
    x.grad = torch.zeros_like(x)
    marks = checkpoints(len(grads))
    record: dict[str, Any] = {"step": [], "x": [], "regret": []}
    regret, position, tail, tail_start = 0.0, 0.0, 0.0, len(grads) - len(grads) // 100
    for t, g in enumerate(progress(grads, label, len(grads)), start=1):
        regret += g * (position + 1.0)  # f_t(x_t) − f_t(x*), x* = −1
        if decay_lr:
            group["lr"] = ALPHA / math.sqrt(t)
        x.grad.fill_(g)
        optimizer.step()
        with torch.no_grad():
            x.clamp_(-1.0, 1.0)
        position = x.item()
        if t > tail_start:
            tail += position
        if t in marks:
            record["step"].append(t)
            record["x"].append(position)
            record["regret"].append(regret / t)
    record["x_end"] = tail / (len(grads) - tail_start)
    return record


def run(settings: Settings) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for problem, (quick, full) in STEPS.items():
        steps = quick if settings.quick else full
        grads = gradients(problem, steps, settings.seed)
        results[problem] = {
            "steps": steps,
            "methods": {
                name: follow(
                    make, grads, problem == "analytic", settings.progress, f"{problem} {name}"
                )
                for name, make in optimizers(problem).items()
            },
        }
    return results


def final(numbers: dict[str, Any], problem: str, method: str) -> float:
    """The mean iterate over the last 1 % of the steps."""
    return numbers[problem]["methods"][method]["x_end"]


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    """Reproduced when Adam ends near the worst point +1 and AMSGrad near the optimum −1 on
    the analytic problem, and Adam ends near +1 on the paper's online and stochastic ones
    with AMSGrad well below it, by more than 0.5 (AMSGrad reaches −1 there only after about
    1.5 M steps at lr 1e-3)."""
    checks = [
        final(numbers, "analytic", "Adam") > 0.9,
        final(numbers, "analytic", "AMSGrad") < -0.9,
    ]
    for problem in ("online", "stochastic"):
        adam, amsgrad = final(numbers, problem, "Adam"), final(numbers, problem, "AMSGrad")
        checks += [adam > 0.9, amsgrad < adam - 0.5]
    words = "mean iterate over the last 1 % of the steps, " + "; ".join(
        f"{problem} after {numbers[problem]['steps']:,} steps: "
        + ", ".join(
            f"{method} x̄ = {final(numbers, problem, method):+.3f}"
            for method in numbers[problem]["methods"]
        )
        for problem in STEPS
    )
    outcome = verdict_of(checks)
    return outcome, words


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    names = []
    for key, label in (("x", "iterate $x_t$"), ("regret", "average regret $R_t/t$")):
        figure, axes = pyplot().subplots(1, 3, figsize=(15, 4.2))
        for axis, (problem, title) in zip(axes, PROBLEMS.items(), strict=True):
            for method, record in numbers[problem]["methods"].items():
                axis.plot(record["step"], record[key], label=method)
            axis.set_xscale("log")
            if key == "x":
                axis.axhline(-1.0, color="grey", linestyle=":", label="optimum x* = −1")
                axis.set_ylim(-1.1, 1.1)
            else:
                axis.set_yscale("symlog", linthresh=1e-3)
            axis.set_title(title, fontsize=9)
            axis.set_xlabel("step t")
            axis.set_ylabel(label)
            axis.legend(fontsize=8)
        title = f"Reddi et al.'s counterexamples: {label}"
        names.append(save(figure, folder, f"reddi_{key}.png", title))
    return names


EXPERIMENT = Experiment(
    name="reddi",
    claim="Adam converges to the worst point of a convex online problem; AMSGrad, which "
    "keeps the maximum of the second moment, converges to the optimum.",
    paper="Reddi, Kale & Kumar (ICLR 2018), Theorem 1 and §5 (Fig. 1): on f_t = C·x once "
    "every 3 steps and −x otherwise (C > 2, β1 = 0, β2 = 1/(1+C²)), and on the 1010/−10 "
    "online and stochastic problems with β = (0.9, 0.99), Adam's iterate goes to x = +1 and "
    "its average regret does not vanish; AMSGrad's iterate goes to the optimum x = −1 and its "
    "average regret goes to 0.",
    run=run,
    plot=plot,
    verdict=verdict,
)
