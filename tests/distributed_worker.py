"""One rank of the distributed tests (tests/test_distributed.py), started twice with RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT set: ``python tests/distributed_worker.py MODE FOLDER``.

Every rank also trains a plain single-process copy of the model on the whole global batch,
the reference. Rank 0 writes, per case, what the test asserts (largest differences, whether
the ranks agree, SWATS' switch steps) to ``FOLDER/MODE.json``.
"""

from __future__ import annotations

import copy
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

import adamkit

from registry import OPTIM_DB

STEPS = 20
BATCH = 8  # global; each of the 2 ranks gets half


def cases() -> list[dict[str, Any]]:
    """Every optimizer's default config, SWATS with a switch inside the 20 steps, and Adam
    and ND-Adam on the fused backend."""
    listed = [{"optimizer": info.name, "config": {}, "backend": "eager"} for info in OPTIM_DB]
    listed.append({"optimizer": "SWATS", "config": {"switch_tolerance": 5e-2}, "backend": "eager"})
    listed += [{"optimizer": n, "config": {}, "backend": "fused"} for n in ("Adam", "NDAdam")]
    return listed


def case_id(case: dict[str, Any]) -> str:
    options = ",".join(f"{k}={v}" for k, v in case["config"].items())
    return f"{case['optimizer']}({options})-{case['backend']}"


def make_model() -> torch.nn.Module:
    """Linear(8,16)-Tanh-Linear(16,1): the last layer's weight (1×16) and bias (1) have
    fewer rows than ranks, so FSDP2 leaves rank 1 an empty shard. Rows of unit norm, the
    weight vectors ND-Adam needs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    adamkit.normalize_vectors_([model[0].weight, model[2].weight])
    return model


def make_optimizer(params: Any, case: dict[str, Any]) -> torch.optim.Optimizer:
    info = next(info for info in OPTIM_DB if info.name == case["optimizer"])
    return info.cls(params, backend=case["backend"], **case["config"])


def batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(BATCH, 8, generator=generator), torch.randn(BATCH, 1, generator=generator))
        for _ in range(steps)
    ]


def train_step(model, optimizer, x, y, set_to_none: bool = True) -> None:
    optimizer.zero_grad(set_to_none=set_to_none)
    torch.nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def largest_difference(model, reference) -> float:
    return max(
        (full(p).detach() - full(q).detach()).abs().max().item()
        for p, q in zip(model.parameters(), reference.parameters(), strict=True)
    )


def fingerprint(model, optimizer) -> torch.Tensor:
    """This rank's params and optimizer state, flattened to float64: equal on every rank
    iff the replicas agree bit for bit (float32 values are exact in float64)."""
    parts = [p.detach().reshape(-1).double() for p in model.parameters()]
    for param in model.parameters():
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, torch.Tensor):
                parts.append(value.detach().reshape(-1).double())
    return torch.cat(parts)


def replicas_agree(model, optimizer) -> bool:
    mine = fingerprint(model, optimizer)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def switch_step(optimizer) -> int:
    states = [s for s in optimizer.state.values() if "switch_step" in s]
    return int(states[0]["switch_step"]) if states else -1


def reference_run(case, steps=STEPS):
    """The single-process run on the whole batch."""
    model = make_model()
    optimizer = make_optimizer(model.parameters(), case)
    for x, y in batches(steps):
        train_step(model, optimizer, x, y)
    return model, optimizer


def shard(rank: int, x: torch.Tensor) -> torch.Tensor:
    half = BATCH // dist.get_world_size()
    return x[rank * half : (rank + 1) * half]


def ddp(rank: int, folder: Path) -> dict[str, Any]:
    """D1: DDP over the halves of the batch against the reference; the replicas' params
    and state agree bit for bit after every step."""
    results = {}
    for case in cases():
        reference, reference_optimizer = reference_run(case)
        model = torch.nn.parallel.DistributedDataParallel(make_model())
        optimizer = make_optimizer(model.parameters(), case)
        agree = True
        for x, y in batches(STEPS):
            train_step(model, optimizer, shard(rank, x), shard(rank, y))
            agree &= replicas_agree(model, optimizer)
        results[case_id(case)] = {
            "difference": largest_difference(model.module, reference),
            "replicas_agree": agree,
            "switch": [switch_step(optimizer), switch_step(reference_optimizer)],
        }
    return results


def zero(rank: int, folder: Path) -> dict[str, Any]:
    """D3: ZeroRedundancyOptimizer(optimizer_class=adamkit.X) with two param groups of
    different weight decay against the reference (built with the same groups); the
    consolidated state dict, loaded into a plain optimizer, continues like ZeRO does."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    results = {}
    for case in cases():
        if case["backend"] != "eager":
            continue
        info = next(info for info in OPTIM_DB if info.name == case["optimizer"])
        config = dict(case["config"])
        if info.name == "SWATS":
            # a rank's local optimizer holds only its part of a group: the switch is decided
            # per tensor, the only granularity whose decision ZeRO's partition leaves alone
            config["granularity"] = "tensor"

        def groups(model):
            return [
                {"params": [model[0].weight, model[0].bias], "weight_decay": 0.01},
                {"params": [model[2].weight, model[2].bias], "weight_decay": 0.0},
            ]

        reference = make_model()
        reference_optimizer = info.cls(groups(reference), **config)
        model = make_model()
        ddp_model = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = ZeroRedundancyOptimizer(groups(model)[:1], optimizer_class=info.cls, **config)
        optimizer.add_param_group(groups(model)[1])
        steps = batches(STEPS + 5)
        for x, y in steps[:STEPS]:
            train_step(reference, reference_optimizer, x, y)
            train_step(ddp_model, optimizer, shard(rank, x), shard(rank, y))
        difference = largest_difference(model, reference)
        agree = replicas_agree(model, torch.optim.SGD(model.parameters()))  # params only
        optimizer.consolidate_state_dict(to=0)
        # deep-copied: the state dict shares the live state the next steps change
        consolidated = copy.deepcopy(optimizer.state_dict()) if rank == 0 else None
        saved_params = copy.deepcopy(model.state_dict())
        for x, y in steps[STEPS:]:
            train_step(ddp_model, optimizer, shard(rank, x), shard(rank, y))
        record = {
            "difference": difference,
            "replicas_agree": agree,
            "switch": [switch_step(reference_optimizer)],
        }
        if rank == 0:
            plain = make_model()
            plain.load_state_dict(saved_params)
            plain_optimizer = info.cls(groups(plain), **config)
            plain_optimizer.load_state_dict(consolidated)
            for x, y in steps[STEPS:]:
                train_step(plain, plain_optimizer, x, y)
            record["consolidated_continues"] = largest_difference(model, plain)
        results[case_id(case)] = record
    return results


