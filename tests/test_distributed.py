"""Distributed training with 2 real processes on the gloo backend (TESTING.md §8.7): DDP,
ZeroRedundancyOptimizer and FSDP2 against single-process training on the same global
batch, for every optimizer of the registry on both backends; checkpoints resumed by new
processes, and resharded from 2 processes to 1; the same skip decision on every rank.

Each launch starts its 2 processes once (tests/distributed_worker.py; the ranks run every
case) and is bounded: every collective has a 60 s timeout, a launch 100 s, a test 120 s, so
a hang fails instead of blocking CI. The launches that later tests load from are
module-scoped fixtures, built by the first test that needs them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import distributed_worker as worker

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
        reason="needs torch.distributed with gloo",
    ),
]
TOLERANCE = 1e-6  # float32, after 20 steps
# seconds, for both ranks together: a guard against a hung collective, not a speed test (the
# FSDP2 run takes 61 s alone with an empty compile cache, and ran past 100 s beside another
# test worker on 2 cores)
LAUNCH_TIMEOUT = 300.0
CASES = [worker.case_id(case) for case in worker.cases()]


def swats_switch(backend: str) -> str:
    """The id of the SWATS case that switches mid-run."""
    return worker.case_id({"optimizer": "SWATS", "config": worker.SWATS_SWITCH, "backend": backend})


def launch(mode: str, folder: Path) -> dict:
    """Run ``mode`` on 2 ranks on 127.0.0.1 (a free port); rank 0's results. Both ranks
    are killed if either fails or they run past ``LAUNCH_TIMEOUT``."""
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
    logs = [folder / f"{mode}.rank{rank}.log" for rank in range(2)]
    ranks = []
    try:
        for rank, log in enumerate(logs):
            with log.open("w") as output:  # a file: a full pipe cannot block a rank
                ranks.append(
                    subprocess.Popen(
                        [sys.executable, worker.__file__, mode, str(folder)],
                        env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while any(process.poll() is None for process in ranks):
            if any(process.returncode not in (None, 0) for process in ranks):
                break  # the other rank would wait in a collective until its timeout
            if time.monotonic() > deadline:
                pytest.fail(f"{mode}: the ranks ran past {LAUNCH_TIMEOUT} s\n{tails(logs)}")
            time.sleep(0.1)
    finally:
        for process in ranks:
            process.kill()
            process.wait()
    codes = [process.returncode for process in ranks]
    assert codes == [0, 0], f"{mode}: exit codes {codes}\n{tails(logs)}"
    return json.loads((folder / f"{mode}.json").read_text())


def tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name}:\n{log.read_text()[-2000:]}" for log in logs)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    return folder, launch("ddp", folder)


@pytest.fixture(scope="module")
def zero_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zero")
    return folder, launch("zero", folder)


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp")
    return folder, launch("fsdp", folder)


def assert_swats_switched_mid_run(switch: list[int]) -> None:
    """The SWATS case crosses its switch inside the run, after a few Adam steps: the switch
    itself is compared, not only Adam or only SGD."""
    assert any(3 < step < worker.STEPS for step in switch), switch


def test_ddp_equals_single_process(ddp_results):
    """D1: every optimizer, on both backends, under DDP on halves of the batch with StepLR:
    params within 1e-6 of the single-process run after 20 steps; the replicas' params and
    state (SWATS' switch numbers included) equal bit for bit after every step; SWATS
    switches mid-run at the reference's step. The eager cases also with an unused branch
    (find_unused_parameters=True) and the first layer frozen at steps 10–14, which the
    reference then does not step either."""
    _, results = ddp_results
    expected = {f"{case}-plain" for case in CASES}
    expected |= {f"{case}-unused" for case in CASES if case.endswith("-eager")}
    assert set(results) == expected
    for name, result in results.items():
        assert result["difference"] <= TOLERANCE, (name, result)
        assert result["replicas_agree"], name
        assert result["switch"] == result["reference_switch"], (name, result)
        steps = result["first_layer_steps"]
        if name.endswith("-unused") and steps != [None, None]:  # None: SGD counts no steps
            assert steps == [worker.STEPS - len(worker.FROZEN)] * 2, name
        assert steps != [None, None] or name.split("(")[0] in ("SGD", "SGDW"), name
    for backend in ("eager", "fused"):
        assert_swats_switched_mid_run(results[f"{swats_switch(backend)}-plain"]["switch"])


def test_ddp_checkpoint_resumes_in_new_processes(ddp_results):
    """D2: two new processes load the model, optimizer and scheduler state dicts rank 0
    saved at step 10 of the DDP run (map_location="cpu", weights_only=True) and continue:
    they end with the uninterrupted run's params, bit for bit, as replicas that agree."""
    folder, _ = ddp_results
    resumed = launch("ddp_resume", folder)
    assert set(resumed) == set(CASES)
    for case, result in resumed.items():
        assert result["bitwise"] and result["replicas_agree"], case


def test_zero_redundancy_optimizer(zero_results):
    """D3: ZeroRedundancyOptimizer(optimizer_class=adamkit.X) with two groups of different
    weight decay (the second added after construction), parameters_as_bucket_view off and
    on (with maximize=True): params within 1e-6 of the single-process run after 20 steps,
    equal on both ranks; the state consolidated on rank 0 equals the reference's state,
    ND-Adam's per-vector second moments and SWATS' switch numbers included (SWATS per tensor,
    switching mid-run at the reference's steps)."""
    _, results = zero_results
    eager = [case for case in CASES if case.endswith("-eager")]
    assert set(results) == {f"{case}-{v}" for case in eager for v in ("plain", "bucket_view")}
    for name, result in results.items():
        assert result["difference"] <= TOLERANCE, (name, result)
        assert result["replicas_agree"], name
        assert result["state_difference"] <= TOLERANCE, (name, result)
        assert result["switch"] == result["reference_switch"], (name, result)
    assert_swats_switched_mid_run(results[f"{swats_switch('eager')}-plain"]["switch"])


def test_zero_consolidated_state_continues_in_one_process(zero_results):
    """D3: the state dict ZeRO consolidated on rank 0 of 2 at step 20, loaded with the
    params into a plain optimizer in this process (world size 1), continues for 5 steps on
    the whole batch to the params the 2-process ZeRO run reached."""
    folder, _ = zero_results
    for index, (case, variant) in enumerate(worker.zero_variants()):
        saved = torch.load(folder / f"zero{index}.pt", weights_only=True)
        model = worker.make_model()
        model.load_state_dict(saved["model"])
        optimizer = worker.info_of(case).cls(
            worker.zero_groups(model), **worker.zero_config(case, variant)
        )
        optimizer.load_state_dict(saved["optimizer"])
        for x, y in worker.batches(worker.STEPS + 5)[worker.STEPS :]:
            worker.train_step(model, optimizer, x, y)
        final = torch.load(folder / f"zero{index}.final.pt", weights_only=True)
        assert_params_near(model, final, f"{case}, {variant}")


def test_fsdp2_equals_single_process(fsdp_results):
    """D4, D6: FSDP2 with DTensor params, on both backends (the fused one steps DTensors
    eagerly), rank 1 holding empty shards of the last layer: the gradients (checked first:
    if they differ, the harness is wrong, not the optimizer), then the params, within 1e-6
    of the single-process run after 20 steps; every param-shaped state tensor a DTensor on
    the param's mesh with its placements; SWATS switches mid-run at the reference's step on
    both ranks (its projections are summed over the shards); ND-Adam's rows inside a shard."""
    _, results = fsdp_results
    assert set(results) == set(CASES)
    for case, result in results.items():
        assert result["gradient_difference"] <= TOLERANCE, (case, result)
    for case, result in results.items():
        assert result["local_numel"] == [[64, 8, 16, 1], [64, 8, 0, 0]], (case, result)
        assert result["difference"] <= TOLERANCE, (case, result)
        assert result["state_like_params"], case
        assert result["switch"] == [result["reference_switch"]] * 2, (case, result)
    for backend in ("eager", "fused"):
        assert_swats_switched_mid_run(results[swats_switch(backend)]["switch"][1])


def test_fsdp2_checkpoints_resume_in_new_processes(fsdp_results):
    """D5: two new processes resume the FSDP2 run at step 10, from the full state dicts
    (get/set_optimizer_state_dict with full_state_dict=True, broadcast from rank 0) and from
    the sharded torch.distributed.checkpoint checkpoint: the state comes back as DTensors
    placed like the params, and both runs end with the uninterrupted run's params, bit for
    bit (ND-Adam included: the step at lr 0 with which set_optimizer_state_dict creates the
    state must not renormalise the loaded params)."""
    folder, _ = fsdp_results
    results = launch("fsdp_resume", folder)
    assert set(results) == set(CASES)
    for case, result in results.items():
        for source in ("full", "sharded"):
            assert result[source]["state_like_params"], (case, source)
            assert result[source]["bitwise"], (case, source, result[source])


def test_fsdp2_full_state_dict_resumes_in_one_process(fsdp_results):
    """D5: the full state dicts of model and optimizer that rank 0 saved at step 10
    (get_optimizer_state_dict, keyed by parameter name) load into this process with a plain
    model and optimizer, which continues to within 1e-6 of the 2-process run's params
    (resharding from 2 processes to 1)."""
    folder, _ = fsdp_results
    for index, case in enumerate(worker.cases()):
        saved = torch.load(folder / f"fsdp{index}.pt", weights_only=True)
        model = worker.make_model()
        model.load_state_dict(saved["model"])
        optimizer = worker.make_optimizer(model.parameters(), case)
        optimizer.load_state_dict(by_position(saved["optimizer"], model))
        for x, y in worker.batches()[worker.RESUME :]:
            worker.train_step(model, optimizer, x, y)
        final = torch.load(folder / f"fsdp{index}.final.pt", weights_only=True)
        assert_params_near(model, final, worker.case_id(case))


def assert_params_near(model: torch.nn.Module, final: dict, case: str) -> None:
    """The model's params within ``TOLERANCE`` of ``final`` (by name), naming the case."""
    for name, param in model.named_parameters():
        torch.testing.assert_close(
            param.detach(),
            final[name],
            atol=TOLERANCE,
            rtol=0,
            msg=lambda text, name=name: f"{case}, {name}: {text}",
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


@pytest.fixture(scope="module")
def guard_results(tmp_path_factory):
    return launch("guards", tmp_path_factory.mktemp("guards"))


def test_nonfinite_skip_is_the_same_on_every_rank(guard_results):
    """D7, F3: a NaN in the all-reduced gradient (DDP) or in one rank's shard only (FSDP2):
    with skip_nonfinite both ranks skip exactly that step (the ranks agree on the skip, so
    neither waits in a collective the other never joins)."""
    assert guard_results["nonfinite"] == {"ddp": {"skipped": [1, 1]}, "fsdp": {"skipped": [1, 1]}}


def test_ndadam_refuses_vectors_split_between_ranks(guard_results):
    """D4: rows sharded along dim 1 split each weight vector between the ranks: ND-Adam
    raises NotImplementedError naming the shape and the sharded dim, before any change."""
    result = guard_results["spanning"]
    assert result["error"] == (
        "NDAdam cannot step a param of shape (16, 8) sharded along dims [1]: its update "
        "reduces along them (shard along another dim)"
    )
    assert result["unchanged"] and result["state"] == 0
