"""Trajectories: SGD, momentum and the adaptive methods on 2-D test functions.

The claim of the overviews (Ruder 2016) and of Kingma & Ba (2015): methods that scale each
coordinate's step by its own gradient history cross ravines, where one direction is far steeper
than the other, and leave saddle points, where the gradient vanishes, in fewer steps than plain
SGD. Every optimizer starts from the same point of four functions written in torch (float64):
Rosenbrock's valley, Beale's function, a saddle between two minima started just off its stable
manifold, and an axis-aligned quadratic with condition number 100 (the ravine; axis-aligned is
the case a diagonal rescaling can fix). Each optimizer gets 13 log-spaced learning rates over
four decades placed for its family; the run kept is the one with the lowest final loss, where
final losses under the tolerance count as tied and go to the run that reached the tolerance
first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

import adamkit
from adamkit.lab.frame import Experiment, Settings

TOLERANCE = 1e-3  # a run has reached the optimum once f - f* < TOLERANCE
DIVERGED = 1e6  # a run has diverged once a coordinate leaves [-DIVERGED, DIVERGED]
MAX_POINTS = 500  # points of a path kept in the numbers
STEPS = {"quick": 300, "full": 3000}


def rosenbrock(x: Any, y: Any) -> Any:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def beale(x: Any, y: Any) -> Any:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def saddle(x: Any, y: Any) -> Any:
    return x**2 + y**4 / 4 - y**2 / 2


def ravine(x: Any, y: Any) -> Any:
    return 0.5 * (x**2 + 100 * y**2)


@dataclass(frozen=True)
class Problem:
    """A 2-D test function (written with arithmetic only, so it takes tensors and arrays),
    where the runs start, its minima and value there, and the window the plots show."""

    title: str
    function: Callable[[Any, Any], Any]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    f_star: float
    window: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max


# the saddle's start is (1.5, 1e-3), not (1, 1e-3): from there the first steps of Adagrad
# (lr 1) and RMSprop (lr 0.1), about lr·sign(g) and 10·lr·sign(g), land exactly on (0, 1)
PROBLEMS = {
    "rosenbrock": Problem(
        "Rosenbrock (1−x)² + 100(y−x²)²", rosenbrock, (-1.5, 2.0), ((1.0, 1.0),), 0.0,
        (-2.0, 2.0, -1.0, 3.0),
    ),
    "beale": Problem(
        "Beale", beale, (1.0, 1.5), ((3.0, 0.5),), 0.0, (-1.0, 4.5, -1.5, 2.5),
    ),
    "saddle": Problem(
        "saddle x² + y⁴/4 − y²/2", saddle, (1.5, 1e-3), ((0.0, 1.0), (0.0, -1.0)), -0.25,
        (-2.0, 2.0, -1.6, 1.6),
    ),
    "ravine": Problem(
        "ravine ½(x² + 100y²)", ravine, (-5.0, 1.0), ((0.0, 0.0),), 0.0, (-6.0, 1.5, -1.5, 1.5),
    ),
}  # fmt: skip


def lr_grid(low: int, high: int, per_decade: int = 3) -> list[float]:
    """Learning rates from 10**low to 10**high, ``per_decade`` of them per decade, log-spaced
    (three significant digits)."""
    count = (high - low) * per_decade + 1
    return [float(f"{10.0**exponent:.3g}") for exponent in np.linspace(low, high, count)]


# each optimizer (adamkit's defaults otherwise, so AdamW decays by 1e-2) and its learning-rate
# grid: 13 rates over four decades, a factor 2.15 apart (with a factor 4.6, plain SGD's best
# rate on the saddle fell between two grid points and its steps doubled). Plain SGD's step is
# lr·gradient, so its grid reaches lr = 1; momentum 0.9 multiplies the step by up to 10, so a
# decade lower; the adaptive steps are about lr per coordinate; Adagrad's shrink as 1/sqrt(t),
# so a decade higher for it
OPTIMIZERS: dict[str, tuple[Callable[..., torch.optim.Optimizer], list[float]]] = {
    "SGD": (adamkit.SGD, lr_grid(-4, 0)),
    "SGD momentum": (partial(adamkit.SGD, momentum=0.9), lr_grid(-5, -1)),
    "Nesterov": (partial(adamkit.SGD, momentum=0.9, nesterov=True), lr_grid(-5, -1)),
    "Adagrad": (adamkit.Adagrad, lr_grid(-2, 2)),
    "RMSprop": (adamkit.RMSprop, lr_grid(-3, 1)),
    "Adam": (adamkit.Adam, lr_grid(-3, 1)),
    "AdamW": (adamkit.AdamW, lr_grid(-3, 1)),
    "Adamax": (adamkit.Adamax, lr_grid(-3, 1)),
    "NAdam": (adamkit.NAdam, lr_grid(-3, 1)),
    "AMSGrad": (adamkit.AMSGrad, lr_grid(-3, 1)),
}


@dataclass
class Descent:
    """One run: the points visited (start first) and f − f* at each; ``diverged`` if it left
    the finite numbers or the box [-DIVERGED, DIVERGED]²."""

    lr: float
    points: list[tuple[float, float]]
    gaps: list[float]
    diverged: bool

    @property
    def final_gap(self) -> float:
        return math.inf if self.diverged else self.gaps[-1]

    @property
    def steps_to_tolerance(self) -> int | None:
        return next((step for step, gap in enumerate(self.gaps) if gap < TOLERANCE), None)


def descend(
    problem: Problem, make: Callable[..., torch.optim.Optimizer], lr: float, steps: int
) -> Descent:
    """Run ``steps`` steps of the optimizer ``make([param], lr=lr)`` from the problem's start
    (the plain definition of a run; :func:`descend_grid` runs a whole grid at once)."""
    point = torch.tensor(problem.start, dtype=torch.float64, requires_grad=True)
    optimizer = make([point], lr=lr)
    points, gaps = [problem.start], []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = problem.function(point[0], point[1])
        loss.backward()
        gaps.append(loss.item() - problem.f_star)
        optimizer.step()
        x, y = point.detach().tolist()
        if not (abs(x) <= DIVERGED and abs(y) <= DIVERGED):  # also catches NaN
            return Descent(lr, points, gaps, diverged=True)
        points.append((x, y))
    gaps.append(float(problem.function(*points[-1])) - problem.f_star)
    return Descent(lr, points, gaps, diverged=False)


def descend_grid(
    problem: Problem, make: Callable[..., torch.optim.Optimizer], lrs: Sequence[float], steps: int
) -> list[Descent]:
    """:func:`descend` for every learning rate of ``lrs``, run side by side to share the
    autograd overhead: one 2-element param per run, each in its own param group of one
    optimizer, so that the runs share no state; the losses are summed only for the backward
    pass, which gives each param its own gradient. A diverged run's param stops there."""
    params = [torch.tensor(problem.start, dtype=torch.float64, requires_grad=True) for _ in lrs]
    optimizer = make([{"params": [param], "lr": lr} for param, lr in zip(params, lrs, strict=True)])
    points: list[list[tuple[float, float]]] = [[problem.start] for _ in lrs]
    gaps: list[list[float]] = [[] for _ in lrs]
    running = list(range(len(lrs)))
    for _ in range(steps):
        optimizer.zero_grad()
        stacked = torch.stack(params)
        losses = problem.function(stacked[:, 0], stacked[:, 1])
        losses.sum().backward()
        values = losses.tolist()
        for index in running:
            gaps[index].append(values[index] - problem.f_star)
        optimizer.step()
        coordinates = torch.stack(params).tolist()
        for index in list(running):
            x, y = coordinates[index]
            if abs(x) <= DIVERGED and abs(y) <= DIVERGED:  # False for NaN
                points[index].append((x, y))
            else:
                running.remove(index)
                params[index].requires_grad_(False)  # no gradient, so no more steps
        if not running:
            break
    for index in running:
        gaps[index].append(float(problem.function(*points[index][-1])) - problem.f_star)
    return [
        Descent(lr, points[index], gaps[index], diverged=index not in running)
        for index, lr in enumerate(lrs)
    ]


