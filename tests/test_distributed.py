"""Distributed training with 2 real processes on the gloo backend (TESTING.md §8.7): DDP,
ZeroRedundancyOptimizer and FSDP2 against single-process training on the same global
batch, for every optimizer; distributed checkpoints resharded from 2 processes to 1; the
same skip decision on every rank. Each test starts its 2 processes once (the ranks run
every case), and has a timeout, as does every collective (60 s), so a hang fails."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distributed_worker as worker

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
        reason="needs torch.distributed with gloo",
    ),
]
TOLERANCE = 1e-6  # float32, after 20 steps
CASES = [worker.case_id(case) for case in worker.cases()]


def launch(mode: str, folder: Path) -> dict:
    """Run ``mode`` on 2 ranks; rank 0's results."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "OMP_NUM_THREADS": "1",
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, worker.__file__, mode, str(folder)],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        for process in ranks:
            outputs.append(process.communicate(timeout=200)[0])
    finally:
        for process in ranks:
            process.kill()
    for process, output in zip(ranks, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    return json.loads((folder / f"{mode}.json").read_text())


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp")
    return folder, launch("fsdp", folder)


def test_ddp_equals_single_process(tmp_path):
    """D1: every optimizer (and SWATS through its switch, Adam and ND-Adam fused) under DDP
    on halves of the batch: params within 1e-6 of the single-process run after 20 steps;
    the replicas' params and state equal bit for bit after every step; SWATS switches at
    the reference's step."""
    results = launch("ddp", tmp_path)
    assert set(results) == set(CASES)
    for case, result in results.items():
        assert result["difference"] <= TOLERANCE, (case, result)
        assert result["replicas_agree"], case
        assert result["switch"][0] == result["switch"][1], (case, result)
    assert results["SWATS(switch_tolerance=0.05)-eager"]["switch"][0] > 1


def test_zero_redundancy_optimizer(tmp_path):
    """D3: ZeroRedundancyOptimizer(optimizer_class=adamkit.X), two groups of different
    weight decay (the second added after construction): within 1e-6 of the single-process
    run; its consolidated state dict (ND-Adam's per-vector and SWATS' scalar state
    included) loads into a plain optimizer that continues as ZeRO does."""
    results = launch("zero", tmp_path)
    assert set(results) == {case for case in CASES if case.endswith("-eager")}
    for case, result in results.items():
        assert result["difference"] <= TOLERANCE, (case, result)
        assert result["replicas_agree"], case
        assert result["consolidated_continues"] <= TOLERANCE, (case, result)


def test_fsdp2_equals_single_process(fsdp_results):
    """D4, D6: FSDP2 with DTensor params (rank 1 holds empty shards of the last layer):
    gradients, then params, within 1e-6 of the single-process run; every param-shaped
    state tensor a DTensor placed like its param; SWATS switches on the reference's step
    on both ranks (its projections are summed over the shards); ND-Adam's rows inside a
    shard; the fused backend steps DTensors as the eager one does."""
    _, results = fsdp_results
    assert set(results) == set(CASES)
    for case, result in results.items():
        assert result["gradient_difference"] <= TOLERANCE, (case, result)
        assert result["difference"] <= TOLERANCE, (case, result)
        assert result["state_like_params"], case
        assert result["switch"][0] == result["switch"][1], (case, result)
    assert results["SWATS(switch_tolerance=0.05)-eager"]["switch"][0] > 1


def test_fsdp2_sharded_checkpoint_resumes(fsdp_results):
    """D5: get_optimizer_state_dict (sharded) at step 10, set into a fresh FSDP2 model and
    optimizer: the state stays DTensors and the run ends where the uninterrupted one does."""
    _, results = fsdp_results
    for case, result in results.items():
        assert result["resumed_state_sharded"], case
        assert result["resumed_difference"] <= TOLERANCE, (case, result)


def test_fsdp2_full_state_dict_resumes_in_one_process(fsdp_results):
    """D5: the full state dicts of model and optimizer that rank 0 saved at step 10
    (get_optimizer_state_dict, keyed by parameter name) load into one process with a plain
    model and optimizer, which continues to the 2-process run's params (resharding from 2
    processes to 1)."""
    folder, _ = fsdp_results
    for index, case in enumerate(worker.cases()):
        saved = torch.load(folder / f"{index}.pt", weights_only=True)
        model = worker.make_model()
        model.load_state_dict(saved["model"])
        optimizer = worker.make_optimizer(model.parameters(), case)
        optimizer.load_state_dict(by_position(saved["optimizer"], model))
        for x, y in worker.batches(worker.STEPS)[10:]:
            worker.train_step(model, optimizer, x, y)
        final = torch.load(folder / f"{index}.final.pt", weights_only=True)
        for name, param in model.named_parameters():
            torch.testing.assert_close(
                param.detach(), final[name], atol=TOLERANCE, rtol=0, msg=worker.case_id(case)
            )


def by_position(state_dict: dict, model: torch.nn.Module) -> dict:
    """A state dict keyed by parameter name (torch.distributed.checkpoint's) as
    ``Optimizer.load_state_dict`` takes it, keyed by position."""
    position = {name: index for index, (name, _) in enumerate(model.named_parameters())}
    return {
        "state": {position[name]: value for name, value in state_dict["state"].items()},
        "param_groups": [
            {**group, "params": [position[name] for name in group["params"]]}
            for group in state_dict["param_groups"]
        ],
    }


def test_nonfinite_skip_is_the_same_on_every_rank(tmp_path):
    """D7, F3: a NaN in the all-reduced gradient (DDP) or in one rank's shard only (FSDP2):
    with skip_nonfinite both ranks skip exactly that step."""
    results = launch("nonfinite", tmp_path)
    assert results == {"ddp": {"skipped": [1, 1]}, "fsdp": {"skipped": [1, 1]}}


def test_ndadam_refuses_vectors_split_between_ranks(tmp_path):
    """D4: rows sharded along dim 1 split each weight vector between the ranks: ND-Adam
    raises NotImplementedError naming the shape and the sharded dim, before any change."""
    result = launch("spanning", tmp_path)
    assert result["error"] == (
        "NDAdam cannot step a param of shape (16, 8) sharded along dims [1]: its update "
        "reduces along them (shard along another dim)"
    )
    assert result["unchanged"] and result["state"] == 0
