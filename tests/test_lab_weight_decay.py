"""The weight-decay experiment's quick run: the grids, the alignment measure, the verdict."""

from __future__ import annotations

import json

import pytest

from adamkit.lab import experiment
from adamkit.lab.experiments import weight_decay
from adamkit.lab.frame import Settings, no_progress


@pytest.fixture(scope="module")
def numbers():
    return experiment("weight-decay").run(Settings("quick", 0, no_progress))


def test_every_cell_is_trained(numbers):
    for name, table in numbers["optimizers"].items():
        lrs, decays = weight_decay.grids(name, quick=True)
        assert table["lrs"] == lrs and table["weight_decays"] == decays
        errors = [e for row in table["test_error"] for e in row]
        assert len(errors) == len(lrs) * len(decays)
        assert all(0 <= e <= 1 for e in errors)
        assert table["best"]["test_error"] == min(errors) < 0.1  # the best cell learned


def test_what_digits_shows(numbers):
    """What the quick run found (recorded, not tuned): AdamW's best test error is no worse
    than Adam-L2's, and the largest weight decay of each grid hurts at the smallest lr
    for the L2 forms (decay that large dominates the gradient)."""
    adam, adamw = numbers["optimizers"]["Adam (L2)"], numbers["optimizers"]["AdamW"]
    assert adamw["best"]["test_error"] <= adam["best"]["test_error"]
    for name in ("Adam (L2)", "SGD (L2)"):
        row = numbers["optimizers"][name]["test_error"][0]
        assert row[-1] > min(row)


def test_the_alignment_measure():
    """A diagonal basin (best λ ∝ 1/lr) gives slope −1, a column gives 0."""
    lrs, decays = [1e-3, 1e-2, 1e-1], [1e-3, 1e-2, 1e-1]
    diagonal = [[0 if i + j == 2 else 1 for j in range(3)] for i in range(3)]
    column = [[0 if j == 1 else 1 for j in range(3)] for i in range(3)]
    table = {"lrs": lrs, "weight_decays": decays}
    assert weight_decay.alignment({**table, "test_error": diagonal})["slope"] == pytest.approx(-1)
    assert weight_decay.alignment({**table, "test_error": column})["slope"] == pytest.approx(0)


def test_verdict_and_plot(numbers, tmp_path):
    outcome, sentence = weight_decay.verdict(numbers)
    checks = []
    for coupled, decoupled in weight_decay.PAIRS:
        a, b = numbers["optimizers"][coupled], numbers["optimizers"][decoupled]
        checks += [
            abs(b["slope"]) < abs(a["slope"]),
            b["best"]["test_error"] <= a["best"]["test_error"],
        ]
    assert outcome == (
        "reproduced" if all(checks) else "partly" if any(checks) else "not reproduced"
    )
    assert "slope" in sentence and "AdamW" in sentence and "SGDW" in sentence
    json.dumps(numbers, allow_nan=False)
    names = weight_decay.plot(numbers, tmp_path)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in names)
