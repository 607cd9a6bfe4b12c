"""One rank of the distributed tests (tests/test_distributed.py), started twice with RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT set: ``python tests/distributed_worker.py MODE FOLDER``.

Every rank also trains a plain single-process copy of the model on the whole global batch,
the reference. Rank 0 writes, per case, what the test asserts (largest differences, whether
the ranks agree, SWATS' switch steps) to ``FOLDER/MODE.json``, and saves in FOLDER the
checkpoints that later modes, and the test process, load.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from datetime import timedelta
from numbers import Real
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

import adamkit

from registry import OPTIM_DB

STEPS = 20
RESUME = 10  # the step a checkpoint is taken at
BATCH = 8  # global; each of the 2 ranks gets half
# switches mid-run in every setting (the Adam phase's average of γ settles, then SGD
# runs under the schedule): at step 14 under StepLR (DDP), 9 without (FSDP2), and at
# steps 8, 5, 2, 4 per tensor (ZeRO, granularity="tensor")
SWATS_SWITCH = {"switch_tolerance": 2e-3}
FROZEN = range(10, 15)  # D1's "unused" variant: the first layer is frozen at these steps


def cases() -> list[dict[str, Any]]:
    """Every optimizer's default config and SWATS switching mid-run, on both backends."""
    configs = [(info.name, info.sweep[0]) for info in OPTIM_DB] + [("SWATS", SWATS_SWITCH)]
    return [
        {"optimizer": name, "config": dict(config), "backend": backend}
        for backend in ("eager", "fused")
        for name, config in configs
    ]


def case_id(case: dict[str, Any]) -> str:
    options = ",".join(f"{k}={v}" for k, v in case["config"].items())
    return f"{case['optimizer']}({options})-{case['backend']}"


def info_of(case: dict[str, Any]):
    return next(info for info in OPTIM_DB if info.name == case["optimizer"])


def make_model() -> torch.nn.Module:
    """Linear(8,16)-Tanh-Linear(16,1): the last layer's weight (1×16) and bias (1) have
    fewer rows than ranks, so FSDP2 leaves rank 1 an empty shard. Rows of unit norm, the
    weight vectors ND-Adam needs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    adamkit.normalize_vectors_([model[0].weight, model[2].weight])
    return model


class WithUnusedBranch(torch.nn.Module):
    """``make_model``'s network and a branch the forward never uses (DDP then needs
    ``find_unused_parameters=True``)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()
        self.unused = torch.nn.Linear(8, 3)
        adamkit.normalize_vectors_([self.unused.weight])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_optimizer(params: Any, case: dict[str, Any], **extra: Any) -> torch.optim.Optimizer:
    return info_of(case).cls(params, backend=case["backend"], **case["config"], **extra)


