"""A torch.optim checkpoint loads into the adamkit optimizer of the same name and training
continues with identical numbers; and the reverse (S5)."""

from __future__ import annotations

import io

import pytest
import torch

from harness import default_twin, gradient_script, leaves, run, snapshot
from registry import OPTIM_DB

CASES = [
    pytest.param(info, config, direction, id=f"{direction}-{info.id(config)}")
    for info in OPTIM_DB
    for config in info.sweep
    if info.torch_kwargs(config) is not None and not isinstance(config.get("lr"), torch.Tensor)
    for direction in ("torch-to-adamkit", "adamkit-to-torch")
]


def through_disk(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def native_state_names(make):
    """The state an optimizer keeps itself (torch's SGD keeps a loaded ``step`` inert)."""
    params = leaves(torch.float32)
    optimizer = make(params)
    run(optimizer, params, gradient_script(2, torch.float32))
    return set(optimizer.state[params[0]]) | {"param"}


@pytest.mark.parametrize("backend", ["eager", None], ids=["eager", "default"])
@pytest.mark.parametrize("info, config, direction", CASES)
def test_checkpoint_moves_between_torch_and_adamkit(info, config, direction, backend):
    """A checkpoint of either resumes in the other, bitwise as the saving one would go on:
    the eager backend against torch's default, adamkit's default against torch's fused
    kernel where torch has one for the options (:func:`default_twin`)."""
    kwargs = info.torch_kwargs(config)
    flags = {} if backend else default_twin(info.torch_cls, kwargs)

    def ours(params):
        return info.cls(params, **config, **({"backend": backend} if backend else {}))

    def theirs(params):
        return info.torch_cls(params, **kwargs, **flags)

    first, second = (theirs, ours) if direction == "torch-to-adamkit" else (ours, theirs)
    script = gradient_script(30, torch.float32)

    params = leaves(torch.float32)
    saving = first(params)
    run(saving, params, script[:10])
    resumed_params = [p.detach().clone().requires_grad_() for p in params]
    resumed = second(resumed_params)
    resumed.load_state_dict(through_disk(saving.state_dict()))
    if second is theirs:  # torch's load takes the saved groups' flags (adamkit's fused=None)
        for group in resumed.param_groups:
            group.update(flags)

    uninterrupted_params = leaves(torch.float32)
    uninterrupted = first(uninterrupted_params)
    run(uninterrupted, uninterrupted_params, script[:10])

    native = native_state_names(second)

    def compare(t):
        for mine, reference in zip(
            snapshot(resumed, resumed_params),
            snapshot(uninterrupted, uninterrupted_params),
            strict=True,
        ):
            for name in native & reference.keys():
                assert torch.equal(mine[name], reference[name]), (name, t)

    for t, grads in enumerate(script[10:], start=11):
        for group_params in (resumed_params, uninterrupted_params):
            for p, g in zip(group_params, grads, strict=True):
                p.grad = g.clone()
        resumed.step()
        uninterrupted.step()
        compare(t)
