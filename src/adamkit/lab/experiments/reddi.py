"""Reddi, Kale & Kumar (ICLR 2018), *On the Convergence of Adam and Beyond*: Adam fails on
simple convex online problems, AMSGrad does not.

Three problems on F = [−1, 1] (the iterate clipped after each step, the 1-D form of the
paper's projection), each a linear loss f_t(x) = g_t·x whose best fixed point is x* = −1:

* ``analytic`` (§3, Theorem 1): g_t = C when t mod 3 = 1, else −1, with C = 3; β1 = 0,
  β2 = 1/(1 + C²), α_t = α/√t; the paper's Algorithm 1 and 2 (no bias correction, no ε).
  SGD (α_t = α/√t, the paper's) and AdaGrad (a constant lr α: its step decays by itself,
  as 1/√(Σ g²)) are the methods that do not fail.
* ``online`` (§5): g_t = 1010 when t mod 101 = 1, else −10; β = (0.9, 0.99), lr 1e-3, in
  torch's form (bias correction, ε = 1e-8), as torchbearer's reproduction runs it.
* ``stochastic`` (§5): g_t = 1010 with probability 0.01, else −10, one sequence per seed;
  as ``online``.

The methods act on each coordinate of a parameter alone, so the runs of one method on the
online problem and on every seed of the stochastic one are the coordinates of one parameter
(one run each, at the cost of one). Recorded per run at log-spaced steps: the iterate x_t and
the average regret R_t/t = (1/t) Σ_s f_s(x_s) − f_s(x*); and the mean iterate x̄ over the last
1 % of the steps (the online problem's iterate swings within each period of 101 steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import adamkit
from adamkit.lab.frame import Experiment, Settings, pyplot, save, verdict_of

C = 3.0
ALPHA = 0.1  # the analytic problem's α: α_t = α/√t (Adam, AMSGrad, SGD), AdaGrad's constant lr
STEPS = {  # per problem: quick, full
    "analytic": (20_000, 100_000),
    "online": (50_000, 1_500_000),
    "stochastic": (50_000, 1_500_000),
}
SEEDS = (3, 5)  # of the stochastic problem: quick, full
NEAR = 0.1  # x̄ "at" a point of F = [−1, 1]: within 0.1 of it (5 % of F's width)
PROBLEMS = {
    "analytic": f"analytic (C = {C:g}, β1 = 0, β2 = 1/(1+C²), α_t = {ALPHA}/√t; AdaGrad {ALPHA})",
    "online": "online (1010 every 101st step, else −10; β = (0.9, 0.99), lr 1e-3)",
    "stochastic": "stochastic (1010 with p = 0.01, else −10; β = (0.9, 0.99), lr 1e-3)",
}
RULE = (
    "x̄ = the mean iterate over the last 1 % of the steps of a run (the stochastic problem: "
    f"{SEEDS[0]} seeds quick, {SEEDS[1]} full, each a run). On each problem two checks: Adam "
    f"at the worst point, x̄ ≥ 1 − {NEAR:g} in every run, and AMSGrad at the optimum, "
    f"x̄ ≤ −1 + {NEAR:g} in every run ({NEAR:g}: 5 % of F = [−1, 1], fixed before the run). "
    "Reproduced when all six hold, partly when some do, not reproduced when none does. At lr "
    "1e-3 AMSGrad needs about 1.5 M steps to reach −1 on the online problem: the quick run's "
    "50 k steps cannot show it there, and its verdict says so."
)

Make = Callable[[list[Tensor]], Any]


def gradients(problem: str, steps: int, seed: int) -> Tensor:
    """g_1 … g_steps of ``problem`` (float64); the stochastic one's drawn from ``seed``."""
    t = torch.arange(1, steps + 1)
    if problem == "analytic":
        return torch.where(t % 3 == 1, C, -1.0).double()
    if problem == "online":
        return torch.where(t % 101 == 1, 1010.0, -10.0).double()
    generator = torch.Generator().manual_seed(seed)
    spikes = torch.rand(steps, generator=generator, dtype=torch.float64) < 0.01
    return torch.where(spikes, 1010.0, -10.0).double()


def optimizers(problem: str) -> dict[str, tuple[Make, bool]]:
    """The methods run on ``problem``: name → (a constructor taking the one param, whether
    its lr is α/√t at step t)."""
    if problem == "analytic":
        paper = {"betas": (0.0, 1.0 / (1.0 + C**2)), "eps": 0.0, "bias_correction": False}
        return {
            "Adam": (lambda p: adamkit.Adam(p, lr=ALPHA, **paper), True),
            "AMSGrad": (lambda p: adamkit.AMSGrad(p, lr=ALPHA, **paper), True),
            "SGD": (lambda p: adamkit.SGD(p, lr=ALPHA), True),
            "AdaGrad": (lambda p: adamkit.Adagrad(p, lr=ALPHA), False),
        }
    return {
        "Adam": (lambda p: adamkit.Adam(p, lr=1e-3, betas=(0.9, 0.99)), False),
        "AMSGrad": (lambda p: adamkit.AMSGrad(p, lr=1e-3, betas=(0.9, 0.99)), False),
    }


def checkpoints(steps: int, count: int = 200) -> list[int]:
    """About ``count`` log-spaced steps from 1 to ``steps``, in order."""
    return sorted({round(math.exp(i * math.log(steps) / (count - 1))) for i in range(count)})


