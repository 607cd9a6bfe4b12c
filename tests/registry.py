"""OPTIM_DB: one record per optimizer, after torch's OptimizerInfo (TESTING.md §8.0).

A record names the optimizer, its float64 paper reference, its torch.optim counterpart, its
hyperparameter sweep and its bad inputs. Every check in the suite runs over every record, so a
new optimizer is covered by adding one record here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import adamkit

import reference

# Keys that pick an implementation; a sweep never contains them (meta-tested).
IMPLEMENTATION_KEYS = ("backend", "foreach", "fused", "capturable", "differentiable")


@dataclass(frozen=True)
class ErrorInput:
    """Constructor kwargs that must fail, with the exception type and a message regex."""

    kwargs: dict[str, Any]
    error: type[Exception]
    match: str


@dataclass(frozen=True)
class OptimInfo:
    name: str
    cls: type[torch.optim.Optimizer]
    reference: Callable[..., list[dict[str, Any]]]
    sweep: list[dict[str, Any]]
    error_inputs: list[ErrorInput]
    torch_cls: type[torch.optim.Optimizer] | None = None
    torch_fixed: dict[str, Any] = field(default_factory=dict)
    # the reference takes the whole group (lists of params and of per-step gradient lists)
    # and returns, per step, one record per param: SWATS decides over the group
    group_reference: bool = False

    def torch_kwargs(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """The torch.optim kwargs for ``config``, or None where torch lacks an option."""
        if self.torch_cls is None:
            return None
        accepted = inspect.signature(self.torch_cls).parameters
        if any(key not in accepted for key in config):
            return None
        return {**self.torch_fixed, **config, "foreach": False}

    def id(self, config: dict[str, Any]) -> str:
        options = ",".join(f"{k}={_short(v)}" for k, v in config.items())
        return f"{self.name}({options})"


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor({','.join(f'{x:g}' for x in value.flatten().tolist())})"
    return str(value)


def common_errors(eps: bool = True, betas: bool = True) -> list[ErrorInput]:
    errors = [
        ErrorInput({"lr": -0.1}, ValueError, r"^Invalid learning rate: -0\.1$"),
        ErrorInput({"lr": None}, TypeError, r"lr must be a float or a 1-element Tensor, got None"),
        ErrorInput({"lr": "1e-3"}, TypeError, r"lr must be a float .* got '1e-3'"),
        ErrorInput(
            {"lr": torch.tensor([1e-3, 1e-3])}, ValueError, r"^Tensor lr must be 1-element$"
        ),
        ErrorInput({"weight_decay": -1}, ValueError, r"^Invalid weight_decay value: -1$"),
        ErrorInput({"weight_decay_mode": "l1"}, ValueError, r"Invalid weight_decay_mode: 'l1'"),
        ErrorInput({"maximize": "yes"}, TypeError, r"maximize must be a bool, got 'yes'"),
        ErrorInput(
            {"state_dtype": torch.float16},
            ValueError,
            r"^Invalid state_dtype value: torch\.float16",
        ),
        ErrorInput({"state_dtype": "int8"}, ValueError, r"^Invalid state_dtype value: 'int8'"),
        ErrorInput({"state_dtype": 8}, TypeError, r"state_dtype must be a torch\.dtype.* got 8$"),
    ]
    if eps:
        errors.append(ErrorInput({"eps": -1e-8}, ValueError, r"^Invalid epsilon value: -1e-08$"))
    if betas:
        errors += [
            ErrorInput(
                {"betas": (1.0, 0.999)}, ValueError, r"^Invalid beta parameter at index 0: 1\.0$"
            ),
            ErrorInput(
                {"betas": (0.9, 1.0)}, ValueError, r"^Invalid beta parameter at index 1: 1\.0$"
            ),
            ErrorInput(
                {"betas": (-0.1, 0.9)}, ValueError, r"^Invalid beta parameter at index 0: -0\.1$"
            ),
            ErrorInput({"betas": (0.9,)}, ValueError, r"betas must be a pair of floats"),
            ErrorInput({"betas": "0.9"}, ValueError, r"betas must be a pair of floats"),
        ]
    return errors


WD = {"weight_decay": 0.1}
WD_MAX = {"weight_decay": 0.1, "maximize": True}
PAPER_DECAY = {"weight_decay": 0.01, "weight_decay_mode": "decoupled_schedule"}

ADAM_SWEEP = [
    {},
    {"lr": 0.01},
    {"lr": torch.tensor(0.01, dtype=torch.float64)},
    WD,
    WD_MAX,
    {"amsgrad": True},
    {"amsgrad": True, **WD_MAX},
    {"betas": (0.5, 0.9), "eps": 1e-3},
    {"decoupled_weight_decay": True, **WD},
    {"weight_decay_mode": "decoupled_lr", **WD},
    PAPER_DECAY,
    {"bias_correction": False},
    {"eps_mode": "efficient", "eps": 1e-3},
    {"eps_mode": "efficient", "amsgrad": True, "eps": 1e-3},
    {"amsgrad": True, "amsgrad_max": "corrected"},
    {"amsgrad": True, "amsgrad_max": "corrected", "eps_mode": "efficient", "eps": 1e-3},
    {"amsgrad": True, "bias_correction": False, "eps": 0.0},  # Reddi et al.'s Algorithm 2
    {"eps_root": 0.1},  # optax's eps_root
    {"amsgrad": True, "amsgrad_max": "corrected", "eps_root": 0.1, **WD},  # optax's amsgrad
]
# options of Adam's that SWATS and ND-Adam do not take
ADAM_ONLY = {"amsgrad", "amsgrad_max", "eps_root"}
ADAM_ERRORS = [
    *common_errors(),
    ErrorInput({"eps_mode": "tf"}, ValueError, r"Invalid eps_mode: 'tf'"),
    ErrorInput({"amsgrad_max": "max"}, ValueError, r"Invalid amsgrad_max: 'max'"),
    ErrorInput({"amsgrad": 1}, TypeError, r"amsgrad must be a bool, got 1"),
    ErrorInput({"eps_root": -1.0}, ValueError, r"^Invalid eps_root value: -1\.0$"),
    ErrorInput(
        {"eps_root": 0.1, "eps_mode": "efficient"}, ValueError, r"eps_root needs eps_mode='paper'"
    ),
]

OPTIM_DB: list[OptimInfo] = [
    OptimInfo(
        name="SGD",
        cls=adamkit.SGD,
        reference=reference.sgd,
        torch_cls=torch.optim.SGD,
        sweep=[
            {},
            {"lr": 0.05},
            {"lr": torch.tensor(0.05, dtype=torch.float64), "momentum": 0.9},
            WD,
            {"momentum": 0.9},
            {"momentum": 0.9, "dampening": 0.3},
            {"momentum": 0.9, "nesterov": True},
            {"momentum": 0.9, "nesterov": True, **WD_MAX},
            {"momentum": 0.9, "dampening": 0.3, **WD_MAX},
            {"momentum": 0.9, "momentum_form": "sutskever"},
            {"momentum": 0.9, "momentum_form": "sutskever", "dampening": 0.3, **WD},
            {"momentum": 0.9, "momentum_form": "sutskever", "nesterov": True},
            {"momentum": 0.9, "momentum_form": "ema"},
            {"momentum": 0.9, "momentum_form": "ema", "bias_correction": True, **WD_MAX},
            {"momentum": 0.9, "weight_decay_mode": "decoupled_lr", **WD},
            {"momentum": 0.9, "momentum_form": "sutskever", **PAPER_DECAY},  # SGDW, Algorithm 1
        ],
        error_inputs=[
            *common_errors(eps=False, betas=False),
            ErrorInput({"momentum": -0.5}, ValueError, r"^Invalid momentum value: -0\.5$"),
            ErrorInput({"dampening": -0.5}, ValueError, r"^Invalid dampening value: -0\.5$"),
            ErrorInput(
                {"nesterov": True},
                ValueError,
                r"^Nesterov momentum requires a momentum and zero dampening$",
            ),
            ErrorInput(
                {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
                ValueError,
                r"^Nesterov momentum requires a momentum and zero dampening$",
            ),
            ErrorInput(
                {"momentum_form": "heavy_ball"}, ValueError, r"Invalid momentum_form: 'heavy_ball'"
            ),
            ErrorInput(
                {"momentum": 1.0, "momentum_form": "ema"},
                ValueError,
                r"Invalid momentum value for momentum_form='ema': 1\.0",
            ),
            ErrorInput(
                {"momentum": 0.9, "momentum_form": "ema", "nesterov": True},
                ValueError,
                r"momentum_form='ema' takes neither nesterov nor dampening",
            ),
            ErrorInput(
                {"momentum": 0.9, "bias_correction": True},
                ValueError,
                r"bias_correction applies to momentum_form='ema' only",
            ),
        ],
    ),
    OptimInfo(
        name="Adagrad",
        cls=adamkit.Adagrad,
        reference=reference.adagrad,
        torch_cls=torch.optim.Adagrad,
        sweep=[
            {},
            {"lr": 0.1},
            {"lr": torch.tensor(0.1, dtype=torch.float64)},
            {"lr_decay": 0.01},
            {"initial_accumulator_value": 0.1},
            {"lr_decay": 0.01, "initial_accumulator_value": 0.1, **WD_MAX},
            {"eps": 1e-3, **WD},
            {"weight_decay_mode": "decoupled_lr", **WD},
            PAPER_DECAY,
            {"eps_mode": "inside", "eps": 1e-3},
            {"eps_mode": "inside", "initial_accumulator_value": 0.1, "lr_decay": 0.01, **WD_MAX},
        ],
        error_inputs=[
            *common_errors(betas=False),
            ErrorInput({"eps_mode": "in"}, ValueError, r"^Invalid eps_mode: 'in'"),
            ErrorInput(
                {"eps_mode": "inside", "eps": 0.0}, ValueError, r"eps_mode='inside' needs eps > 0"
            ),
            ErrorInput({"lr_decay": -0.5}, ValueError, r"^Invalid lr_decay value: -0\.5$"),
            ErrorInput(
                {"initial_accumulator_value": -1},
                ValueError,
                r"^Invalid initial_accumulator_value value: -1$",
            ),
        ],
    ),
    OptimInfo(
        name="RMSprop",
        cls=adamkit.RMSprop,
        reference=reference.rmsprop,
        torch_cls=torch.optim.RMSprop,
        sweep=[
            {},
            {"lr": 0.001},
            {"lr": torch.tensor(0.001, dtype=torch.float64), "centered": True},
            {"alpha": 0.9},
            {"centered": True},
            {"momentum": 0.9},
            {"momentum": 0.9, "centered": True, **WD_MAX},
            WD,
            {"eps_in_sqrt": True},
            {"eps_in_sqrt": True, "centered": True, "momentum": 0.5, "eps": 1e-3},
            {"weight_decay_mode": "decoupled_lr", **WD},
            PAPER_DECAY,
            {"momentum": 0.9, "nesterov": True},
            {"momentum": 0.9, "momentum_form": "sutskever"},
            {"momentum": 0.5, "momentum_form": "sutskever", "nesterov": True, "centered": True}
            | WD,
        ],
        error_inputs=[
            *common_errors(betas=False),
            ErrorInput({"momentum": -0.5}, ValueError, r"^Invalid momentum value: -0\.5$"),
            ErrorInput({"nesterov": True}, ValueError, r"^Nesterov momentum requires a momentum$"),
            ErrorInput({"momentum_form": "ema"}, ValueError, r"^Invalid momentum_form: 'ema'"),
            ErrorInput({"alpha": -0.1}, ValueError, r"^Invalid alpha value: -0\.1$"),
            ErrorInput({"centered": None}, TypeError, r"centered must be a bool, got None"),
        ],
    ),
    OptimInfo(
        name="Adam",
        cls=adamkit.Adam,
        reference=reference.adam,
        torch_cls=torch.optim.Adam,
        sweep=ADAM_SWEEP,
        error_inputs=[
            *ADAM_ERRORS,
            ErrorInput(
                {"decoupled_weight_decay": True, "weight_decay_mode": "l2"},
                ValueError,
                r"decoupled_weight_decay=True contradicts weight_decay_mode='l2'",
            ),
        ],
    ),
    OptimInfo(
        name="AdamW",
        cls=adamkit.AdamW,
        reference=reference.adamw,
        torch_cls=torch.optim.AdamW,
        sweep=[
            {},
            {"lr": 0.01, "weight_decay": 0.1},
            {"lr": torch.tensor(0.01, dtype=torch.float64)},
            {"weight_decay": 0.0},
            {"amsgrad": True, "maximize": True},
            {"weight_decay": 0.01, "weight_decay_mode": "decoupled_schedule"},
            {"eps_mode": "efficient", "eps": 1e-3},
        ],
        error_inputs=[
            *[e for e in ADAM_ERRORS if "weight_decay_mode" not in e.kwargs],
            ErrorInput(
                {"weight_decay_mode": "l2"},
                ValueError,
                r"AdamW decouples weight decay: weight_decay_mode='l2' is Adam's",
            ),
        ],
    ),
    OptimInfo(
        name="AMSGrad",
        cls=adamkit.AMSGrad,
        reference=reference.amsgrad,
        torch_cls=torch.optim.Adam,
        torch_fixed={"amsgrad": True},
        sweep=[
            {},
            {"lr": 0.01, **WD_MAX},
            {"decoupled_weight_decay": True, **WD},
            {"amsgrad_max": "corrected"},
            {"bias_correction": False, "eps": 0.0},
        ],
        error_inputs=[e for e in ADAM_ERRORS if "amsgrad" not in e.kwargs],
    ),
    OptimInfo(
        name="Adamax",
        cls=adamkit.Adamax,
        reference=reference.adamax,
        torch_cls=torch.optim.Adamax,
        sweep=[
            {},
            {"lr": 0.01},
            {"lr": torch.tensor(0.01, dtype=torch.float64)},
            {"betas": (0.5, 0.9)},
            WD,
            WD_MAX,
            {"eps_mode": "none"},
            {"eps_mode": "denominator", "eps": 1e-3},
            {"weight_decay_mode": "decoupled_lr", **WD},
            PAPER_DECAY,
        ],
        error_inputs=[
            *common_errors(),
            ErrorInput({"eps_mode": "paper"}, ValueError, r"Invalid eps_mode: 'paper'"),
        ],
    ),
    OptimInfo(
        name="NAdam",
        cls=adamkit.NAdam,
        reference=reference.nadam,
        torch_cls=torch.optim.NAdam,
        sweep=[
            {},
            {"lr": 0.01},
            {"lr": torch.tensor(0.01, dtype=torch.float64)},
            {"momentum_decay": 0.01},
            WD,
            WD_MAX,
            {"decoupled_weight_decay": True, **WD},
            {"mu_schedule": "constant"},
            {"mu_schedule": "constant", "weight_decay_mode": "decoupled_lr", **WD},
            PAPER_DECAY,
        ],
        error_inputs=[
            *common_errors(),
            ErrorInput(
                {"momentum_decay": -0.2}, ValueError, r"^Invalid momentum_decay value: -0\.2$"
            ),
            ErrorInput({"mu_schedule": "warm"}, ValueError, r"Invalid mu_schedule: 'warm'"),
        ],
    ),
]


OPTIM_DB += [
    OptimInfo(
        name="SGDW",
        cls=adamkit.SGDW,
        reference=functools.partial(
            reference.sgd,
            momentum=0.9,
            weight_decay=1e-4,
            momentum_form="sutskever",
            weight_decay_mode="decoupled_schedule",
        ),
        sweep=[
            {},
            {"lr": 0.05, "weight_decay": 0.01},
            {"lr": torch.tensor(0.05, dtype=torch.float64), "nesterov": True},
            {"momentum": 0.0, "maximize": True},
            {"dampening": 0.3, "weight_decay_mode": "decoupled_lr", **WD},
        ],
        error_inputs=[
            # SGD's errors, but for nesterov=True, valid with SGDW's default momentum 0.9
            *[
                e
                for e in OPTIM_DB[0].error_inputs
                if "weight_decay_mode" not in e.kwargs and e.kwargs != {"nesterov": True}
            ],
            ErrorInput(
                {"weight_decay_mode": "l2"},
                ValueError,
                r"SGDW decouples weight decay: weight_decay_mode='l2' is SGD's",
            ),
        ],
    ),
    OptimInfo(
        name="SWATS",
        cls=adamkit.SWATS,
        reference=reference.swats,
        group_reference=True,
        sweep=[
            {},
            # switches at step 3 of the harness script
            {"switch_tolerance": 1.2e-4},
            {"switch_tolerance": 1.2e-4, "lr": torch.tensor(1e-3, dtype=torch.float64)},
            {"switch_tolerance": 1.2e-4, "eps_mode": "paper", "eps": 1e-3, **WD_MAX},
            {"switch_tolerance": 1.2e-4, "weight_decay_mode": "decoupled_lr", **WD},
            {"switch_tolerance": 1.2e-4, **PAPER_DECAY},
            {"betas": (0.9, 0.9), "switch_tolerance": 1e-4},
            # each tensor on its own: they switch at steps 5, 4 and 145
            {"granularity": "tensor", "switch_tolerance": 3e-4},
            {"granularity": "tensor", "switch_tolerance": 1e-4, "eps_mode": "paper"},
            {"granularity": "global", "switch_tolerance": 1.2e-4, **WD},
            # the relative test |Λ − γ| ≤ rtol·|γ|: the group switches at step 3; each tensor
            # on its own at steps 4 and 145, the third never
            {"switch_rtol": 0.1},
            {"granularity": "tensor", "switch_rtol": 0.2},
        ],
        error_inputs=[
            *(e for e in ADAM_ERRORS if not ADAM_ONLY & set(e.kwargs)),
            ErrorInput(
                {"switch_tolerance": 0.0},
                ValueError,
                r"^Invalid switch threshold: switch_tolerance=0\.0$",
            ),
            ErrorInput(
                {"switch_tolerance": -1e-9},
                ValueError,
                r"^Invalid switch threshold: switch_tolerance=-1e-09$",
            ),
            ErrorInput(
                {"switch_rtol": 0.0}, ValueError, r"^Invalid switch threshold: switch_rtol=0\.0$"
            ),
            ErrorInput(
                {"switch_rtol": -0.1}, ValueError, r"^Invalid switch threshold: switch_rtol=-0\.1$"
            ),
            ErrorInput(
                {"switch_rtol": float("inf")},
                ValueError,
                r"^Invalid switch threshold: switch_rtol=inf$",
            ),
            ErrorInput(
                {"switch_rtol": "0.1"},
                TypeError,
                r"switch_rtol must be a float or a 1-element Tensor, got '0\.1'",
            ),
            ErrorInput(
                {"granularity": "layer"},
                ValueError,
                r"Invalid granularity: 'layer', expected one of \('group', 'tensor', 'global'\)",
            ),
        ],
    ),
    OptimInfo(
        name="NDAdam",
        cls=adamkit.NDAdam,
        reference=reference.ndadam,
        sweep=[
            {},
            {"lr": 0.01},
            {"lr": torch.tensor(0.01, dtype=torch.float64)},
            {"betas": (0.5, 0.9), "eps": 1e-3},
            {"eps_mode": "paper", **WD_MAX},
            {"weight_decay_mode": "decoupled_lr", **WD},
            PAPER_DECAY,
            {"vec_axes": ()},
        ],
        error_inputs=[
            *(e for e in ADAM_ERRORS if not ADAM_ONLY & set(e.kwargs)),
            ErrorInput({"vec_axes": 1}, TypeError, r"vec_axes must be None or a sequence"),
            ErrorInput({"vec_axes": "1"}, TypeError, r"vec_axes must be None or a sequence"),
        ],
    ),
]


def sweep_cases() -> list[Any]:
    """pytest params over every (record, config) of the registry."""
    import pytest

    return [
        pytest.param(info, config, id=info.id(config)) for info in OPTIM_DB for config in info.sweep
    ]


def error_cases() -> list[Any]:
    import pytest

    return [
        pytest.param(info, case, id=info.id(case.kwargs))
        for info in OPTIM_DB
        for case in info.error_inputs
    ]
