"""Trajectories: SGD, momentum and the adaptive methods on 2-D test functions.

The claim of the overviews (Ruder 2016) and of Kingma & Ba (2015): methods that scale each
coordinate's step by its own gradient history cross ravines, where one direction is far steeper
than the other, and leave saddle points, where the gradient vanishes, where plain SGD stalls.
Every optimizer starts from the same point of four functions written in torch (float64):
Rosenbrock's valley, Beale's function, a saddle between two minima started just off its stable
manifold, and a quadratic ravine of condition number 100 rotated by 45°. An axis-aligned ravine
is the one case a per-coordinate rescaling fixes outright; at 45° the Hessian's diagonal entries
are equal, so the best diagonal rescaling is a multiple of the identity and per-coordinate
scaling brings no built-in advantage.

A run counts its steps to the first point where f − f* < :data:`TARGET` (first hit), within a
cap of :data:`CAPS` steps. Each optimizer's learning-rate grid is raced side by side and the
race stops at the first hit: the rate kept is the one that gets there first (ties go to the
middle of the tied rates, :func:`adamkit.lab.stats.best`; a rate at the grid's end is flagged),
so the rate is chosen by the criterion the verdict reads, and a result within the cap is the
same under any larger cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

import adamkit
from adamkit.lab.frame import Experiment, Settings, verdict_of
from adamkit.lab.stats import best

TARGET = 1e-3  # a run has reached the optimum once f - f* < TARGET
FACTOR = 2  # "faster": at most 1/FACTOR of plain SGD's steps
CAPS = {"quick": 500, "full": 5000}  # steps a run may take at most
PER_DECADE = 6  # learning rates per decade of each grid
DIVERGED = 1e6  # a run has diverged once a coordinate leaves [-DIVERGED, DIVERGED]
MAX_POINTS = 500  # points of a path kept in the numbers
HALF = math.sqrt(0.5)


def rosenbrock(x: Any, y: Any) -> Any:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def beale(x: Any, y: Any) -> Any:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def saddle(x: Any, y: Any) -> Any:
    return x**2 + y**4 / 4 - y**2 / 2


def ravine(x: Any, y: Any) -> Any:
    """½(u² + 100v²) in the coordinates u = (x + y)/√2, v = (y − x)/√2: the valley runs along
    the diagonal y = x."""
    u = (x + y) * HALF
    v = (y - x) * HALF
    return 0.5 * (u**2 + 100 * v**2)


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
# (lr 1) and RMSprop (lr 0.1), about lr·sign(g) and 10·lr·sign(g), land exactly on (0, 1).
# The ravine starts at (u, v) = (−5, 1), f = 62.5
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
        "ravine ½(u² + 100v²), rotated 45°", ravine, (-6 * HALF, -4 * HALF), ((0.0, 0.0),),
        0.0, (-5.0, 1.5, -4.5, 1.5),
    ),
}  # fmt: skip


def lr_grid(low: int, high: int, per_decade: int = PER_DECADE) -> list[float]:
    """Learning rates from 10**low to 10**high, ``per_decade`` of them per decade, log-spaced
    (three significant digits)."""
    count = (high - low) * per_decade + 1
    return [float(f"{10.0**exponent:.3g}") for exponent in np.linspace(low, high, count)]


# each optimizer (adamkit's defaults otherwise, so AdamW decays by 1e-2) and its learning-rate
# grid: 25 rates over four decades, a factor 1.47 apart. Plain SGD's best rate on a quadratic
# lies just below its stability limit 2/L, where its steps fall steeply with the rate; with a
# factor 2.15 its kept rate on the ravine was half its best (0.01 against 2/(L+μ) ≈ 0.0198) and
# the grid, not SGD, decided. Plain SGD's step is lr·gradient, so its grid reaches lr = 1;
# momentum 0.9 multiplies the step by up to 10, so a decade lower; the adaptive steps are about
# lr per coordinate; Adagrad's shrink as 1/sqrt(t), so a decade higher for it
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

# the quick run's optimizers: the three the claim compares, momentum and Adagrad; the full run
# has all ten
QUICK = ("SGD", "SGD momentum", "Adagrad", "RMSprop", "Adam")
CLAIM_FUNCTIONS = ("ravine", "saddle")
ADAPTIVE = ("Adam", "RMSprop")

RULE = (
    f"Steps to the first point with f − f* < {TARGET:g} (first hit), within a cap of "
    f"{CAPS['quick']} steps (quick) or {CAPS['full']} (full). Each optimizer's grid of "
    f"{PER_DECADE} learning rates per decade over four decades runs side by side; the rate "
    "kept is the one that gets there first (ties: the middle of the tied rates; a rate at the "
    "grid's end is flagged). On each of the ravine (rotated 45°) and the saddle, Adam and "
    f"RMSprop are each compared with plain SGD: faster when they need at most 1/{FACTOR} of "
    "SGD's steps. A method that does not get there within the cap needs more steps than the "
    f"cap: SGD not getting there makes an adaptive method faster only when it got there within "
    f"1/{FACTOR} of the cap (whatever SGD's count, it is then over {FACTOR} times as many); "
    "otherwise, or when the adaptive method does not get there either, the comparison is "
    "undecided and does not hold; an adaptive method that does not get there while SGD does "
    "is not faster. The claim holds on a function when both adaptive methods are faster; it is "
    "not tested on a function where none of the three gets there. Reproduced when it holds on "
    "both functions, partly on one, not reproduced on neither, not tested when neither function "
    "was tested. A decided comparison is the same under any larger cap. Deterministic (no "
    "seeds): every run starts from the same point with exact gradients."
)


@dataclass
class Descent:
    """One run: the points visited (start first), f − f* at each, and ``diverged`` if it left
    the finite numbers or the box [-DIVERGED, DIVERGED]²."""

    lr: float
    points: list[tuple[float, float]]
    gaps: list[float]
    diverged: bool

    @property
    def steps(self) -> int | None:
        """Steps to the first point with f − f* < TARGET; None if the run has none."""
        return next((step for step, gap in enumerate(self.gaps) if gap < TARGET), None)

    @property
    def final_gap(self) -> float:
        return math.inf if self.diverged else self.gaps[-1]


def inside(x: float, y: float) -> bool:
    """Whether (x, y) is finite and in the box [-DIVERGED, DIVERGED]² (False for NaN)."""
    return abs(x) <= DIVERGED and abs(y) <= DIVERGED


def descend(
    problem: Problem, make: Callable[..., torch.optim.Optimizer], lr: float, cap: int
) -> Descent:
    """Run the optimizer ``make([param], lr=lr)`` from the problem's start until its first hit,
    for at most ``cap`` steps (the plain definition of a run; :func:`descend_grid` races a
    whole grid at once)."""
    point = torch.tensor(problem.start, dtype=torch.float64, requires_grad=True)
    optimizer = make([point], lr=lr)
    points, gaps = [problem.start], []
    for step in range(cap + 1):
        optimizer.zero_grad()
        loss = problem.function(point[0], point[1])
        gaps.append(loss.item() - problem.f_star)
        if gaps[-1] < TARGET or step == cap:
            break
        loss.backward()
        optimizer.step()
        x, y = point.detach().tolist()
        if not inside(x, y):
            return Descent(lr, points, gaps, diverged=True)
        points.append((x, y))
    return Descent(lr, points, gaps, diverged=False)


def descend_grid(
    problem: Problem, make: Callable[..., torch.optim.Optimizer], lrs: Sequence[float], cap: int
) -> list[Descent]:
    """Race every learning rate of ``lrs`` side by side until the first hit of any of them
    (or ``cap`` steps): each run is :func:`descend`'s, cut where the race stopped. One
    2-element param per run, each in its own param group of one optimizer, so that the runs
    share no state; the losses are summed only for the backward pass, which gives each param
    its own gradient. A diverged run's param stops there."""
    params = [torch.tensor(problem.start, dtype=torch.float64, requires_grad=True) for _ in lrs]
    optimizer = make([{"params": [param], "lr": lr} for param, lr in zip(params, lrs, strict=True)])
    points: list[list[tuple[float, float]]] = [[problem.start] for _ in lrs]
    gaps: list[list[float]] = [[] for _ in lrs]
    running = list(range(len(lrs)))
    for step in range(cap + 1):
        optimizer.zero_grad()
        stacked = torch.stack(params)
        losses = problem.function(stacked[:, 0], stacked[:, 1])
        values = losses.tolist()
        for index in running:
            gaps[index].append(values[index] - problem.f_star)
        if step == cap or any(gaps[index][-1] < TARGET for index in running):
            break
        losses.sum().backward()
        optimizer.step()
        coordinates = torch.stack(params).tolist()
        for index in list(running):
            x, y = coordinates[index]
            if inside(x, y):
                points[index].append((x, y))
            else:
                running.remove(index)
                params[index].requires_grad_(False)  # no gradient, so no more steps
        if not running:
            break
    return [
        Descent(lr, points[index], gaps[index], diverged=index not in running)
        for index, lr in enumerate(lrs)
    ]


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


