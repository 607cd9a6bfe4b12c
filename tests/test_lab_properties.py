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
            assert max(case["per_step"]) == pytest.approx(case["max_over_lr"], rel=1e-5)
            assert case["per_step"][case["step"] - 1] == pytest.approx(
                case["max_over_lr"], rel=1e-5
            )
    assert list(numbers["adamax"]["cases"]) == list(properties.DISTRIBUTIONS)


def test_paper_bounds() -> None:
    assert properties.adam_bound(0.9, 0.999) == pytest.approx(1e-3 * 0.1 / math.sqrt(1e-3))
    assert properties.adam_bound(0.9, 0.99) == pytest.approx(1e-3)
    assert properties.adam_bound(0.99, 0.999) == 1e-3
    assert properties.adam_limit(0.9, 0.99) == pytest.approx(2.3452, rel=1e-4)


def test_scale_invariance_is_an_identity_at_eps_zero_only(numbers: dict[str, Any]) -> None:
    scaling = numbers["scaling"]
    assert scaling["exponents"] == list(range(-4, 5)) and scaling["eps"] == [0.0, 1e-8]
    at_zero, at_default = scaling["max_relative_difference"]
    assert max(at_zero) <= 1e-12
    # with ε = 1e-8 the smaller the gradients, the more ε changes the trajectory
    negative = at_default[: scaling["exponents"].index(0)]
    assert negative == sorted(negative, reverse=True) and negative[0] > 1e-2


def test_constant_gradient_steps_exactly_lr(numbers: dict[str, Any]) -> None:
    # m̂_t = g and v̂_t = g², so |Δ_t| = α at every step
    for pair in numbers["adam"]:
        assert pair["cases"]["constant"]["max_over_lr"] == pytest.approx(1.0, rel=TOLERANCE)


def test_no_adam_step_exceeds_the_worst_case(numbers: dict[str, Any]) -> None:
    for pair in numbers["adam"]:
        for case in pair["cases"].values():
            assert case["max_vs_worst_case"] <= 1 + TOLERANCE
            assert case["max_over_lr"] <= pair["worst_case_over_lr"] * (1 + TOLERANCE)


def test_adamax_steps_reach_lr_and_stay_within_the_worst_case(numbers: dict[str, Any]) -> None:
    adamax = numbers["adamax"]
    for case in adamax["cases"].values():
        assert case["max_vs_worst_case"] <= 1 + TOLERANCE
        assert 1 - 1e-6 < case["max_over_lr"] <= adamax["worst_case_over_lr"] + TOLERANCE


def test_the_counterexamples_reach_the_worst_case(numbers: dict[str, Any]) -> None:
    # gradients growing by β2/β1 (Adam) or decaying by β2 (Adamax) make the Cauchy–Schwarz
    # bound an equality at every step: the formula is the true maximum, and it is reached
    count = numbers["steps"]
    for pair in numbers["adam"]:
        example = pair["counterexample"]
        worst = properties.adam_worst_case(*pair["betas"], count) / numbers["lr"]
        assert example["per_step"] == pytest.approx(worst.tolist(), rel=1e-5)
        assert example["max_over_lr"] == pytest.approx(pair["worst_case_over_lr"], rel=1e-9)
        assert example["growth_per_step"] == pytest.approx(pair["betas"][1] / pair["betas"][0])
    adamax = numbers["adamax"]
    assert adamax["counterexample"]["max_over_lr"] == pytest.approx(
        adamax["worst_case_over_lr"], rel=1e-6
    )


def test_sparse_stream() -> None:
    gradients = list(properties.gradient_stream("sparse", 4096, 50, seed=3))
    assert bool((gradients[0] != 0).all())
    density = float(torch.stack(gradients[1:]).ne(0).double().mean())
    assert 0.005 < density < 0.02


# --- finding 5 of issue 18 --------------------------------------------------------------------


def test_literal_bounds_are_reported_false_with_their_counterexample(
    numbers: dict[str, Any],
) -> None:
    _, sentence = properties.verdict(numbers)
    assert "The literal bounds are false" in sentence
    for pair in numbers["adam"]:
        example = pair["counterexample"]
        assert example["max_over_lr"] > pair["bound_over_lr"] * (1 + TOLERANCE)
        assert example["first_over_bound"] is not None
        assert f"{example['max_over_lr']:.3g}α at step {example['step']}" in sentence
    assert numbers["adamax"]["counterexample"]["max_over_lr"] > 1 + 1e-3
    assert f"reaches {numbers['adamax']['counterexample']['max_over_lr']:.4g}α" in sentence


