"""SGD: plain, with heavy-ball momentum in torch's form, Sutskever's form or as an EMA; Nesterov."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from adamkit.algorithms.common import (
    add_scaled_,
    apply_weight_decay,
    as_float,
    bias_correction,
    check_at_least_zero,
    check_bool,
    check_choice,
    check_lr,
    check_weight_decay,
    differentiated,
    hyperparameter,
    weight_decay_mode,
    weight_decay_scalar,
)
from adamkit.optimizer import Params, RuleOptimizer, StateDtype
from adamkit.rule import Group, Rule, Scalars, State, TorchKernel

MOMENTUM_FORMS = ("torch", "sutskever", "ema")


class SGDOptions(NamedTuple):
    weight_decay_mode: str | None
    momentum: bool
    nesterov: bool


class SGDRule(Rule):
    """SGD's math; see :class:`SGD` for the equations.

    Every momentum form is one buffer update ``b ← decay·b + weight·g`` and one step
    ``θ ← θ − step_size·b`` (Nesterov: ``θ ← θ − step_size·(scale·g + μ·b)``); the forms
    differ only in these four numbers.
    """

    multi_tensor = True
    hypergradients = frozenset({"lr", "weight_decay"})

    name = "SGD"

    def validate(self, group: Group) -> None:
        check_lr(group)
        check_at_least_zero(group, "momentum")
        check_at_least_zero(group, "dampening")
        check_weight_decay(group)
        for flag in ("nesterov", "maximize", "bias_correction"):
            check_bool(group, flag)
        check_choice(group, "momentum_form", MOMENTUM_FORMS)
        momentum, dampening = as_float("momentum", group["momentum"]), group["dampening"]
        if group["nesterov"] and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if group["momentum_form"] == "ema":
            if momentum >= 1:
                raise ValueError(f"Invalid momentum value for momentum_form='ema': {momentum}")
            if group["nesterov"] or dampening != 0:
                raise ValueError("momentum_form='ema' takes neither nesterov nor dampening")
        elif group["bias_correction"]:
            raise ValueError("bias_correction applies to momentum_form='ema' only")

    def counts_steps(self, group: Group) -> bool:
        """Only the EMA form's bias correction and compact state's stochastic rounding read
        the step count; torch's SGD keeps none, so neither does its form here."""
        return group["momentum_form"] == "ema" or group.get("state_dtype") is not None

    def options(self, group: Group) -> SGDOptions:
        return SGDOptions(weight_decay_mode(group), group["momentum"] != 0, group["nesterov"])

    def state_names(self, options: SGDOptions) -> tuple[str, ...]:
        return ("momentum_buffer",) if options.momentum else ()

    def torch_kernel(self, group: Group, options: SGDOptions) -> TorchKernel | None:
        """torch's fused SGD, for torch's momentum form and L2 decay."""
        if group["momentum_form"] != "torch" or options.weight_decay_mode not in (None, "l2"):
            return None
        numbers = {
            name: as_float(name, group[name])
            for name in ("weight_decay", "momentum", "lr", "dampening")
        }

        def run(params, grads, states, steps, missing, grad_scale):
            # the buffer starts as this step's gradient where it is created
            first = "momentum_buffer" in missing
            torch._fused_sgd_(
                params,
                grads,
                states[0] if options.momentum else [],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
                is_first_step=first,
                grad_scale=grad_scale,
                **numbers,
            )

        return run

    def scalars(self, group: Group, state: State, options: SGDOptions) -> Scalars:
        lr = hyperparameter(group, "lr")
        momentum = as_float("momentum", group["momentum"])
        dampening = as_float("dampening", group["dampening"])
        form = group["momentum_form"]
        if form == "torch":
            # the buffer starts as the gradient of the step that creates it, undampened
            first = "momentum_buffer" not in state
            decay = 0.0 if first else momentum
            weight = 1.0 if first else 1.0 - dampening
            scale, step_size = 1.0, lr
        elif form == "sutskever":
            decay, weight, scale, step_size = momentum, lr * (1.0 - dampening), lr, 1.0
        else:
            step = state["step"].item()
            correction = bias_correction(momentum, step) if group["bias_correction"] else 1.0
            decay, weight, scale, step_size = momentum, 1.0 - momentum, 1.0, lr / correction
        return {
            "lr": lr,
            "momentum": momentum,
            "buffer_decay": decay,
            "grad_weight": weight,
            "grad_scale": scale,
            "step_size": step_size,
            "weight_decay": weight_decay_scalar(group, options.weight_decay_mode),
        }

    def update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: SGDOptions
    ) -> None:
        grad = apply_weight_decay(param, grad, options.weight_decay_mode, scalars["weight_decay"])
        if not options.momentum:
            add_scaled_(param, grad, -scalars["lr"])
            return
        buffer, decay = state["momentum_buffer"], scalars["buffer_decay"]
        # torch's differentiable step starts the buffer as a detached copy of the gradient
        fresh = grad.detach() if differentiated(grad) and decay == 0 else grad
        add_scaled_(buffer.mul_(decay), fresh, scalars["grad_weight"])
        if options.nesterov:
            buffer = grad.mul(scalars["grad_scale"]).add_(buffer, alpha=scalars["momentum"])
        add_scaled_(param, buffer, -scalars["step_size"])

    def steps_sparse(self, group: Group) -> bool:
        """torch's momentum form (or no momentum) only."""
        return group["momentum_form"] == "torch" or group["momentum"] == 0

    def sparse_update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: SGDOptions
    ) -> None:
        """torch.optim.SGD's step of a sparse gradient: the buffer starts as a (sparse) copy
        of it; torch's momentum form only."""
        grad = apply_weight_decay(param, grad, options.weight_decay_mode, scalars["weight_decay"])
        if options.momentum:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = grad.clone().detach()
            else:
                buffer.mul_(scalars["buffer_decay"]).add_(grad, alpha=scalars["grad_weight"])
            grad = grad.add(buffer, alpha=scalars["momentum"]) if options.nesterov else buffer
        param.add_(grad, alpha=-scalars["lr"])


