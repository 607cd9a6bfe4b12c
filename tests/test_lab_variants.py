"""The variants experiment's quick run: every variant learns; the verdict reads the numbers."""

from __future__ import annotations

import json
import math

import pytest

from adamkit.lab import experiment
from adamkit.lab.experiments import variants
from adamkit.lab.frame import Settings, no_progress


@pytest.fixture(scope="module")
def numbers():
    return experiment("variants").run(Settings("quick", 0, no_progress))


def test_every_variant_learns_the_task(numbers):
    assert set(numbers["optimizers"]) == set(variants.OPTIMIZERS)
    for name, result in numbers["optimizers"].items():
        curves = result["curves"]
        assert curves["train_loss"][-1] < 0.1 * math.log(10), name
        assert curves["test_accuracy"][-1] > 0.95, name


def test_verdict_follows_the_claims(numbers, tmp_path):
    found = variants.claims(numbers)
    runs = numbers["optimizers"]
    assert found["NAdam"][0] == (runs["NAdam"]["area"] <= runs["Adam"]["area"])
    assert found["ND-Adam"][0] == (
        runs["ND-Adam"]["curves"]["test_accuracy"][-1]
        >= runs["Adam"]["curves"]["test_accuracy"][-1]
    )
    holds = [held for held, _ in found.values()]
    outcome, sentence = variants.verdict(numbers)
    assert outcome == ("reproduced" if all(holds) else "partly" if any(holds) else "not reproduced")
    assert all(name in sentence for name in found)
    better = json.loads(json.dumps(numbers))
    adam = better["optimizers"]["Adam"]
    adam["area"] = 10.0
    adam["curves"]["train_loss"][-1] = 10.0
    adam["curves"]["test_accuracy"][-1] = 0.0
    assert variants.verdict(better)[0] == "reproduced"
    names = variants.plot(numbers, tmp_path)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in names)
