"""Training runs that checkpoint, for tests/test_checkpoints.py: run in the test process and,
to resume, in fresh processes (``python tests/checkpoint_worker.py resume|crash ...``).

A case is a plain dict: the optimizer's record in OPTIM_DB, its sweep config, backend, dtype,
schedule, the step k of the checkpoint and the length n of the run. Gradients are drawn from
torch's global generator, so a resume is exact only if the checkpoint carries its state too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

from adamkit.schedules import OneCycle, WarmRestarts

from harness import leaves
from registry import OPTIM_DB

SCHEDULES = (None, "warm_restarts", "adamwr", "one_cycle")


def build(case: dict[str, Any]) -> tuple[list[torch.Tensor], Any, Any]:
    """Fresh params, optimizer and schedule for ``case``."""
    info = next(info for info in OPTIM_DB if info.name == case["optimizer"])
    dtype = getattr(torch, case["dtype"])
    params = leaves(dtype)
    config = info.sweep[case["config"]]
    optimizer = info.cls(params, backend=case["backend"], **config)
    schedule = case["schedule"]
    if schedule == "warm_restarts":
        scheduler = WarmRestarts(optimizer, 2, 2, steps_per_epoch=3)
    elif schedule == "adamwr":  # normalized weight decay, renormalized at every restart
        scheduler = WarmRestarts(optimizer, 2, 2, steps_per_epoch=3, batch_size=8, dataset_size=24)
    elif schedule == "one_cycle":
        group = optimizer.param_groups[0]
        cycle = "betas" in group or group.get("momentum", 0.0) > 0.0
        scheduler = OneCycle(optimizer, 0.01, total_steps=case["n"], cycle_momentum=cycle)
    else:
        scheduler = None
    return params, optimizer, scheduler


def advance(params, optimizer, scheduler, steps: int) -> None:
    for _ in range(steps):
        for param in params:
            param.grad = torch.randn(param.shape, dtype=param.dtype)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def checkpoint(params, optimizer, scheduler, step: int) -> dict[str, Any]:
    return {
        "step": step,
        "params": [p.detach().clone() for p in params],
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": torch.get_rng_state(),
    }


def save_atomically(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, then rename over ``path``: a reader sees the old
    checkpoint or the new one, never a part."""
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def restore(case: dict[str, Any], saved: dict[str, Any]):
    """A fresh optimizer and schedule in the state ``saved`` holds."""
    params, optimizer, scheduler = build(case)
    with torch.no_grad():
        for param, value in zip(params, saved["params"], strict=True):
            param.copy_(value)
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    return params, optimizer, scheduler


def final(params, optimizer) -> dict[str, Any]:
    return {"params": [p.detach().clone() for p in params], "optimizer": optimizer.state_dict()}


def resume(folder: Path) -> None:
    """Every case of ``folder/cases.json``: load its checkpoint, run to the end, save."""
    cases = json.loads((folder / "cases.json").read_text())
    for index, case in enumerate(cases):
        saved = torch.load(folder / f"{index}.pt", weights_only=True)
        params, optimizer, scheduler = restore(case, saved)
        advance(params, optimizer, scheduler, case["n"] - saved["step"])
        torch.save(final(params, optimizer), folder / f"{index}.final.pt")


def crash(folder: Path) -> None:
    """Train ``case.json``'s run to its end from the last checkpoint (or from the start),
    checkpointing every ``every`` steps and printing each step done; the test kills it."""
    case = json.loads((folder / "case.json").read_text())
    path = folder / "checkpoint.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        params, optimizer, scheduler = restore(case, saved)
        step = saved["step"]
    else:
        torch.manual_seed(case["seed"])
        params, optimizer, scheduler = build(case)
        step = 0
    print("ready", step, flush=True)
    while step < case["n"]:
        advance(params, optimizer, scheduler, 1)
        step += 1
        if step % case["every"] == 0:
            save_atomically(checkpoint(params, optimizer, scheduler, step), path)
        print("step", step, flush=True)
    torch.save(final(params, optimizer), folder / "final.pt")


if __name__ == "__main__":
    {"resume": resume, "crash": crash}[sys.argv[1]](Path(sys.argv[2]))