class SGDWRule(SGDRule):
    """SGD's math, with weight decay always decoupled."""

    name = "SGDW"

    def validate(self, group: Group) -> None:
        super().validate(group)
        if group["weight_decay_mode"] == "l2":
            raise ValueError("SGDW decouples weight decay: weight_decay_mode='l2' is SGD's")


class SGD(RuleOptimizer):
    r"""Stochastic gradient descent, with momentum and Nesterov momentum.

    With gradient :math:`g_t` (negated when ``maximize``; plus λθ for L2 weight decay),
    momentum μ, dampening τ, learning rate γ:

    ``momentum_form="torch"`` (torch.optim.SGD's heavy ball, the default):

    .. math::
        b_1 = g_1,\quad b_t = \mu b_{t-1} + (1-\tau) g_t,\quad
        \theta_t = \theta_{t-1} - \gamma\,(g_t + \mu b_t \text{ if nesterov else } b_t)

    ``momentum_form="sutskever"`` (Sutskever et al. 2013; the SGDW paper's Algorithm 1: the
    learning rate enters the buffer, so a changed lr does not rescale the old velocity):

    .. math::
        v_0 = 0,\quad v_t = \mu v_{t-1} + (1-\tau)\gamma g_t,\quad
        \theta_t = \theta_{t-1} - (\gamma g_t + \mu v_t \text{ if nesterov else } v_t)

    ``momentum_form="ema"`` (momentum as an exponential moving average):

    .. math::
        m_0 = 0,\quad m_t = \mu m_{t-1} + (1-\mu) g_t,\quad
        \theta_t = \theta_{t-1} - \gamma\, m_t / (1-\mu^t \text{ if bias_correction else } 1)

    Without momentum all forms are :math:`\theta_t = \theta_{t-1} - \gamma g_t`.

    Args:
        params: iterable of tensors or of dicts defining param groups.
        lr: learning rate γ.
        momentum: μ (< 1 for the EMA form).
        dampening: τ (heavy ball and Sutskever forms).
        weight_decay: λ, applied as ``weight_decay_mode`` says (see :class:`adamkit.Adam`);
            ``"decoupled_schedule"`` is SGDW (Loshchilov & Hutter, Algorithm 1).
        nesterov: Nesterov momentum (needs μ > 0 and τ = 0; not for the EMA form).
        maximize: maximize the objective.
        foreach, differentiable, fused: torch's flags, see RuleOptimizer.
        momentum_form: ``"torch"``, ``"sutskever"`` or ``"ema"``.
        bias_correction: divide the EMA by :math:`1-\mu^t` (EMA form only).
        weight_decay_mode: ``"l2"``, ``"decoupled_lr"`` or ``"decoupled_schedule"``.
        skip_nonfinite: skip the whole step (params, state and step count untouched) when
            any gradient holds a NaN or an Inf, counting it in ``skipped_steps``.
        state_dtype: how per-element state is kept: None (the param's dtype, as torch),
            ``torch.float32``, ``torch.bfloat16`` (rounded stochastically) or ``"8bit"``
            (block-wise dynamic quantization, Dettmers et al. 2022); see
            :mod:`adamkit.precision`.
        backend: ``"auto"`` (default), ``"eager"`` or ``"fused"`` (see docs/performance.md).

    State: with momentum, ``momentum_buffer`` (b, v or m); ``step`` in the EMA form and
    with compact state only (torch's SGD keeps no step count).
    """

    rule = SGDRule()
    torch_flags = ("foreach", "differentiable", "fused")

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        momentum_form: str = "torch",
        bias_correction: bool = False,
        weight_decay_mode: str = "l2",
        backend: str | None = None,
        skip_nonfinite: bool = False,
        state_dtype: StateDtype = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "momentum_form": momentum_form,
            "bias_correction": bias_correction,
            "weight_decay_mode": weight_decay_mode,
        }
        super().__init__(
            params,
            defaults,
            backend=backend,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            torch_flags={"foreach": foreach, "differentiable": differentiable, "fused": fused},
        )


