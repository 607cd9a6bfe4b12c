"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import adamkit

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_usage_example_trains():
    namespace: dict = {}
    exec(python_blocks()[0], namespace)
    assert isinstance(namespace["optimizer"], adamkit.AdamW)
    assert namespace["optimizer"].state[namespace["model"].weight]["step"].item() == 100


def test_paper_form_examples_construct_what_they_say():
    params = [torch.nn.Parameter(torch.randn(3))]
    for line in python_blocks()[1].splitlines():
        code = line.split("#")[0].strip()
        optimizer = eval(code, {"adamkit": adamkit, "params": params})
        assert type(optimizer).__name__ == code.split("(")[0].split(".")[1]


def test_generalization_example_builds_what_it_says():
    namespace: dict = {}
    exec(python_blocks()[2], namespace)
    decayed, not_decayed = namespace["optimizer"].param_groups
    # λ_norm = 0.05, b = 128, B = 12 800, T_0 = 10 epochs: 0.05·sqrt(128 / 128 000)
    assert decayed["weight_decay"] == pytest.approx(0.05 * 0.001**0.5, rel=1e-15)
    assert not_decayed["weight_decay"] == 0.0
    assert [p.ndim for p in not_decayed["params"]] == [1, 1]
    assert namespace["swats"].switch_point(namespace["model"][0].weight) is None
    for weight in (namespace["model"][0].weight, namespace["model"][2].weight):
        torch.testing.assert_close(weight.detach().norm(dim=1), torch.ones(len(weight)))