def rank(descent: Descent) -> tuple[float, float, float]:
    """Sort key of the best run: lowest final f − f* (all under the tolerance tie), then the
    fewest steps to the tolerance, then the lowest final f − f*."""
    steps = descent.steps_to_tolerance
    final = descent.final_gap
    return (max(final, TOLERANCE), math.inf if steps is None else steps, final)


def distance(problem: Problem, x: float, y: float) -> float:
    """Euclidean distance from (x, y) to the problem's nearest minimum."""
    return min(math.hypot(x - mx, y - my) for mx, my in problem.minima)


def subsample(count: int) -> list[int]:
    """At most MAX_POINTS indices of ``count`` items, evenly spread, first and last kept."""
    if count <= MAX_POINTS:
        return list(range(count))
    return sorted({round(float(i)) for i in np.linspace(0, count - 1, MAX_POINTS)})


def short(value: float) -> float:
    """``value`` to 6 significant digits, for the paths kept in the numbers."""
    return float(f"{value:.6g}")


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarize(problem: Problem, runs: Sequence[Descent]) -> dict[str, Any]:
    """The best run's path and distance per step (subsampled, 6 digits), its steps to the
    tolerance and final distance, and every learning rate's final f − f* and steps."""
    best = min(runs, key=rank)
    kept = subsample(len(best.points))
    distances = [distance(problem, x, y) for x, y in best.points]
    return {
        "lr": best.lr,
        "steps_to_tolerance": best.steps_to_tolerance,
        "final_gap": finite_or_none(best.final_gap),
        "final_distance": None if best.diverged else distances[-1],
        "diverged": best.diverged,
        "step": kept,
        "x": [short(best.points[i][0]) for i in kept],
        "y": [short(best.points[i][1]) for i in kept],
        "distance": [short(distances[i]) for i in kept],
        "grid": [
            {
                "lr": run.lr,
                "final_gap": finite_or_none(run.final_gap),
                "steps_to_tolerance": run.steps_to_tolerance,
                "diverged": run.diverged,
            }
            for run in runs
        ],
    }


