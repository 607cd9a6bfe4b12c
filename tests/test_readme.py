"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

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
