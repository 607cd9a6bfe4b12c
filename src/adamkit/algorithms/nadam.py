"""NAdam (Dozat 2016): Adam with Nesterov momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from adamkit.algorithms.common import (
    add_eps,
    apply_weight_decay,
    as_float,
    betas,
    bias_correction,
    check_adam_family,
    check_at_least_zero,
    check_bool,
    check_choice,
    complete_with_decoupled_flag,
    update_first_moment,
    update_second_moment,
    weight_decay_mode,
    weight_decay_options,
    weight_decay_scalar,
)
from adamkit.optimizer import Params, RuleOptimizer, StateDtype
from adamkit.rule import Group, Rule, Scalars, State, scalar_dtype


class NAdamOptions(NamedTuple):
    weight_decay_mode: str | None
    differentiable: bool = False  # torch's differentiable form (see NAdamRule.update)


class NAdamRule(Rule):
    """NAdam's math; see :class:`NAdam` for the equations."""

    multi_tensor = True

    name = "NAdam"
    nonnegative_states = frozenset({"exp_avg_sq"})
    scalar_state_names = ("mu_product",)

    def validate(self, group: Group) -> None:
        check_adam_family(group)
        check_at_least_zero(group, "momentum_decay")
        check_bool(group, "decoupled_weight_decay")
        check_choice(group, "mu_schedule", ("dozat", "constant"))

    def complete(self, group: dict[str, Any], defaults: Group) -> None:
        complete_with_decoupled_flag(group, defaults)

    def options(self, group: Group) -> NAdamOptions:
        return NAdamOptions(weight_decay_mode(group), bool(group.get("differentiable")))

    def state_names(self, options: NAdamOptions) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def init_state(self, name: str, param: Tensor, options: NAdamOptions) -> Tensor:
        if name == "mu_product":
            return torch.tensor(1.0, dtype=scalar_dtype())
        return super().init_state(name, param, options)

    def momentum(self, group: Group, step: float) -> float:
        """μ_t = β1(1 − ½·0.96^(tψ)) (Dozat, torch, Keras), or β1 (``"constant"``, optax)."""
        beta1 = betas(group)[0]
        if group["mu_schedule"] == "constant":
            return beta1
        return beta1 * (
            1.0 - 0.5 * 0.96 ** (step * as_float("momentum_decay", group["momentum_decay"]))
        )

    def scalars(self, group: Group, state: State, options: NAdamOptions) -> Scalars:
        beta1, beta2 = betas(group)
        lr = as_float("lr", group["lr"])
        step = state["step"].item()
        mu, mu_next = self.momentum(group, step), self.momentum(group, step + 1)
        if group["mu_schedule"] == "constant":
            # optax's bias correction 1 − β1^t, in float64 whatever torch's scalar dtype
            mu_product = beta1**step
            state["mu_product"].fill_(mu_product)
        else:  # torch's running product, in its scalar dtype
            state["mu_product"] *= mu
            # torch's differentiable step computes its step sizes from it as a Tensor
            product = state["mu_product"]
            mu_product = product if options.differentiable else product.item()
        return {
            "beta1": beta1,
            "beta2": beta2,
            "eps": as_float("eps", group["eps"]),
            "bias_correction2": bias_correction(beta2, step),
            "grad_step": -lr * (1.0 - mu) / (1.0 - mu_product),
            "exp_avg_step": (-lr * mu_next) / (1.0 - mu_product * mu_next),
            "weight_decay": weight_decay_scalar(group, options.weight_decay_mode),
        }

    def update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: NAdamOptions
    ) -> None:
        grad = apply_weight_decay(param, grad, options.weight_decay_mode, scalars["weight_decay"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        update_first_moment(exp_avg, grad, scalars["beta1"])
        update_second_moment(exp_avg_sq, grad, scalars["beta2"])
        denom = add_eps(exp_avg_sq.div(scalars["bias_correction2"]).sqrt(), scalars["eps"])
        if options.differentiable:  # as torch's: each numerator scaled first
            param.addcdiv_(grad * scalars["grad_step"], denom)
            param.addcdiv_(exp_avg * scalars["exp_avg_step"], denom)
        else:
            param.addcdiv_(grad, denom, value=scalars["grad_step"])
            param.addcdiv_(exp_avg, denom, value=scalars["exp_avg_step"])


class NAdam(RuleOptimizer):
    r"""NAdam (Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR workshop 2016), in
    torch.optim.NAdam's form, with momentum schedule μ_t and ψ = ``momentum_decay``:

    .. math::
        \mu_t &= \beta_1 (1 - \tfrac12\, 0.96^{t\psi}) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        d_t &= \sqrt{v_t/(1-\beta_2^t)} + \epsilon \\
        \theta_t &= \theta_{t-1}
            - \gamma \frac{1-\mu_t}{1-\prod_{i\le t}\mu_i}\, g_t/d_t
            - \gamma \frac{\mu_{t+1}}{1-\prod_{i\le t+1}\mu_i}\, m_t/d_t

    ``mu_schedule="constant"`` sets μ_t = β1 for every t (optax's ``nadam``), which torch's
    ``momentum_decay`` cannot express; its products are optax's :math:`\beta_1^t` and
    :math:`\beta_1^{t+1}`, in float64 (torch's schedule keeps its running product
    ``mu_product`` in torch's scalar dtype, float32 by default, as torch does).

    Args:
        params: iterable of tensors or of dicts defining param groups.
        lr: learning rate γ.
        betas: (β1, β2).
        eps: ε.
        weight_decay: λ.
        momentum_decay: ψ (Dozat's 1/250).
        maximize: maximize the objective.
        foreach, capturable, differentiable: torch's flags, see RuleOptimizer.
        decoupled_weight_decay: torch's flag; True means ``weight_decay_mode="decoupled_lr"``.
        weight_decay_mode: ``"l2"``, ``"decoupled_lr"`` or ``"decoupled_schedule"`` (see
            :class:`adamkit.Adam`).
        mu_schedule: ``"dozat"`` or ``"constant"``.
        skip_nonfinite: skip the whole step (params, state and step count untouched) when
            any gradient holds a NaN or an Inf, counting it in ``skipped_steps``.
        state_dtype: how per-element state is kept: None (the param's dtype, as torch),
            ``torch.float32``, ``torch.bfloat16`` (rounded stochastically) or ``"8bit"``
            (block-wise dynamic quantization, Dettmers et al. 2022); see
            :mod:`adamkit.precision`.
        backend: ``"auto"`` (default), ``"eager"`` or ``"fused"`` (see docs/performance.md).

    State: ``step``, ``mu_product`` (0-dim, :math:`\prod_{i\le t}\mu_i`), ``exp_avg``,
    ``exp_avg_sq``.
    """

    rule = NAdamRule()
    torch_flags = ("foreach", "capturable", "differentiable")

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool | None = None,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        weight_decay_mode: str | None = None,
        mu_schedule: str = "dozat",
        backend: str | None = None,
        skip_nonfinite: bool = False,
        state_dtype: StateDtype = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "maximize": maximize,
            **weight_decay_options(decoupled_weight_decay, weight_decay_mode),
            "mu_schedule": mu_schedule,
        }
        super().__init__(
            params,
            defaults,
            backend=backend,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            torch_flags={
                "foreach": foreach,
                "capturable": capturable,
                "differentiable": differentiable,
            },
        )