def run(settings: Settings) -> dict[str, Any]:
    """Every optimizer over its grid on every problem (deterministic: no randomness)."""
    torch.manual_seed(settings.seed)
    steps = STEPS["quick" if settings.quick else "full"]
    jobs = [(name, optimizer) for name in PROBLEMS for optimizer in OPTIMIZERS]
    functions: dict[str, Any] = {}
    for name, optimizer in settings.progress(jobs, "trajectories", len(jobs)):
        problem = PROBLEMS[name]
        make, grid = OPTIMIZERS[optimizer]
        runs = descend_grid(problem, make, grid, steps)
        entry = functions.setdefault(
            name,
            {
                "title": problem.title,
                "start": list(problem.start),
                "minima": [list(minimum) for minimum in problem.minima],
                "f_star": problem.f_star,
                "start_gap": float(problem.function(*problem.start)) - problem.f_star,
                "window": list(problem.window),
                "results": {},
            },
        )
        entry["results"][optimizer] = summarize(problem, runs)
    return {
        "steps": steps,
        "tolerance": TOLERANCE,
        "optimizers": list(OPTIMIZERS),
        "grids": {optimizer: grid for optimizer, (_, grid) in OPTIMIZERS.items()},
        "functions": functions,
    }


# --- verdict -------------------------------------------------------------------------------

CLAIM_FUNCTIONS = ("ravine", "saddle")
ADAPTIVE = ("Adam", "RMSprop")
SGD_FAMILY = ("SGD", "SGD momentum", "Nesterov")


def steps_of(numbers: dict[str, Any], function: str, optimizer: str) -> float:
    """Steps to the tolerance of the kept run; never reaching it counts as infinitely many."""
    steps = numbers["functions"][function]["results"][optimizer]["steps_to_tolerance"]
    return math.inf if steps is None else steps


def adaptive_wins(numbers: dict[str, Any], function: str) -> bool:
    """Whether Adam and RMSprop both reach the tolerance in fewer steps than plain SGD."""
    sgd = steps_of(numbers, function, "SGD")
    return all(steps_of(numbers, function, name) < sgd for name in ADAPTIVE)


