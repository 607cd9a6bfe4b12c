"""Adamax (Kingma & Ba 2015, §7.1): Adam with the infinity norm."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from adamkit.algorithms.common import (
    apply_weight_decay,
    as_float,
    betas,
    bias_correction,
    check_adam_family,
    check_choice,
    maximum_,
    update_first_moment,
    weight_decay_mode,
    weight_decay_scalar,
)
from adamkit.optimizer import Params, RuleOptimizer, StateDtype
from adamkit.rule import Group, Rule, Scalars, State

EPS_MODES = ("in_max", "none", "denominator")


class AdamaxOptions(NamedTuple):
    weight_decay_mode: str | None
    eps_mode: str


class AdamaxRule(Rule):
    """Adamax's math; see :class:`Adamax` for the equations."""

    multi_tensor = True

    name = "Adamax"
    nonnegative_states = frozenset({"exp_inf"})

    def validate(self, group: Group) -> None:
        check_adam_family(group)
        check_choice(group, "eps_mode", EPS_MODES)

    def options(self, group: Group) -> AdamaxOptions:
        return AdamaxOptions(weight_decay_mode(group), group["eps_mode"])

    def state_names(self, options: AdamaxOptions) -> tuple[str, ...]:
        return ("exp_avg", "exp_inf")

    def scalars(self, group: Group, state: State, options: AdamaxOptions) -> Scalars:
        beta1, beta2 = betas(group)
        lr = as_float("lr", group["lr"])
        return {
            "beta1": beta1,
            "beta2": beta2,
            "eps": as_float("eps", group["eps"]),
            "step_size": lr / bias_correction(beta1, state["step"].item()),
            "weight_decay": weight_decay_scalar(group, options.weight_decay_mode),
        }

    def update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: AdamaxOptions
    ) -> None:
        grad = apply_weight_decay(param, grad, options.weight_decay_mode, scalars["weight_decay"])
        exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
        update_first_moment(exp_avg, grad, scalars["beta1"])
        norm = grad.abs()
        if options.eps_mode == "in_max":
            norm.add_(scalars["eps"])
        maximum_(exp_inf.mul_(scalars["beta2"]), norm)
        denom = exp_inf.add(scalars["eps"]) if options.eps_mode == "denominator" else exp_inf
        param.addcdiv_(exp_avg, denom, value=-scalars["step_size"])


class Adamax(RuleOptimizer):
    r"""Adamax (Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015, §7.1,
    Algorithm 2): Adam with the :math:`L^\infty` norm in place of the second moment.

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\, m_t / u_t

    (torch's form, ``eps_mode="in_max"``). The paper has no ε (``"none"``:
    :math:`u_t = \max(\beta_2 u_{t-1}, |g_t|)`, undefined where every gradient so far was 0);
    ``"denominator"`` divides by :math:`u_t + \epsilon` instead. The step is bounded by γ.

    Args:
        params: iterable of tensors or of dicts defining param groups.
        lr: learning rate γ (paper default 0.002).
        betas: (β1, β2).
        eps: ε.
        weight_decay: λ, applied as ``weight_decay_mode`` says (see :class:`adamkit.Adam`).
        maximize: maximize the objective.
        foreach, capturable, differentiable: torch's flags, see RuleOptimizer.
        eps_mode: ``"in_max"``, ``"none"`` or ``"denominator"``.
        weight_decay_mode: ``"l2"``, ``"decoupled_lr"`` or ``"decoupled_schedule"``.
        skip_nonfinite: skip the whole step (params, state and step count untouched) when
            any gradient holds a NaN or an Inf, counting it in ``skipped_steps``.
        state_dtype: how per-element state is kept: None (the param's dtype, as torch),
            ``torch.float32``, ``torch.bfloat16`` (rounded stochastically) or ``"8bit"``
            (block-wise dynamic quantization, Dettmers et al. 2022); see
            :mod:`adamkit.precision`.
        backend: ``"auto"`` (default), ``"eager"`` or ``"fused"`` (see docs/performance.md).

    State: ``step``, ``exp_avg``, ``exp_inf``.
    """

    rule = AdamaxRule()
    torch_flags = ("foreach", "differentiable", "capturable")

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        eps_mode: str = "in_max",
        weight_decay_mode: str = "l2",
        backend: str | None = None,
        skip_nonfinite: bool = False,
        state_dtype: StateDtype = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "eps_mode": eps_mode,
            "weight_decay_mode": weight_decay_mode,
        }
        super().__init__(
            params,
            defaults,
            backend=backend,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            torch_flags={
                "foreach": foreach,
                "differentiable": differentiable,
                "capturable": capturable,
            },
        )