def test_summary_gives_the_largest_steps_over_alpha_at_the_default_betas(
    numbers: dict[str, Any],
) -> None:
    # heavy-tailed and sparse gradients step nearly 2α at β = (0.9, 0.999): the summary says so
    _, sentence = properties.verdict(numbers)
    for name in ("cauchy", "sparse"):
        largest = adam_case(numbers, (0.9, 0.999), name)["max_over_lr"]
        assert largest > 1 + properties.APPROXIMATE
        assert f"{largest:.3f}α" in sentence


class Scaled(adamkit.Adam):
    """Adam whose every step is multiplied by ``FACTOR`` and clipped to ``CLIP``·α."""

    FACTOR = 1.0
    CLIP = math.inf

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        before = [[p.clone() for p in group["params"]] for group in self.param_groups]
        super().step()
        for group, starts in zip(self.param_groups, before, strict=True):
            limit = self.CLIP * group["lr"]
            for p, start in zip(group["params"], starts, strict=True):
                p.copy_(start + ((p - start) * self.FACTOR).clamp(-limit, limit))


@pytest.mark.parametrize(
    ("factor", "clip", "expected"),
    [(1.0, 1.0, "reproduced"), (2.0, math.inf, "not reproduced")],
)
def test_every_outcome_is_reachable_by_a_run(
    monkeypatch: pytest.MonkeyPatch, factor: float, clip: float, expected: str
) -> None:
    # an Adam whose steps never exceed α is judged "reproduced", one whose steps are twice
    # Adam's "not reproduced"; adamkit's Adam is "partly" (the quick run)
    monkeypatch.setattr(Scaled, "FACTOR", factor)
    monkeypatch.setattr(Scaled, "CLIP", clip)
    monkeypatch.setattr(adamkit, "Adam", Scaled)
    monkeypatch.setattr(properties, "steps", lambda settings: 60)
    numbers = properties.EXPERIMENT.run(Settings("quick", 0, no_progress))
    assert properties.EXPERIMENT.verdict(numbers)[0] == expected


def constructed(numbers: dict[str, Any], largest: dict[str, float]) -> dict[str, Any]:
    """The quick run's numbers with Adam's largest step over α set per stream (every β)."""
    changed = copy.deepcopy(numbers)
    for pair in changed["adam"]:
        for name, value in largest.items():
            pair["cases"][name]["max_over_lr"] = value
    return changed


def test_verdict_returns_every_outcome_on_constructed_numbers(numbers: dict[str, Any]) -> None:
    def outcome(**largest: float) -> str:
        return properties.verdict(constructed(numbers, largest))[0]

    assert outcome(normal=1.0, cauchy=1.5) == "reproduced"  # the tolerance is inclusive
    assert outcome(normal=1.0, cauchy=1.5001) == "partly"
    assert outcome(normal=1.6, cauchy=1.2) == "partly"
    assert outcome(normal=1.6, cauchy=1.9) == "not reproduced"


def test_what_is_not_counted_does_not_change_the_verdict(numbers: dict[str, Any]) -> None:
    changed = constructed(numbers, {"normal": 1.0, "cauchy": 1.2, "sparse": 3.0})
    changed["scaling"]["max_relative_difference"][0] = [1e-3] * len(properties.EXPONENTS)
    changed["adamax"]["cases"]["normal"]["max_over_lr"] = 1.01
    assert properties.verdict(changed)[0] == "reproduced"


def test_verdict_follows_the_checks(numbers: dict[str, Any]) -> None:
    outcome, sentence = properties.verdict(numbers)
    largest = [
        max(adam_case(numbers, betas, name)["max_over_lr"] for betas in properties.BETAS)
        for name in properties.DECIDING
    ]
    held = [value <= 1 + properties.APPROXIMATE for value in largest]
    assert properties.checks(numbers) == held
    assert outcome == ("reproduced" if all(held) else "partly" if any(held) else "not reproduced")
    assert f"{max(numbers['scaling']['max_relative_difference'][0]):.2g}" in sentence
    assert properties.EXPERIMENT.rule.startswith("The approximate bound")


def test_plot_writes_its_files(numbers: dict[str, Any], tmp_path: Path) -> None:
    names = properties.plot(numbers, tmp_path)
    assert 1 <= len(names) <= 2
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) > 10_000


def test_numbers_are_json(numbers: dict[str, Any]) -> None:
    assert json.loads(json.dumps(numbers, allow_nan=False)) == numbers
