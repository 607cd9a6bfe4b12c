"""The state-precision experiment's quick run: every precision learns; the verdict reads the
numbers by its two rules (accuracy gap, loss band)."""

from __future__ import annotations

import json

import pytest

from adamkit.lab import experiment
from adamkit.lab.experiments import state_precision
from adamkit.lab.frame import Settings, no_progress


@pytest.fixture(scope="module")
def numbers():
    return experiment("state-precision").run(Settings("quick", 0, no_progress))


def test_every_precision_learns_the_task(numbers):
    """Every model, optimizer and precision reaches 95 % test accuracy; the compact runs
    differ from float32's (the state precision reached the step: equal curves would mean
    the option was ignored)."""
    expected = {f"{m}, {o}" for m in state_precision.MODELS for o in state_precision.OPTIMIZERS}
    assert set(numbers["runs"]) == expected
    for label, result in numbers["runs"].items():
        runs = result["precisions"]
        assert set(runs) == {"float32", *state_precision.PRECISIONS}
        for precision, curves in runs.items():
            assert curves["test_accuracy"][-1] > 0.95, (label, precision)
            if precision != "float32":
                assert curves["train_loss"] != runs["float32"]["train_loss"], (label, precision)


def test_verdict_follows_the_numbers(numbers, tmp_path):
    """Each check holds exactly where the accuracy gap is at most 0.5 pp and the loss curve
    stays inside float32's ±2 std band; moving a run out of either turns its check."""
    found = state_precision.checks(numbers)
    assert len(found) == 4 * len(state_precision.PRECISIONS)
    for label, held, _ in found:
        name, precision = label.rsplit(", ", 1)
        runs = numbers["runs"][name]["precisions"]
        full, compact = runs["float32"], runs[precision]
        gap = abs(compact["test_accuracy"][-1] - full["test_accuracy"][-1])
        inside = all(
            abs(c - f) <= 2 * s
            for c, f, s in zip(
                compact["train_loss"], full["train_loss"], full["spread"], strict=True
            )
        )
        assert held == (gap <= 0.005 + 1e-12 and inside), label
    outcome, sentence = state_precision.verdict(numbers)
    holds = [held for _, held, _ in found]
    assert outcome == ("reproduced" if all(holds) else "partly" if any(holds) else "not reproduced")
    assert all(label in sentence for label, _, _ in found)

    same = json.loads(json.dumps(numbers))  # every compact run replaced by float32's
    for result in same["runs"].values():
        for precision in state_precision.PRECISIONS:
            result["precisions"][precision] = result["precisions"]["float32"]
    assert state_precision.verdict(same)[0] == "reproduced"
    worse = json.loads(json.dumps(same))
    first = next(iter(worse["runs"].values()))["precisions"]["8-bit"]
    first["test_accuracy"] = [*first["test_accuracy"][:-1], first["test_accuracy"][-1] - 0.006]
    assert state_precision.verdict(worse)[0] == "partly"
    names = state_precision.plot(numbers, tmp_path)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in names)
