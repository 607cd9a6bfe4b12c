"""Checkpoints (TESTING.md S3, S6, B5, F5): a run resumed in a fresh process equals the
uninterrupted run bit for bit; a run killed with SIGKILL again and again resumes from its last
complete checkpoint to the same end; a state dict that does not fit is refused, named, before
anything changes."""

from __future__ import annotations

import copy
import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import adamkit
import checkpoint_worker as worker
from test_contracts import assert_same

from harness import gradient_script, leaves, run, snapshot
from registry import OPTIM_DB

WORKER = Path(worker.__file__)
STEPS = 24


def resume_cases() -> list[dict]:
    """Every optimizer and config on the eager backend in float32 and float64; the default
    config of each on the fused backend too; every schedule with each optimizer's default;
    the checkpoint early (k=3) and late (k=17): before and after SWATS' switches."""
    cases = []
    for info in OPTIM_DB:
        for index in range(len(info.sweep)):
            for dtype in ("float32", "float64"):
                backends = ("eager", "fused") if index == 0 else ("eager",)
                for backend in backends:
                    cases.append((info.name, index, backend, dtype, None))
        for schedule in worker.SCHEDULES[1:]:
            if schedule == "adamwr" and info.name not in ("AdamW", "SGDW"):
                continue  # normalized decay needs decoupled decay
            cases.append((info.name, 0, "eager", "float32", schedule))
    return [
        {
            "optimizer": name,
            "config": index,
            "backend": backend,
            "dtype": dtype,
            "schedule": schedule,
            "k": k,
            "n": STEPS,
            "seed": seed,
        }
        for seed, (name, index, backend, dtype, schedule) in enumerate(cases)
        for k in (3, 17)
    ]


def test_resume_in_a_fresh_process_is_bitwise(tmp_path):
    """Every case: run k steps, save params, optimizer, schedule and the RNG to a file; a new
    Python process loads it (weights_only=True) and runs to step n. Its params and optimizer
    state dict equal those of the run that went on in this process, bit for bit."""
    cases = resume_cases()
    expected = []
    for index, case in enumerate(cases):
        torch.manual_seed(case["seed"])
        params, optimizer, scheduler = worker.build(case)
        worker.advance(params, optimizer, scheduler, case["k"])
        torch.save(
            worker.checkpoint(params, optimizer, scheduler, case["k"]), tmp_path / f"{index}.pt"
        )
        worker.advance(params, optimizer, scheduler, case["n"] - case["k"])
        expected.append(worker.final(params, optimizer))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    subprocess.run([sys.executable, str(WORKER), "resume", str(tmp_path)], check=True, timeout=600)
    for index, case in enumerate(cases):
        resumed = torch.load(tmp_path / f"{index}.final.pt", weights_only=True)
        try:
            assert_same(resumed, expected[index])
        except AssertionError as error:
            raise AssertionError(f"case {case}") from error


def test_swats_cases_checkpoint_before_and_after_the_switch():
    """The resume cases hold SWATS runs whose switch falls between the two checkpoints."""
    switched = []
    for case in resume_cases():
        if case["optimizer"] != "SWATS" or case["k"] != 3 or case["schedule"]:
            continue
        torch.manual_seed(case["seed"])
        params, optimizer, scheduler = worker.build(case)
        worker.advance(params, optimizer, scheduler, case["n"])
        step = optimizer.state[params[0]]["switch_step"]
        switched.append(3 < step <= 17)
    assert sum(switched) >= 3, switched