def fsdp(rank: int, folder: Path) -> dict[str, Any]:
    """D4–D6: FSDP2 ``fully_shard`` (each Linear, then the root) against the reference:
    gradients first, then params; state allocated like the params (DTensors, same
    placements); SWATS switches on the step the reference does; set_to_none alternates.
    D5: a full optimizer state dict (get_optimizer_state_dict) taken at step 10 and saved
    by rank 0 for a 1-process resume in the test; a sharded one loaded into a fresh FSDP2
    model and optimizer continues like the uninterrupted run."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))

    def sharded_model():
        model = make_model()
        for layer in (model[0], model[2]):
            fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)

    results = {}
    full_options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    for index, case in enumerate(cases()):
        reference = make_model()
        reference_optimizer = make_optimizer(reference.parameters(), case)
        model = sharded_model()
        optimizer = make_optimizer(model.parameters(), case)
        grad_difference, like_params, agree = 0.0, True, True
        for step, (x, y) in enumerate(batches(STEPS)):
            set_to_none = step % 2 == 0
            train_step(reference, reference_optimizer, x, y)
            optimizer.zero_grad(set_to_none=set_to_none)
            torch.nn.functional.mse_loss(model(shard(rank, x)), shard(rank, y)).backward()
            grad_difference = max(
                grad_difference,
                max(
                    (full(p.grad) - q.grad).abs().max().item()
                    for p, q in zip(model.parameters(), reference.parameters(), strict=True)
                ),
            )
            optimizer.step()
            if step == 9:
                saved_full = get_optimizer_state_dict(model, optimizer, options=full_options)
                saved_model = get_model_state_dict(model, options=full_options)
                if rank == 0:
                    torch.save(
                        {"model": saved_model, "optimizer": saved_full}, folder / f"{index}.pt"
                    )
                # deep-copied: both share the live tensors the next steps change
                sharded = copy.deepcopy(get_optimizer_state_dict(model, optimizer))
                sharded_model_state = copy.deepcopy(get_model_state_dict(model))
        for param in model.parameters():
            for value in optimizer.state[param].values():
                if isinstance(value, torch.Tensor) and value.ndim:
                    like_params &= getattr(value, "placements", None) == param.placements
        # D5: the sharded state dict of step 10 into a fresh FSDP2 model and optimizer
        resumed = sharded_model()
        resumed_optimizer = make_optimizer(resumed.parameters(), case)
        set_model_state_dict(resumed, sharded_model_state)
        set_optimizer_state_dict(resumed, resumed_optimizer, sharded)
        for step, (x, y) in enumerate(batches(STEPS)[10:], start=10):
            resumed_optimizer.zero_grad(set_to_none=step % 2 == 0)
            loss = torch.nn.functional.mse_loss(resumed(shard(rank, x)), shard(rank, y))
            loss.backward()
            resumed_optimizer.step()
        resumed_state_sharded = all(
            isinstance(value, type(param))
            for param in resumed.parameters()
            for value in resumed_optimizer.state[param].values()
            if isinstance(value, torch.Tensor) and value.ndim
        )
        results[case_id(case)] = {
            "gradient_difference": grad_difference,
            "difference": largest_difference(model, reference),
            "state_like_params": like_params,
            "switch": [switch_step(optimizer), switch_step(reference_optimizer)],
            "resumed_difference": largest_difference(resumed, model),
            "resumed_state_sharded": resumed_state_sharded,
            "replicas_agree": agree,
        }
        final = {name: full(p).detach().clone() for name, p in model.named_parameters()}
        if rank == 0:
            torch.save(final, folder / f"{index}.final.pt")
    return results


def nonfinite(rank: int, folder: Path) -> dict[str, Any]:
    """D7/F3: a NaN in the (all-reduced) gradient of both ranks under DDP, and in one rank's
    shard under FSDP2: with skip_nonfinite every rank skips the step, no hang."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    results = {}
    for sharding in ("ddp", "fsdp"):
        model = make_model()
        if sharding == "ddp":
            wrapped = torch.nn.parallel.DistributedDataParallel(model)
        else:
            mesh = init_device_mesh("cpu", (dist.get_world_size(),))
            for layer in (model[0], model[2]):
                fully_shard(layer, mesh=mesh)
            wrapped = fully_shard(model, mesh=mesh)
        optimizer = adamkit.Adam(wrapped.parameters(), skip_nonfinite=True)
        for step, (x, y) in enumerate(batches(6)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(wrapped(shard(rank, x)), shard(rank, y)).backward()
            if step == 3 and (sharding == "ddp" or rank == 0):
                grad = next(iter(wrapped.parameters())).grad
                (grad.to_local() if hasattr(grad, "to_local") else grad).view(-1)[0] = math_nan
            optimizer.step()
        skipped = torch.tensor([float(optimizer.skipped_steps)])
        gathered = [torch.empty_like(skipped) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, skipped)
        results[sharding] = {"skipped": [int(t.item()) for t in gathered]}
    return results


def spanning(rank: int, folder: Path) -> dict[str, Any]:
    """D4: weight vectors split between the ranks (rows sharded along dim 1): ND-Adam would
    need norms over several shards; it refuses the step, naming the param, on every rank,
    before any param or state changes."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = make_model()
    fully_shard(model[0], mesh=mesh, shard_placement_fn=lambda param: Shard(param.ndim - 1))
    wrapped = fully_shard(model, mesh=mesh)
    before = [full(p).detach().clone() for p in wrapped.parameters()]
    optimizer = adamkit.NDAdam(wrapped.parameters())
    x, y = batches(1)[0]
    torch.nn.functional.mse_loss(wrapped(shard(rank, x)), shard(rank, y)).backward()
    try:
        optimizer.step()
        error = None
    except NotImplementedError as refused:
        error = str(refused)
    unchanged = all(
        torch.equal(full(p).detach(), b) for p, b in zip(wrapped.parameters(), before, strict=True)
    )
    return {"error": error, "unchanged": unchanged, "state": len(optimizer.state)}


math_nan = float("nan")
MODES = {"ddp": ddp, "zero": zero, "fsdp": fsdp, "nonfinite": nonfinite, "spanning": spanning}


def main() -> None:
    mode, folder = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    try:
        results = MODES[mode](rank, folder)
        if rank == 0:
            (folder / f"{mode}.json").write_text(json.dumps(results, indent=1))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