def shown(steps: float) -> str:
    return "never" if math.isinf(steps) else str(int(steps))


def counts(numbers: dict[str, Any], function: str, names: Sequence[str]) -> str:
    return ", ".join(f"{name} {shown(steps_of(numbers, function, name))}" for name in names)


def fastest(numbers: dict[str, Any], function: str) -> str:
    """The optimizer first to the tolerance, its steps and how many get there at all."""
    names = numbers["optimizers"]
    steps = {name: steps_of(numbers, function, name) for name in names}
    reached = [name for name in names if math.isfinite(steps[name])]
    if not reached:
        return f"none of the {len(names)} gets there"
    best = min(reached, key=steps.__getitem__)
    return f"{len(reached)} of {len(names)} get there, fastest {best} {shown(steps[best])}"


def sgd_ahead(numbers: dict[str, Any], function: str) -> str:
    """The SGD-family optimizers that reach the tolerance before Adam, if any."""
    adam = steps_of(numbers, function, "Adam")
    ahead = [name for name in SGD_FAMILY if steps_of(numbers, function, name) < adam]
    return f"; {', '.join(ahead)} ahead of Adam" if ahead else ""


def unsettled(numbers: dict[str, Any], function: str, names: Sequence[str]) -> str:
    """For each of ``names`` whose grid has a rate that reaches the tolerance sooner than the
    kept run but ends above it: that rate, its steps and where it ends."""
    notes = []
    for name in names:
        result = numbers["functions"][function]["results"][name]
        arrivals = [
            run
            for run in result["grid"]
            if run["steps_to_tolerance"] is not None and not run["diverged"]
        ]
        if not arrivals:
            continue
        first = min(arrivals, key=lambda run: run["steps_to_tolerance"])
        if first["steps_to_tolerance"] < steps_of(numbers, function, name):
            notes.append(
                f"{name} at lr {first['lr']:g} gets there in {first['steps_to_tolerance']} but "
                f"ends at f − f* = {first['final_gap']:.2g}"
            )
    return "".join(f"; {note}" for note in notes)


def describe(numbers: dict[str, Any], function: str, outcome: str = "") -> str:
    named = ("SGD", *ADAPTIVE)
    details = (
        f"{outcome}{fastest(numbers, function)}{sgd_ahead(numbers, function)}"
        f"{unsettled(numbers, function, named)}"
    )
    return f"{function.capitalize()}: {counts(numbers, function, named)} ({details})"


def describe_claim(numbers: dict[str, Any], function: str) -> str:
    sgd = steps_of(numbers, function, "SGD")
    beaten = [name for name in ADAPTIVE if steps_of(numbers, function, name) >= sgd]
    if not beaten:
        outcome = "both adaptive methods faster than SGD"
    elif math.isinf(sgd):
        outcome = f"neither SGD nor {' nor '.join(beaten)} gets there"
    else:
        outcome = f"SGD as fast as or faster than {' and '.join(beaten)}"
    return describe(numbers, function, f"{outcome}; ")


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    """Reproduced if Adam and RMSprop beat plain SGD to the tolerance on both the ravine and
    the saddle, partly if on one of them, not reproduced if on neither."""
    wins = sum(adaptive_wins(numbers, function) for function in CLAIM_FUNCTIONS)
    label = {2: "reproduced", 1: "partly", 0: "not reproduced"}[wins]
    sentences = [describe_claim(numbers, function) for function in CLAIM_FUNCTIONS]
    sentences += [describe(numbers, function) for function in ("rosenbrock", "beale")]
    summary = (
        f"Steps to f − f* < {numbers['tolerance']:g}, each optimizer at its best learning rate, "
        f"{numbers['steps']} steps at most. " + ". ".join(sentences) + "."
    )
    return label, summary


# --- plots ---------------------------------------------------------------------------------

STYLES = ("-", "--", "-.", ":")


def style(index: int) -> dict[str, Any]:
    """A distinct colour and line style for the index-th optimizer."""
    import matplotlib

    return {"color": matplotlib.colormaps["tab10"](index % 10), "linestyle": STYLES[index % 4]}