def batches(steps: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
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


def state_difference(state: dict, reference: dict, rtol: float = 1e-5) -> float:
    """How far two optimizer states (a ``state_dict()``'s ``state``, keyed alike) are apart:
    the largest |a − b| − rtol·|b| over their tensors and numbers, inf where their keys or
    shapes differ. Within ``atol`` iff every entry is as ``torch.isclose(atol, rtol)`` says:
    Adagrad's and RMSprop's sums of squares grow with the steps."""
    largest = 0.0
    if set(state) != set(reference):
        return float("inf")
    for key, values in reference.items():
        if set(state[key]) != set(values):
            return float("inf")
        for name, value in values.items():
            other = state[key][name]
            if not isinstance(value, torch.Tensor):
                other, value = torch.tensor(float(other)), torch.tensor(float(value))
            if other.shape != value.shape:
                return float("inf")
            value, other = full(value).double(), full(other).double()
            if value.numel():
                gap = (other - value).abs() - rtol * value.abs()
                largest = max(largest, gap.max().item())
    return largest


def fingerprint(model, optimizer) -> torch.Tensor:
    """This rank's params and optimizer state, tensors and numbers (SWATS' switch), flattened
    to float64: equal on every rank iff the replicas agree bit for bit (float32 values and
    Python floats are exact in float64)."""
    parts = [p.detach().reshape(-1).double() for p in model.parameters()]
    for param in model.parameters():
        for _, value in sorted(optimizer.state.get(param, {}).items()):
            if isinstance(value, torch.Tensor):
                parts.append(value.detach().reshape(-1).double())
            elif isinstance(value, Real):
                parts.append(torch.tensor([float(value)], dtype=torch.float64))
    return torch.cat(parts)


def gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return gathered


def replicas_agree(model, optimizer) -> bool:
    mine = fingerprint(model, optimizer)
    sizes = gather(torch.tensor([mine.numel()]))
    if any(size.item() != mine.numel() for size in sizes):
        return False
    return all(torch.equal(mine, other) for other in gather(mine))


def switch_steps(params, optimizer) -> list[int]:
    """SWATS' switch step of every param (0: still Adam; -1: no switch state)."""
    return [int(optimizer.state.get(p, {}).get("switch_step", -1)) for p in params]


def switch_steps_of_ranks(params, optimizer) -> list[list[int]]:
    """``switch_steps`` on every rank, by rank."""
    mine = torch.tensor(switch_steps(params, optimizer))
    return [other.tolist() for other in gather(mine)]


def schedule(optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)


def shard(rank: int, x: torch.Tensor) -> torch.Tensor:
    half = BATCH // dist.get_world_size()
    return x[rank * half : (rank + 1) * half]


def first_layer(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)
    return model.net[0] if isinstance(model, WithUnusedBranch) else model[0]


def ddp_run(rank, case, variant, folder: Path, index: int):
    """20 steps of DDP (``variant`` "unused": an unused branch, find_unused_parameters and
    the first layer frozen at the steps ``FROZEN``) and of the reference, both under StepLR.
    Returns both models and optimizers and whether the replicas agreed after every step."""
    unused = variant == "unused"
    reference = WithUnusedBranch() if unused else make_model()
    reference_optimizer = make_optimizer(reference.parameters(), case)
    reference_schedule = schedule(reference_optimizer)
    model = torch.nn.parallel.DistributedDataParallel(
        WithUnusedBranch() if unused else make_model(), find_unused_parameters=unused
    )
    optimizer = make_optimizer(model.parameters(), case)
    scheduler = schedule(optimizer)
    agree = True
    for step, (x, y) in enumerate(batches()):
        if step == RESUME and not unused and rank == 0:  # D2: a checkpoint for ddp_resume
            checkpoint = {
                "model": model.module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            }
            torch.save(checkpoint, folder / f"ddp{index}.pt")
        if unused:
            for layer in (first_layer(reference), first_layer(model)):
                layer.requires_grad_(step not in FROZEN)
        train_step(reference, reference_optimizer, x, y)
        reference_schedule.step()
        train_step(model, optimizer, shard(rank, x), shard(rank, y))
        scheduler.step()
        agree &= replicas_agree(model, optimizer)
    return reference, reference_optimizer, model, optimizer, agree


def ddp(rank: int, folder: Path) -> dict[str, Any]:
    """D1: DDP over the halves of the batch against the reference; the replicas' params
    and state agree bit for bit after every step. Every case plain; the eager ones also
    with an unused branch and the first layer frozen at steps 10–14."""
    results = {}
    for index, case in enumerate(cases()):
        variants = ("plain", "unused") if case["backend"] == "eager" else ("plain",)
        for variant in variants:
            reference, reference_optimizer, model, optimizer, agree = ddp_run(
                rank, case, variant, folder, index
            )
            if variant == "plain" and rank == 0:
                torch.save(model.module.state_dict(), folder / f"ddp{index}.final.pt")
            results[f"{case_id(case)}-{variant}"] = {
                "difference": largest_difference(model.module, reference),
                "replicas_agree": agree,
                "switch": switch_steps(model.parameters(), optimizer),
                "reference_switch": switch_steps(reference.parameters(), reference_optimizer),
                # how often the first layer's weight was stepped, in DDP and the reference
                # (None: the rule keeps no step count, as torch's SGD)
                "first_layer_steps": [
                    int(opt.state[first_layer(net).weight]["step"])
                    if opt.rule.counts_steps(opt.param_groups[0])
                    else None
                    for net, opt in ((model, optimizer), (reference, reference_optimizer))
                ],
            }
    return results


def ddp_resume(rank: int, folder: Path) -> dict[str, Any]:
    """D2: new processes load the checkpoint rank 0 saved at step 10 of ``ddp``
    (``map_location="cpu"``, ``weights_only=True``) into DDP, optimizer and scheduler and
    continue: the params equal those of the uninterrupted 2-process run bit for bit."""
    results = {}
    for index, case in enumerate(cases()):
        saved = torch.load(folder / f"ddp{index}.pt", map_location="cpu", weights_only=True)
        plain = make_model()
        plain.load_state_dict(saved["model"])
        model = torch.nn.parallel.DistributedDataParallel(plain)
        optimizer = make_optimizer(model.parameters(), case)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler = schedule(optimizer)
        scheduler.load_state_dict(saved["scheduler"])
        for x, y in batches()[RESUME:]:
            train_step(model, optimizer, shard(rank, x), shard(rank, y))
            scheduler.step()
        final = torch.load(folder / f"ddp{index}.final.pt", weights_only=True)
        results[case_id(case)] = {
            "bitwise": all(torch.equal(v, final[k]) for k, v in plain.state_dict().items()),
            "replicas_agree": replicas_agree(model, optimizer),
        }
    return results


def zero_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """D3's two param groups, of different weight decay."""
    return [
        {"params": [model[0].weight, model[0].bias], "weight_decay": 0.01},
        {"params": [model[2].weight, model[2].bias], "weight_decay": 0.0},
    ]


def zero_config(case: dict[str, Any], variant: str) -> dict[str, Any]:
    """The optimizer's kwargs under ZeRO: a rank's local optimizer holds only its part of a
    group, so SWATS decides per tensor (the one granularity whose decision ZeRO's partition
    leaves alone); the "bucket_view" variant maximizes."""
    config = dict(case["config"])
    if case["optimizer"] == "SWATS":
        config["granularity"] = "tensor"
    if variant == "bucket_view":
        config["maximize"] = True
    return config


def zero_variants() -> list[tuple[dict[str, Any], str]]:
    return [
        (case, variant)
        for case in cases()
        if case["backend"] == "eager"
        for variant in ("plain", "bucket_view")
    ]


def zero(rank: int, folder: Path) -> dict[str, Any]:
    """D3: ZeroRedundancyOptimizer(optimizer_class=adamkit.X) with two param groups of
    different weight decay (the second added after construction) against the reference,
    built with the same groups; parameters_as_bucket_view off, and on with maximize=True.
    The consolidated state dict against the reference's state (ND-Adam's per-vector and
    SWATS' scalar state included). Rank 0 saves it with the params of step 20 and those of
    step 25 of the ZeRO run, which the test loads into a 1-process plain optimizer."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    results = {}
    steps = batches(STEPS + 5)
    for index, (case, variant) in enumerate(zero_variants()):
        info, config = info_of(case), zero_config(case, variant)
        reference = make_model()
        reference_optimizer = info.cls(zero_groups(reference), **config)
        model = make_model()
        ddp_model = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = ZeroRedundancyOptimizer(
            zero_groups(model)[:1],
            optimizer_class=info.cls,
            parameters_as_bucket_view=variant == "bucket_view",
            **config,
        )
        optimizer.add_param_group(zero_groups(model)[1])
        for x, y in steps[:STEPS]:
            train_step(reference, reference_optimizer, x, y)
            train_step(ddp_model, optimizer, shard(rank, x), shard(rank, y))
        difference = largest_difference(model, reference)
        agree = replicas_agree(model, torch.optim.SGD(model.parameters()))  # params only
        optimizer.consolidate_state_dict(to=0)
        record = {"difference": difference, "replicas_agree": agree}
        if rank == 0:
            # torch.save now: the state dict shares the live state the next steps change
            consolidated = optimizer.state_dict()
            expected = reference_optimizer.state_dict()["state"]
            record["state_difference"] = state_difference(consolidated["state"], expected)
            record["switch"] = [
                int(consolidated["state"][i].get("switch_step", -1)) for i in range(4)
            ]
            record["reference_switch"] = switch_steps(reference.parameters(), reference_optimizer)
            torch.save(
                {"optimizer": consolidated, "model": model.state_dict()}, folder / f"zero{index}.pt"
            )
        for x, y in steps[STEPS:]:
            train_step(ddp_model, optimizer, shard(rank, x), shard(rank, y))
        if rank == 0:
            torch.save(model.state_dict(), folder / f"zero{index}.final.pt")
        results[f"{case_id(case)}-{variant}"] = record
    return results


def sharded_model(mesh) -> torch.nn.Module:
    """``make_model`` under FSDP2: each Linear, then the root."""
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def fsdp_step(model, optimizer, rank, step, x, y) -> None:
    """One step on this rank's half, with zero_grad(set_to_none) on even steps only."""
    optimizer.zero_grad(set_to_none=step % 2 == 0)
    torch.nn.functional.mse_loss(model(shard(rank, x)), shard(rank, y)).backward()
    optimizer.step()


def state_like_params(model, optimizer) -> bool:
    """Every param-shaped state tensor is a DTensor on the param's mesh with its
    placements (and its global shape, but 1 on ND-Adam's vector axes)."""
    for param in model.parameters():
        for value in optimizer.state[param].values():
            if isinstance(value, torch.Tensor) and value.ndim:
                if (
                    getattr(value, "placements", None) != param.placements
                    or value.device_mesh != param.device_mesh
                    or value.ndim != param.ndim
                ):
                    return False
    return bool(optimizer.state)


def fsdp(rank: int, folder: Path) -> dict[str, Any]:
    """D4, D6: FSDP2 ``fully_shard`` against the reference: gradients first, then params;
    state allocated like the params; SWATS' switch steps on both ranks; zero_grad's
    set_to_none alternates. D5: at step 10 rank 0 saves the full state dicts of model and
    optimizer (get_*_state_dict, full_state_dict=True) and both ranks save the sharded ones
    with torch.distributed.checkpoint; rank 0 saves the params of step 20."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    results = {}
    full_options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    for index, case in enumerate(cases()):
        reference = make_model()
        reference_optimizer = make_optimizer(reference.parameters(), case)
        model = sharded_model(mesh)
        optimizer = make_optimizer(model.parameters(), case)
        grad_difference = 0.0
        for step, (x, y) in enumerate(batches()):
            if step == RESUME:
                saved_model = get_model_state_dict(model, options=full_options)
                saved_optimizer = get_optimizer_state_dict(model, optimizer, options=full_options)
                if rank == 0:
                    torch.save(
                        {"model": saved_model, "optimizer": saved_optimizer},
                        folder / f"fsdp{index}.pt",
                    )
                sharded = {
                    "model": get_model_state_dict(model),
                    "optimizer": get_optimizer_state_dict(model, optimizer),
                }
                dcp.save(sharded, checkpoint_id=folder / f"fsdp{index}.dcp")
            train_step(reference, reference_optimizer, x, y)
            optimizer.zero_grad(set_to_none=step % 2 == 0)
            torch.nn.functional.mse_loss(model(shard(rank, x)), shard(rank, y)).backward()
            grad_difference = max(
                grad_difference,
                *(
                    (full(p.grad) - q.grad).abs().max().item()
                    for p, q in zip(model.parameters(), reference.parameters(), strict=True)
                ),
            )
            optimizer.step()
        final = {name: full(p).detach().clone() for name, p in model.named_parameters()}
        if rank == 0:
            torch.save(final, folder / f"fsdp{index}.final.pt")
        results[case_id(case)] = {
            "gradient_difference": grad_difference,
            "difference": largest_difference(model, reference),
            "state_like_params": state_like_params(model, optimizer),
            "switch": switch_steps_of_ranks(model.parameters(), optimizer),
            "reference_switch": switch_steps(reference.parameters(), reference_optimizer),
            # D6: the elements of each param's shard, by rank (rank 1's of the last layer: 0)
            "local_numel": [
                t.tolist()
                for t in gather(torch.tensor([p.to_local().numel() for p in model.parameters()]))
            ],
        }
    return results


def fsdp_resume(rank: int, folder: Path) -> dict[str, Any]:
    """D5, in 2 new processes: (a) the full state dicts rank 0 saved at step 10, set into a
    fresh FSDP2 model and optimizer (set_*_state_dict, full_state_dict=True, broadcast from
    rank 0: rank 1 passes empty dicts); (b) the sharded torch.distributed.checkpoint
    checkpoint, loaded into the state dicts of another. Each continues to step 20: its
    state DTensors placed like the params, its params those of the uninterrupted run."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    broadcast = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    results = {}
    for index, case in enumerate(cases()):
        final = torch.load(folder / f"fsdp{index}.final.pt", weights_only=True)
        record = {}
        for source in ("full", "sharded"):
            model = sharded_model(mesh)
            optimizer = make_optimizer(model.parameters(), case)
            if source == "full":
                saved = {"model": {}, "optimizer": {}}
                if rank == 0:
                    saved = torch.load(folder / f"fsdp{index}.pt", weights_only=True)
                set_model_state_dict(model, saved["model"], options=broadcast)
                # torch's set_optimizer_state_dict(full_state_dict=True) finds the device on
                # a param-shaped state tensor and fails without one (AssertionError "Expected
                # device to be set", torch.optim.SGD without momentum alike): SGD's state is
                # its step count, which its update does not read
                shaped = [any(t.ndim for t in tensors(saved["optimizer"].get("state", {})))]
                dist.broadcast_object_list(shaped, src=0)
                if shaped[0]:
                    options = broadcast
                    set_optimizer_state_dict(model, optimizer, saved["optimizer"], options=options)
            else:
                loaded = {
                    "model": get_model_state_dict(model),
                    "optimizer": get_optimizer_state_dict(model, optimizer),
                }
                dcp.load(loaded, checkpoint_id=folder / f"fsdp{index}.dcp")
                set_model_state_dict(model, loaded["model"])
                set_optimizer_state_dict(model, optimizer, loaded["optimizer"])
            for step, (x, y) in enumerate(batches()[RESUME:], start=RESUME):
                fsdp_step(model, optimizer, rank, step, x, y)
            record[source] = {
                "bitwise": all(
                    torch.equal(full(p).detach(), final[name])
                    for name, p in model.named_parameters()
                ),
                "difference": max(
                    (full(p).detach() - final[name]).abs().max().item()
                    for name, p in model.named_parameters()
                ),
                "state_like_params": state_like_params(model, optimizer),
            }
        results[case_id(case)] = record
    return results


def tensors(tree: Any) -> list[torch.Tensor]:
    """The tensors of a nest of dicts and lists."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else ()
    return [t for value in values for t in tensors(value)]


def nonfinite(rank: int, folder: Path) -> dict[str, Any]:
    """D7/F3: a NaN in the (all-reduced) gradient of both ranks under DDP, and in one rank's
    shard under FSDP2: with skip_nonfinite every rank skips the step, no hang."""
    from torch.distributed.device_mesh import init_device_mesh

    results = {}
    for sharding in ("ddp", "fsdp"):
        if sharding == "ddp":
            wrapped = torch.nn.parallel.DistributedDataParallel(make_model())
        else:
            wrapped = sharded_model(init_device_mesh("cpu", (dist.get_world_size(),)))
        optimizer = adamkit.Adam(wrapped.parameters(), skip_nonfinite=True)
        for step, (x, y) in enumerate(batches(6)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(wrapped(shard(rank, x)), shard(rank, y)).backward()
            if step == 3 and (sharding == "ddp" or rank == 0):
                grad = next(iter(wrapped.parameters())).grad
                (grad.to_local() if hasattr(grad, "to_local") else grad).view(-1)[0] = NAN
            optimizer.step()
        skipped = gather(torch.tensor([float(optimizer.skipped_steps)]))
        results[sharding] = {"skipped": [int(t.item()) for t in skipped]}
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


def guards(rank: int, folder: Path) -> dict[str, Any]:
    """``nonfinite`` and ``spanning``, in one launch."""
    return {"nonfinite": nonfinite(rank, folder), "spanning": spanning(rank, folder)}


NAN = float("nan")
MODES = {
    "ddp": ddp,
    "ddp_resume": ddp_resume,
    "zero": zero,
    "fsdp": fsdp,
    "fsdp_resume": fsdp_resume,
    "guards": guards,
}


def main() -> None:
    faulthandler.enable()  # a rank that aborts in C++ shows where, in its log
    mode, folder = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    try:
        results = MODES[mode](rank, folder)
        if rank == 0:
            (folder / f"{mode}.json").write_text(json.dumps(results, indent=1))
        dist.barrier()  # neither rank tears the group down while the other still uses it
    finally:
        dist.destroy_process_group()
    # the work is done and written: leave without the interpreter's teardown, where torch's
    # C++ threads once aborted a finished rank in CI (SIGABRT, "terminate called without an
    # active exception", on the FSDP2 resume); a rank that failed raised above instead
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