def summarize(problem: Problem, runs: Sequence[Descent]) -> dict[str, Any]:
    """The run kept, the first to the target (if none gets there: the lowest final f − f*,
    for the plots), its steps, rate, tied rates and grid-edge flag, its path and distance to
    the optimum per step (subsampled, 6 digits)."""
    reached = any(run.steps is not None for run in runs)
    score = {
        run.lr: (run.steps if run.steps is not None else math.inf) if reached else run.final_gap
        for run in runs
    }
    choice = best(score)
    kept = next(run for run in runs if run.lr == choice.key)
    indices = subsample(len(kept.points))
    distances = [distance(problem, x, y) for x, y in kept.points]
    return {
        "lr": kept.lr,
        "steps": kept.steps,
        "ties": list(choice.ties) if reached else [],
        "at_edge": choice.at_edge,
        "final_gap": kept.final_gap if math.isfinite(kept.final_gap) else None,
        "diverged": kept.diverged,
        "step": indices,
        "x": [short(kept.points[i][0]) for i in indices],
        "y": [short(kept.points[i][1]) for i in indices],
        "distance": [short(distances[i]) for i in indices],
    }


def measure(
    functions: Sequence[str],
    optimizers: Sequence[str],
    cap: int,
    progress: Callable[[list[tuple[str, str]], str, int], Iterable[tuple[str, str]]],
) -> dict[str, Any]:
    """Each optimizer's grid raced on each of ``functions`` with ``cap``: the numbers
    :func:`verdict` reads. ``progress`` wraps the loop (:attr:`Settings.progress`)."""
    jobs = [(name, optimizer) for name in functions for optimizer in optimizers]
    entries: dict[str, Any] = {}
    for name, optimizer in progress(jobs, "trajectories", len(jobs)):
        problem = PROBLEMS[name]
        make, grid = OPTIMIZERS[optimizer]
        entry = entries.setdefault(
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
        entry["results"][optimizer] = summarize(problem, descend_grid(problem, make, grid, cap))
    return {
        "cap": cap,
        "target": TARGET,
        "factor": FACTOR,
        "optimizers": list(optimizers),
        "grids": {optimizer: OPTIMIZERS[optimizer][1] for optimizer in optimizers},
        "functions": entries,
    }


def run(settings: Settings) -> dict[str, Any]:
    """Every problem, the :data:`QUICK` optimizers in a quick run and all in a full one, with
    the mode's cap (deterministic: no randomness)."""
    optimizers = QUICK if settings.quick else tuple(OPTIMIZERS)
    cap = CAPS["quick" if settings.quick else "full"]
    return measure(tuple(PROBLEMS), optimizers, cap, settings.progress)


# --- verdict -------------------------------------------------------------------------------


def steps_of(numbers: dict[str, Any], function: str, optimizer: str) -> float:
    """Steps to the first hit of the kept run; not getting there within the cap is inf."""
    steps = numbers["functions"][function]["results"][optimizer]["steps"]
    return math.inf if steps is None else steps


def race(adaptive: float, sgd: float, cap: int) -> str:
    """An adaptive method's steps against plain SGD's (inf: not within ``cap``): "faster"
    (at most 1/FACTOR of SGD's, where SGD's are known to exceed the cap when it never got
    there), "not faster" or "undecided" (:data:`RULE`)."""
    if math.isfinite(sgd):
        return "faster" if FACTOR * adaptive <= sgd else "not faster"
    return "faster" if FACTOR * adaptive <= cap else "undecided"


def holds(numbers: dict[str, Any], function: str) -> bool | None:
    """Whether Adam and RMSprop are both faster than SGD on ``function``; None (not tested)
    when none of the three gets there within the cap."""
    counts = [steps_of(numbers, function, name) for name in ("SGD", *ADAPTIVE)]
    if all(math.isinf(count) for count in counts):
        return None
    sgd = counts[0]
    return all(race(count, sgd, numbers["cap"]) == "faster" for count in counts[1:])


def shown(numbers: dict[str, Any], function: str, optimizer: str) -> str:
    """An optimizer's steps and kept rate, "never" if it does not get there."""
    result = numbers["functions"][function]["results"][optimizer]
    if result["steps"] is None:
        return f"{optimizer} never"
    edge = ", at the grid's end" if result["at_edge"] else ""
    return f"{optimizer} {result['steps']} (lr {result['lr']:g}{edge})"


def compared(numbers: dict[str, Any], function: str, optimizer: str) -> str:
    """An adaptive method's steps, its speed-up over SGD and the race's outcome."""
    adaptive = steps_of(numbers, function, optimizer)
    sgd = steps_of(numbers, function, "SGD")
    ratio = f"{sgd / adaptive:.2f}×, " if math.isfinite(adaptive) and math.isfinite(sgd) else ""
    return f"{shown(numbers, function, optimizer)}: {ratio}{race(adaptive, sgd, numbers['cap'])}"


def fastest(numbers: dict[str, Any], function: str) -> str:
    """How many optimizers get there and the first of them."""
    names = numbers["optimizers"]
    steps = {name: steps_of(numbers, function, name) for name in names}
    reached = [name for name in names if math.isfinite(steps[name])]
    if not reached:
        return f"none of the {len(names)} gets there"
    first = min(reached, key=steps.__getitem__)
    return f"{len(reached)} of {len(names)} get there, first {shown(numbers, function, first)}"


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    """Reproduced if Adam and RMSprop each need at most 1/FACTOR of SGD's steps on both the
    ravine and the saddle, partly on one, not reproduced on neither (:data:`RULE`)."""
    checks = [holds(numbers, function) for function in CLAIM_FUNCTIONS]
    outcome = {True: "holds", False: "does not hold", None: "not tested"}
    sentences = [
        f"{function.capitalize()}: {shown(numbers, function, 'SGD')}; "
        + "; ".join(compared(numbers, function, name) for name in ADAPTIVE)
        + f" → {outcome[check]} ({fastest(numbers, function)})"
        for function, check in zip(CLAIM_FUNCTIONS, checks, strict=True)
    ]
    sentences += [
        f"{function.capitalize()} (not judged): "
        + ", ".join(shown(numbers, function, name) for name in ("SGD", *ADAPTIVE))
        + f" ({fastest(numbers, function)})"
        for function in numbers["functions"]
        if function not in CLAIM_FUNCTIONS
    ]
    summary = (
        f"Steps to the first f − f* < {numbers['target']:g}, each optimizer at the rate of its "
        f"grid that gets there first, at most {numbers['cap']} steps; faster = at most "
        f"1/{numbers['factor']} of SGD's steps. " + ". ".join(sentences) + "."
    )
    return verdict_of(checks), summary


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
            axes.plot(result["x"], result["y"], linewidth=1.4, label=optimizer, **style(index))
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=5, fontsize=11, frameon=False)
    figure.suptitle(
        f"Paths at each optimizer's rate first to f − f* < {numbers['target']:g}, to there or "
        f"{numbers['cap']} steps (● start, ★ minimum)",
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
            steps = "never" if result["steps"] is None else result["steps"]
            label = f"{optimizer} (lr {result['lr']:g}): {steps}"
            axes.semilogy(result["step"], distances, linewidth=1.4, label=label, **style(index))
        axes.set_xlabel("step")
        axes.set_ylabel("distance to the (nearest) minimum")
        axes.set_title(entry["title"])
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize=8, ncol=2)
    figure.suptitle("Distance to the optimum per step (rate first to the target each)", fontsize=14)
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
    rule=RULE,
)
