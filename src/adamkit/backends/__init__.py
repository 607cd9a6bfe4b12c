"""Backends run any rule over tensors; they know no algorithm."""

from __future__ import annotations

from collections.abc import Callable

from adamkit.backends import eager

BACKENDS: dict[str, Callable[..., list]] = {"eager": eager.step_group}


def get_backend(name: str) -> Callable[..., list]:
    """The ``step_group`` function of the backend called ``name``."""
    if name not in BACKENDS:
        raise ValueError(f"Invalid backend: {name!r}, expected one of {tuple(BACKENDS)}")
    return BACKENDS[name]