def contour(axes: Any, name: str, entry: dict[str, Any]) -> None:
    """Log-spaced contours of f − f* over the problem's window, start and minima marked."""
    x_min, x_max, y_min, y_max = entry["window"]
    xs, ys = np.meshgrid(np.linspace(x_min, x_max, 300), np.linspace(y_min, y_max, 300))
    gaps = PROBLEMS[name].function(xs, ys) - entry["f_star"] + 1e-12
    low = max(float(gaps.min()), 1e-4)
    levels = np.logspace(math.log10(low), math.log10(float(gaps.max())), 25)
    axes.contour(xs, ys, gaps, levels=levels, colors="0.7", linewidths=0.7)
    for mx, my in entry["minima"]:
        axes.plot(mx, my, marker="*", color="black", markersize=16, linestyle="none")
    axes.plot(*entry["start"], marker="o", color="black", markersize=7, linestyle="none")
    axes.set_xlim(x_min, x_max)
    axes.set_ylim(y_min, y_max)
    axes.set_xlabel("x")
    axes.set_ylabel("y")
    axes.set_title(entry["title"])


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    """The paths over each function's contours, and the distance to the optimum per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optimizers = numbers["optimizers"]
    names = list(numbers["functions"])
    files = []

    figure, grid = plt.subplots(2, 2, figsize=(12, 10.5))
    for axes, name in zip(grid.flat, names, strict=True):
        entry = numbers["functions"][name]
        contour(axes, name, entry)
        for index, optimizer in enumerate(optimizers):
            result = entry["results"][optimizer]
            label = f"{optimizer}"
            axes.plot(result["x"], result["y"], linewidth=1.4, label=label, **style(index))
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=5, fontsize=11, frameon=False)
    figure.suptitle(
        f"Paths of each optimizer's best learning rate, {numbers['steps']} steps "
        "(● start, ★ minimum)",
        fontsize=14,
    )
    figure.tight_layout(rect=(0, 0.07, 1, 0.97))
    files.append("trajectories_paths.png")
    figure.savefig(folder / files[-1], dpi=100, bbox_inches="tight")
    plt.close(figure)

    figure, grid = plt.subplots(2, 2, figsize=(12, 9.5))
    for axes, name in zip(grid.flat, names, strict=True):
        entry = numbers["functions"][name]
        for index, optimizer in enumerate(optimizers):
            result = entry["results"][optimizer]
            distances = np.maximum(np.asarray(result["distance"], dtype=float), 1e-16)
            label = f"{optimizer} (lr {result['lr']:g})"
            axes.semilogy(result["step"], distances, linewidth=1.4, label=label, **style(index))
        axes.set_xlabel("step")
        axes.set_ylabel("distance to the (nearest) minimum")
        axes.set_title(entry["title"])
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize=8, ncol=2)
    figure.suptitle("Distance to the optimum per step (best learning rate each)", fontsize=14)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    files.append("trajectories_distance.png")
    figure.savefig(folder / files[-1], dpi=100, bbox_inches="tight")
    plt.close(figure)
    return files


EXPERIMENT = Experiment(
    name="trajectories",
    claim=(
        "Adaptive methods (AdaGrad, RMSprop, Adam and its variants) cross ravines "
        "(ill-conditioned valleys) and leave saddle points where plain SGD stalls, because "
        "they scale each coordinate's step."
    ),
    paper=(
        "Kingma & Ba (2015) give Adam per-parameter step sizes and state that it is invariant "
        "to diagonal rescaling of the gradients; Ruder's overview (2016), from 2-D animations "
        "that leave Adam out, says Adagrad, Adadelta and RMSprop head straight down the valley "
        "of Beale's function and quickly leave a saddle point where SGD, momentum and NAG "
        "struggle to break the symmetry. Dauphin et al. (2014) argue that saddle points, not "
        "local minima, slow gradient descent in high dimensions; their remedy is a saddle-free "
        "Newton method, not an adaptive first-order one."
    ),
    run=run,
    plot=plot,
    verdict=verdict,
)