def follow(
    make: Make, grads: Tensor, decay: bool, progress: Callable[..., Any], label: str
) -> Tensor:
    """The iterates x_1 … x_T (a row per step) of one method from x_0 = 0, clipped to
    [−1, 1] after each step, on the problems in the columns of ``grads`` (T × k, g_t of each
    column in row t − 1) at once, one coordinate each; with ``decay`` the lr at step t is
    α/√t."""
    x = torch.zeros(grads.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = make([x])
    group = optimizer.param_groups[0]
    x.grad = torch.zeros_like(x)
    path = torch.empty_like(grads)
    for t in progress(range(1, len(grads) + 1), label, len(grads)):
        if decay:
            group["lr"] = ALPHA / math.sqrt(t)
        x.grad.copy_(grads[t - 1])
        optimizer.step()
        with torch.no_grad():
            path[t - 1] = x.clamp_(-1.0, 1.0)
    return path


def record(path: Tensor, grads: Tensor) -> list[dict[str, Any]]:
    """Per column of ``path`` (:func:`follow`): the iterate and the average regret
    R_t/t = (1/t) Σ_s g_s·(x_{s−1} − x*) at :func:`checkpoints`, and x̄, the mean iterate
    over the last 1 % of the steps."""
    before = torch.cat([torch.zeros_like(path[:1]), path[:-1]])  # x_{t−1}, played at step t
    steps = torch.arange(1, len(path) + 1, dtype=torch.float64)[:, None]
    regret = (grads * (before + 1.0)).cumsum(0) / steps
    marks = checkpoints(len(path))
    rows = torch.tensor(marks) - 1
    tail = path[len(path) - len(path) // 100 :].mean(0)
    return [
        {
            "step": marks,
            "x": path[rows, column].tolist(),
            "regret": regret[rows, column].tolist(),
            "x_end": tail[column].item(),
        }
        for column in range(path.shape[1])
    ]


def run(settings: Settings) -> dict[str, Any]:
    quick = 0 if settings.quick else 1
    seeds = [settings.seed + i for i in range(SEEDS[quick])]
    steps = {problem: counts[quick] for problem, counts in STEPS.items()}
    columns = {
        "analytic": [gradients("analytic", steps["analytic"], settings.seed)],
        "online": [gradients("online", steps["online"], settings.seed)],
        "stochastic": [gradients("stochastic", steps["stochastic"], seed) for seed in seeds],
    }
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {problem: {} for problem in STEPS}
    for together in (("analytic",), ("online", "stochastic")):  # of equal steps
        owners = [problem for problem in together for _ in columns[problem]]
        grads = torch.stack([g for problem in together for g in columns[problem]], dim=1)
        for name, (make, decay) in optimizers(together[0]).items():
            label = f"{' + '.join(together)} {name}"
            path = follow(make, grads, decay, settings.progress, label)
            for problem, found in zip(owners, record(path, grads), strict=True):
                runs[problem].setdefault(name, []).append(found)
    return {
        "seeds": seeds,
        **{problem: {"steps": steps[problem], "methods": runs[problem]} for problem in STEPS},
    }


def final(numbers: dict[str, Any], problem: str, method: str) -> list[float]:
    """x̄ of each run of ``method`` on ``problem`` (one per seed on the stochastic one)."""
    return [run["x_end"] for run in numbers[problem]["methods"][method]]


def checks(numbers: dict[str, Any]) -> dict[str, bool]:
    """:data:`RULE`'s checks: "problem: Adam at +1" and "problem: AMSGrad at −1"."""
    found = {}
    for problem in STEPS:
        found[f"{problem}: Adam at +1"] = all(
            x >= 1 - NEAR for x in final(numbers, problem, "Adam")
        )
        found[f"{problem}: AMSGrad at −1"] = all(
            x <= -1 + NEAR for x in final(numbers, problem, "AMSGrad")
        )
    return found


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    found = checks(numbers)

    def shown(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:+.3f}"
        return f"{min(values):+.3f} … {max(values):+.3f} ({len(values)} seeds)"

    words = "; ".join(
        f"{problem} after {numbers[problem]['steps']:,} steps: "
        + ", ".join(
            f"{method} x̄ = {shown(final(numbers, problem, method))}"
            for method in numbers[problem]["methods"]
        )
        for problem in STEPS
    )
    failed = [name for name, held in found.items() if not held]
    short = numbers["online"]["steps"] < STEPS["online"][1] and any(
        not found[f"{problem}: AMSGrad at −1"] for problem in ("online", "stochastic")
    )
    return verdict_of(list(found.values())), (
        f"Mean iterate x̄ over the last 1 % of the steps (optimum −1, worst point +1), "
        f"{words}. "
        + (f"Not within {NEAR:g}: {', '.join(failed)}." if failed else f"All within {NEAR:g}.")
        + (
            " At lr 1e-3 AMSGrad needs about 1.5 M steps to reach −1 on the online problem: "
            f"this run's {numbers['online']['steps']:,} cannot show it (the full run's can)."
            if short
            else ""
        )
    )


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    """The iterate and the average regret against the step, a panel per problem, a line per
    run (the stochastic problem's seeds in one colour)."""
    names = []
    for key, label in (("x", "iterate $x_t$"), ("regret", "average regret $R_t/t$")):
        figure, axes = pyplot().subplots(1, 3, figsize=(15, 4.2))
        for axis, (problem, title) in zip(axes, PROBLEMS.items(), strict=True):
            for index, (method, runs) in enumerate(numbers[problem]["methods"].items()):
                for number, found in enumerate(runs):
                    legend = method if number == 0 else None
                    axis.plot(found["step"], found[key], color=f"C{index}", label=legend)
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
    rule=RULE,
)
