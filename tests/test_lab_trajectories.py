"""The trajectories experiment: its quick run, checked against the claim's direction."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from adamkit.lab.experiments import trajectories
from adamkit.lab.frame import VERDICTS, Settings, no_progress


@pytest.fixture(scope="module")
def numbers() -> dict[str, Any]:
    return trajectories.EXPERIMENT.run(Settings("quick", 0, no_progress))


def steps(numbers: dict[str, Any], function: str, optimizer: str) -> float:
    found = numbers["functions"][function]["results"][optimizer]["steps_to_tolerance"]
    return math.inf if found is None else found


def test_every_function_and_optimizer_is_there(numbers: dict[str, Any]) -> None:
    assert set(numbers["functions"]) == {"rosenbrock", "beale", "saddle", "ravine"}
    for entry in numbers["functions"].values():
        assert list(entry["results"]) == numbers["optimizers"]
        for optimizer, result in entry["results"].items():
            assert result["lr"] in numbers["grids"][optimizer]
            assert len(result["grid"]) == len(numbers["grids"][optimizer])
            assert len(result["x"]) == len(result["y"]) == len(result["distance"])
            assert len(result["step"]) <= trajectories.MAX_POINTS
            assert result["step"][0] == 0 and result["step"][-1] == numbers["steps"]


def test_every_best_run_improves_on_its_start(numbers: dict[str, Any]) -> None:
    for name, entry in numbers["functions"].items():
        for optimizer, result in entry["results"].items():
            assert not result["diverged"], (name, optimizer)
            assert result["final_gap"] < entry["start_gap"], (name, optimizer)
            assert result["distance"][-1] < result["distance"][0], (name, optimizer)


@pytest.mark.parametrize("optimizer", ["SGD momentum", "Adam", "NAdam"])
@pytest.mark.parametrize("function", ["rosenbrock", "saddle"])
def test_a_grid_run_side_by_side_equals_single_runs(function: str, optimizer: str) -> None:
    problem = trajectories.PROBLEMS[function]
    make, grid = trajectories.OPTIMIZERS[optimizer]
    together = trajectories.descend_grid(problem, make, grid, 60)
    for lr, run in zip(grid, together, strict=True):
        alone = trajectories.descend(problem, make, lr, 60)
        assert (run.lr, run.points, run.gaps, run.diverged) == (
            alone.lr,
            alone.points,
            alone.gaps,
            alone.diverged,
        )
    if (function, optimizer) == ("rosenbrock", "SGD momentum"):  # the large rates blow up
        assert any(run.diverged for run in together)


def test_the_kept_run_is_the_best_of_its_grid(numbers: dict[str, Any]) -> None:
    tolerance = numbers["tolerance"]
    for entry in numbers["functions"].values():
        for result in entry["results"].values():
            finals = [run["final_gap"] for run in result["grid"] if not run["diverged"]]
            assert max(result["final_gap"], tolerance) <= max(min(finals), tolerance)


def test_adam_crosses_the_ravine_before_sgd(numbers: dict[str, Any]) -> None:
    assert steps(numbers, "ravine", "Adam") < steps(numbers, "ravine", "SGD")


def test_adam_leaves_the_saddle_before_sgd(numbers: dict[str, Any]) -> None:
    assert steps(numbers, "saddle", "Adam") < steps(numbers, "saddle", "SGD")
    result = numbers["functions"]["saddle"]["results"]["Adam"]
    assert abs(abs(result["y"][-1]) - 1) < 0.1  # at one of the minima (0, ±1)


def test_verdict_agrees_with_the_numbers(numbers: dict[str, Any]) -> None:
    wins = 0
    for function in ("ravine", "saddle"):
        sgd = steps(numbers, function, "SGD")
        wins += steps(numbers, function, "Adam") < sgd and steps(numbers, function, "RMSprop") < sgd
    expected = {2: "reproduced", 1: "partly", 0: "not reproduced"}[wins]
    label, summary = trajectories.EXPERIMENT.verdict(numbers)
    assert label in VERDICTS
    assert label == expected
    for function in ("ravine", "saddle"):
        for optimizer in ("SGD", "Adam", "RMSprop"):
            count = steps(numbers, function, optimizer)
            assert f"{optimizer} {'never' if math.isinf(count) else int(count)}" in summary


def test_plot_writes_the_files_it_names(numbers: dict[str, Any], tmp_path: Path) -> None:
    files = trajectories.EXPERIMENT.plot(numbers, tmp_path)
    assert files
    for name in files:
        assert name.endswith(".png")
        assert (tmp_path / name).stat().st_size > 10_000


def test_numbers_survive_json(numbers: dict[str, Any]) -> None:
    assert json.loads(json.dumps(numbers, allow_nan=False)) == numbers