def test_crash_resume_twenty_times(tmp_path):
    """SIGKILL a training process at a random step, 20 times in a row; each new process
    resumes from the last checkpoint on disk (written atomically every 5 steps), which always
    loads. The run that finishes ends with the params and state of a run never killed."""
    case = {
        "optimizer": "SWATS",
        "config": 1,  # switches mid-run
        "backend": "eager",
        "dtype": "float32",
        "schedule": "one_cycle",
        "n": 700,  # 20 kills, each at most 30 steps past the checkpoint before
        "every": 5,
        "seed": 7,
    }
    torch.manual_seed(case["seed"])
    params, optimizer, scheduler = worker.build(case)
    worker.advance(params, optimizer, scheduler, case["n"])
    expected = worker.final(params, optimizer)
    (tmp_path / "case.json").write_text(json.dumps(case))
    chooser = random.Random(0)
    kills = []
    while True:
        process = subprocess.Popen(
            [sys.executable, str(WORKER), "crash", str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            start = int(process.stdout.readline().split()[1])
            target = start + chooser.randint(1, 30) if len(kills) < 20 else None
            for line in process.stdout:
                if target is not None and int(line.split()[1]) >= target:
                    os.kill(process.pid, signal.SIGKILL)
                    break
            process.wait(timeout=60)
            # the steps it printed after the one that triggered the kill (it runs on while
            # the kill is on its way): the last step done is the last one printed
            done = [
                target,
                *(int(line.split()[1]) for line in process.stdout.read().split("\n")[:-1]),
            ]
        finally:
            process.kill()
        if target is None:
            assert process.returncode == 0
            break
        assert process.returncode == -signal.SIGKILL
        saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
        # the last checkpoint written: that of the last step printed (a checkpoint is written
        # before its step is printed), or of the next step, written before the kill landed
        last = max(done)
        every = case["every"]
        assert saved["step"] % every == 0
        assert max(start, last // every * every) <= saved["step"] <= last + 1
        kills.append(target)
    assert len(kills) == 20
    assert_same(torch.load(tmp_path / "final.pt", weights_only=True), expected)


# ---------------------------------------------------------------- mismatched state dicts


def trained(info, params=None, **config):
    """Three steps of ``info``'s optimizer (SGD with momentum, so that it keeps state)."""
    params = leaves(torch.float32) if params is None else params
    config = {"momentum": 0.9, **config} if info.name == "SGD" else config
    optimizer = info.cls(params, **config)
    run(optimizer, params, gradient_script(3, torch.float32, shapes=[p.shape for p in params]))
    return params, optimizer


def first_state(optimizer) -> str:
    """The name of the first param-shaped state tensor the optimizer keeps."""
    return optimizer.rule.state_names(optimizer.rule.options(optimizer.param_groups[0]))[0]


def assert_refused_untouched(optimizer, params, state_dict, error, match):
    """The load raises ``error`` matching ``match`` and leaves the optimizer and the dict as
    they were."""
    before = snapshot(optimizer, params), copy.deepcopy(optimizer.param_groups)
    passed = copy.deepcopy(state_dict)
    with pytest.raises(error, match=match):
        optimizer.load_state_dict(state_dict)
    assert_same(snapshot(optimizer, params), before[0])
    assert_same(
        [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
        [{k: v for k, v in g.items() if k != "params"} for g in before[1]],
    )
    assert_same(state_dict, passed)


@pytest.mark.parametrize("info", OPTIM_DB, ids=lambda info: info.name)
def test_wrong_state_shape_names_group_param_and_both_shapes(info):
    params, optimizer = trained(info)
    saved = copy.deepcopy(optimizer.state_dict())  # it shares the live state
    name = first_state(optimizer)
    saved["state"][1][name] = torch.zeros(4, 5)  # param 1 is (5,)
    expected = tuple(optimizer.state[params[1]][name].shape)
    match = re.escape(
        f"group 0, param 1: state '{name}' has shape (4, 5), the param needs {expected}"
    )
    assert_refused_untouched(optimizer, params, saved, ValueError, "^" + match)


@pytest.mark.parametrize("info", OPTIM_DB, ids=lambda info: info.name)
def test_other_groups_are_refused_with_both_sizes(info):
    params, optimizer = trained(info)
    saved = copy.deepcopy(optimizer.state_dict())  # it shares the live state
    split = info.cls([{"params": params[:1]}, {"params": params[1:]}])
    assert_refused_untouched(
        split,
        params,
        saved,
        ValueError,
        r"different number of parameter groups: 1, the optimizer has 2",
    )
    fewer = info.cls(params[:2])
    assert_refused_untouched(
        fewer, params[:2], saved, ValueError, r"group 0 has 3 params there, 2 here"
    )


def test_names_from_named_parameters_appear_in_the_error():
    model = torch.nn.Linear(3, 2)
    optimizer = adamkit.Adam(model.named_parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    saved = copy.deepcopy(optimizer.state_dict())  # it shares the live state
    saved["state"][0]["exp_avg"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"^group 0, param 0 \(weight\): state 'exp_avg' has"):
        optimizer.load_state_dict(saved)


@pytest.mark.parametrize("info", OPTIM_DB, ids=lambda info: info.name)
def test_another_optimizers_state_dict_names_the_missing_key(info):
    """SGD's state dict (momentum buffers) loaded into an Adam-family optimizer, or Adam's
    into SGD with momentum: a state holding none of the tensors this optimizer keeps is
    refused, naming the first, instead of a silent fresh start at the next step; or, where
    the foreign group's options do not fit, the group is named with the option. (A state
    missing only some of them is an option turned on since, AMSGrad or momentum: those start
    at the next step, as in torch.)"""
    # RMSprop keeps a momentum_buffer too: Adam's dict is foreign to it
    sgd = info.name in ("SGD", "SGDW", "RMSprop")
    _, foreign = trained(OPTIM_DB[3] if sgd else OPTIM_DB[0])
    params, optimizer = trained(info)
    missing = rf"group 0, param 0: the loaded state has no '{first_state(optimizer)}'"
    match = rf"^({missing}|group 0 of the loaded state dict: )"
    assert_refused_untouched(optimizer, params, foreign.state_dict(), ValueError, match)


MALFORMED = [
    (
        "no state",
        lambda sd, name: sd.pop("state"),
        ValueError,
        r"the state dict has no 'state' entry",
    ),
    (
        "no groups",
        lambda sd, name: sd.pop("param_groups"),
        ValueError,
        r"the state dict has no 'param_groups' entry",
    ),
    (
        "group without params",
        lambda sd, name: sd["param_groups"][0].pop("params"),
        ValueError,
        r"group 0 of the loaded state dict has no 'params' entry",
    ),
    (
        "step a str",
        lambda sd, name: sd["state"][0].__setitem__("step", "3"),
        TypeError,
        r"^group 0, param 0: state 'step' must be a number, got '3'",
    ),
    (
        "int state tensor",
        lambda sd, name: sd["state"][0].__setitem__(name, sd["state"][0][name].to(torch.int64)),
        TypeError,
        r"^group 0, param 0: state '\w+' is torch.int64, not floating point",
    ),
    (
        "bad hyperparameter",
        lambda sd, name: sd["param_groups"][0].__setitem__("lr", -1.0),
        ValueError,
        r"^group 0 of the loaded state dict: Invalid learning rate: -1\.0",
    ),
    (
        "skipped_steps a float",
        lambda sd, name: sd.__setitem__("skipped_steps", 1.5),
        TypeError,
        r"skipped_steps must be an int, got 1\.5",
    ),
]


@pytest.mark.parametrize(
    "what, corrupt, error, match", MALFORMED, ids=[case[0] for case in MALFORMED]
)
@pytest.mark.parametrize("info", OPTIM_DB, ids=lambda info: info.name)
def test_malformed_state_dicts_are_refused_before_any_change(info, what, corrupt, error, match):
    """TESTING.md B5."""
    params, optimizer = trained(info)
    saved = copy.deepcopy(optimizer.state_dict())  # it shares the live state
    corrupt(saved, first_state(optimizer))
    assert_refused_untouched(optimizer, params, saved, error, match)


def test_state_for_an_id_no_group_lists_is_ignored():
    """A stray entry of ``state`` maps to no param: dropped (torch keeps it under its id)."""
    params, optimizer = trained(OPTIM_DB[3])  # Adam
    saved = copy.deepcopy(optimizer.state_dict())  # it shares the live state
    saved["state"][99] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros(7)}
    clone = adamkit.Adam([p.detach().clone().requires_grad_() for p in params])
    clone.load_state_dict(saved)
    assert len(clone.state) == 3
