"""The fused backend on CUDA (TESTING.md N3, S4): fused ≡ eager on the GPU for every optimizer
and option of the registry, fused CPU ≡ fused CUDA, and checkpoints that move between CPU and
CUDA. Skipped on a machine without CUDA (CI); run on the GPU machine (docs/testing.md)."""

from __future__ import annotations

import pytest
import torch

from test_fused import assert_close_to

from harness import gradient_script, leaves, multipliers, run, snapshot
from registry import OPTIM_DB

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
STEPS = 20
# Seen on an H100 (torch 2.11): as on the CPU (test_fused.ROUNDING), one-ulp differences in
# the fused association of a multiply-add grow by cancellation in the momentum buffer of the
# 0-dim param, to 5e-7–3e-6 relative after 20 steps. Which configs show it depends on the
# code the compiler generates for the device: not strict.
CANCELLATION = pytest.mark.xfail(
    strict=False, reason="one-ulp multiply-add differences grow in a 0-dim momentum buffer"
)
SEEN = {
    (
        "test_fused_equals_eager_on_cuda",
        "RMSprop(momentum=0.9,centered=True,weight_decay=0.1,maximize=True)",
    ),
    ("test_fused_cpu_matches_cuda", "RMSprop(momentum=0.9)"),
    (
        "test_fused_cpu_matches_cuda",
        "RMSprop(momentum=0.9,centered=True,weight_decay=0.1,maximize=True)",
    ),
}


def cases(test, dtypes_for_first):
    return [
        pytest.param(
            info,
            config,
            dtype,
            id=f"{info.id(config)}-{dtype}",
            marks=[CANCELLATION] if (test, info.id(config)) in SEEN else [],
        )
        for info in OPTIM_DB
        for index, config in enumerate(info.sweep)
        for dtype in [torch.float32, *(dtypes_for_first if index == 0 else [])]
    ]


def trajectory(info, config, dtype, device, backend):
    """20 steps of the harness script under a changing lr, on ``device``: the snapshot,
    moved to the CPU."""
    params = [p.detach().to(device).requires_grad_() for p in leaves(dtype)]
    optimizer = info.cls(params, backend=backend, **config)
    script = [
        [g.to(device) for g in grads]
        for grads in gradient_script(STEPS, dtype, shapes=[tuple(p.shape) for p in params])
    ]
    run(optimizer, params, script, multipliers(STEPS))
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                assert value.device == params[0].device
    return [
        {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in record.items()}
        for record in snapshot(optimizer, params)
    ]


@pytest.mark.parametrize(
    "info, config, dtype", cases("test_fused_equals_eager_on_cuda", [torch.float64, torch.bfloat16])
)
def test_fused_equals_eager_on_cuda(info, config, dtype):
    eager = trajectory(info, config, dtype, "cuda", "eager")
    fused = trajectory(info, config, dtype, "cuda", "fused")
    assert_close_to(fused, eager, dtype, info.id(config))


@pytest.mark.parametrize(
    "info, config, dtype", cases("test_fused_cpu_matches_cuda", [torch.bfloat16])
)
def test_fused_cpu_matches_cuda(info, config, dtype):
    cpu = trajectory(info, config, dtype, "cpu", "fused")
    cuda = trajectory(info, config, dtype, "cuda", "fused")
    assert_close_to(cuda, cpu, dtype, info.id(config))


@pytest.mark.parametrize(
    "info",
    [
        pytest.param(info, id=info.name, marks=[CANCELLATION] if info.name == "SGDW" else [])
        for info in OPTIM_DB
    ],
)
def test_checkpoint_moves_between_cpu_and_cuda(info, tmp_path):
    """Saved on the CPU (eager), loaded into a fused CUDA optimizer: every state tensor lands
    on the GPU and the run continues as on the CPU."""
    dtype = torch.float32
    config = info.sweep[min(1, len(info.sweep) - 1)]
    script = gradient_script(2 * STEPS, dtype)
    cpu_params = leaves(dtype)
    cpu = info.cls(cpu_params, backend="eager", **config)
    run(cpu, cpu_params, script[:STEPS])
    torch.save(
        {"params": [p.detach() for p in cpu_params], "opt": cpu.state_dict()}, tmp_path / "ckpt.pt"
    )
    saved = torch.load(tmp_path / "ckpt.pt", map_location="cuda", weights_only=True)
    cuda_params = [p.clone().requires_grad_() for p in saved["params"]]
    cuda = info.cls(cuda_params, backend="fused", **config)
    cuda.load_state_dict(saved["opt"])
    for state in cuda.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                assert value.is_cuda
    run(cpu, cpu_params, script[STEPS:])
    run(cuda, cuda_params, [[g.cuda() for g in grads] for grads in script[STEPS:]])
    expected = snapshot(cpu, cpu_params)
    got = [
        {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in record.items()}
        for record in snapshot(cuda, cuda_params)
    ]
    assert_close_to(got, expected, dtype, info.name)
