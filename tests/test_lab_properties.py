"""The lab's ``properties`` experiment: Adam's and Adamax's step bounds and Adam's invariance
to gradient scale (Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015,
§2.1 and §7.1), from its quick run."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import adamkit
from adamkit.lab.experiments import properties
from adamkit.lab.frame import Settings, no_progress

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def numbers() -> dict[str, Any]:
    return properties.EXPERIMENT.run(Settings("quick", 0, no_progress))


def adam_case(numbers: dict[str, Any], betas: tuple[float, float], name: str) -> dict[str, Any]:
    (pair,) = [pair for pair in numbers["adam"] if tuple(pair["betas"]) == betas]
    return pair["cases"][name]


def test_every_case_was_measured(numbers: dict[str, Any]) -> None:
    assert numbers["steps"] == 300
    assert [tuple(pair["betas"]) for pair in numbers["adam"]] == list(properties.BETAS)
    for pair in numbers["adam"]:
        assert list(pair["cases"]) == list(properties.DISTRIBUTIONS)
        for case in pair["cases"].values():
            assert len(case["per_step"]) == numbers["steps"]
            assert max(case["per_step"]) == pytest.approx(case["max"], rel=1e-5)
    assert list(numbers["adamax"]["cases"]) == list(properties.DISTRIBUTIONS)


def test_paper_bounds() -> None:
    assert properties.adam_bound(0.9, 0.999) == pytest.approx(1e-3 * 0.1 / math.sqrt(1e-3))
    assert properties.adam_bound(0.9, 0.99) == pytest.approx(1e-3)
    assert properties.adam_bound(0.99, 0.999) == 1e-3


def test_scaled_gradients_leave_the_trajectory_unchanged(numbers: dict[str, Any]) -> None:
    scaling = numbers["scaling"]
    assert scaling["exponents"] == list(range(-4, 5))
    assert max(scaling["max_relative_difference"]) <= 1e-6


def test_constant_gradient_steps_exactly_lr(numbers: dict[str, Any]) -> None:
    # m̂_t = g and v̂_t = g², so |Δ_t| = α: the ratio is α/bound, which checks each bound.
    for pair in numbers["adam"]:
        expected = numbers["lr"] / pair["bound"]
        assert pair["cases"]["constant"]["max"] == pytest.approx(expected, rel=TOLERANCE)


def test_sparse_gradients_come_close_to_the_sparse_bound(numbers: dict[str, Any]) -> None:
    # The paper's severe-sparsity case: α(1−β1)/√(1−β2) ≈ 3.16α is approached, not just α.
    assert adam_case(numbers, (0.9, 0.999), "sparse")["max"] > 0.5


def test_no_adam_step_exceeds_the_worst_case(numbers: dict[str, Any]) -> None:
    for pair in numbers["adam"]:
        for case in pair["cases"].values():
            assert case["max_vs_worst_case"] <= 1 + TOLERANCE
            assert case["max"] <= pair["worst_case_over_lr"] * numbers["lr"] / pair["bound"] + 1e-9


def test_adamax_steps_reach_lr_and_stay_within_the_worst_case(numbers: dict[str, Any]) -> None:
    adamax = numbers["adamax"]
    for case in adamax["cases"].values():
        assert case["max_vs_worst_case"] <= 1 + TOLERANCE
        assert 1 - 1e-6 < case["max"] <= adamax["worst_case_over_lr"] + TOLERANCE


@pytest.mark.parametrize("betas", properties.BETAS)
def test_adam_worst_case_is_reached_by_growing_gradients(betas: tuple[float, float]) -> None:
    # g_s ∝ (β2/β1)^s makes Cauchy–Schwarz an equality: the formula is the true maximum.
    beta1, beta2 = betas
    count = 40
    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = adamkit.Adam([param], lr=properties.LR, betas=betas, eps=0.0)
    steps = []
    for s in range(1, count + 1):
        param.grad = torch.full((1,), (beta2 / beta1) ** s, dtype=torch.float64)
        before = param.detach().clone()
        optimizer.step()
        steps.append(float((param.detach() - before).abs()))
    worst_case = properties.adam_worst_case(beta1, beta2, count)
    assert steps[-1] == pytest.approx(float(worst_case[-1]), rel=1e-9)
    assert all(
        step <= float(w) * (1 + TOLERANCE) for step, w in zip(steps, worst_case, strict=True)
    )


def test_adamax_worst_case_is_reached_by_decaying_gradients() -> None:
    beta1, beta2 = properties.ADAMAX_BETAS
    count = 50
    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = adamkit.Adamax([param], lr=properties.LR, betas=(beta1, beta2), eps=0.0)
    for s in range(1, count + 1):
        param.grad = torch.full((1,), beta2**s, dtype=torch.float64)
        before = param.detach().clone()
        optimizer.step()
    step = float((param.detach() - before).abs())
    worst_case = properties.adamax_worst_case(beta1, beta2, count)
    assert step == pytest.approx(float(worst_case[-1]), rel=1e-9)


def test_sparse_stream() -> None:
    gradients = list(properties.gradient_stream("sparse", 4096, 50, seed=3))
    assert bool((gradients[0] != 0).all())
    density = float(torch.stack(gradients[1:]).ne(0).double().mean())
    assert 0.005 < density < 0.02


def test_verdict_follows_the_checks(numbers: dict[str, Any]) -> None:
    outcome, sentence = properties.verdict(numbers)
    held = properties.checks(numbers)
    expected = "reproduced" if all(held) else "partly" if any(held) else "not reproduced"
    assert outcome == expected
    assert f"{max(numbers['scaling']['max_relative_difference']):.2g}" in sentence
    sparse = adam_case(numbers, (0.9, 0.999), "sparse")["max"]
    assert f"sparse {sparse:.4g}" in sentence


def test_verdict_on_constructed_numbers(numbers: dict[str, Any]) -> None:
    def with_ratios(adam: float, scaled: float, adamax: float) -> dict[str, Any]:
        changed = copy.deepcopy(numbers)
        for pair in changed["adam"]:
            for case in pair["cases"].values():
                case["max"] = adam
        changed["scaling"]["max_relative_difference"] = [scaled] * len(properties.EXPONENTS)
        for case in changed["adamax"]["cases"].values():
            case["max"] = adamax
        return changed

    assert properties.verdict(with_ratios(0.9, 1e-12, 1.0))[0] == "reproduced"
    assert properties.verdict(with_ratios(1.1, 1e-12, 1.0))[0] == "partly"
    assert properties.verdict(with_ratios(0.9, 1e-3, 1.0))[0] == "partly"
    assert properties.verdict(with_ratios(0.9, 1e-12, 1.01))[0] == "partly"
    assert properties.verdict(with_ratios(1.1, 1e-3, 1.01))[0] == "not reproduced"


def test_plot_writes_its_files(numbers: dict[str, Any], tmp_path: Path) -> None:
    names = properties.plot(numbers, tmp_path)
    assert 1 <= len(names) <= 2
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) > 10_000


def test_numbers_are_json(numbers: dict[str, Any]) -> None:
    assert json.loads(json.dumps(numbers, allow_nan=False)) == numbers