class SGDW(SGD):
    r"""SGDW: SGD with momentum and decoupled weight decay (Loshchilov & Hutter, *Decoupled
    Weight Decay Regularization*, ICLR 2019, Algorithm 1).

    With schedule multiplier :math:`\eta_t` (the group's lr over its peak lr, as an LR
    scheduler sets it), base lr α, momentum β1 and weight decay λ:

    .. math::
        m_t = \beta_1 m_{t-1} + \eta_t \alpha\, g_t, \quad
        \theta_t = \theta_{t-1} - m_t - \eta_t \lambda\, \theta_{t-1}

    i.e. :class:`SGD` with ``momentum_form="sutskever"`` (the lr inside the buffer) and
    ``weight_decay_mode="decoupled_schedule"`` (the decay scaled by η_t only, not by the
    lr). The paper trains with β1 = 0.9 and λ = λ_norm/sqrt(batches per run), 1.3e-4 to
    2.5e-4 on CIFAR-10 (λ_norm 0.025 to 0.05, 100 epochs of 391 batches); the defaults are
    β1 = 0.9 and λ = 1e-4. ``weight_decay_mode="decoupled_lr"`` scales the decay
    by the lr instead, like torch's AdamW. Other keyword arguments as :class:`SGD`.
    """

    rule = SGDWRule()

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 1e-4,
        nesterov: bool = False,
        *,
        momentum_form: str = "sutskever",
        weight_decay_mode: str = "decoupled_schedule",
        **options: Any,
    ) -> None:
        super().__init__(
            params,
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
            momentum_form=momentum_form,
            weight_decay_mode=weight_decay_mode,
            **options,
        )
