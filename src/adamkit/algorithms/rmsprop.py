"""RMSprop (Tieleman & Hinton 2012), centered (Graves 2013), with momentum."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from adamkit.algorithms.common import (
    add_eps,
    apply_weight_decay,
    as_float,
    check_at_least_zero,
    check_bool,
    check_choice,
    check_eps,
    check_lr,
    check_weight_decay,
    update_first_moment,
    update_second_moment,
    weight_decay_mode,
    weight_decay_scalar,
)
from adamkit.optimizer import Params, RuleOptimizer, StateDtype
from adamkit.rule import Group, Rule, Scalars, State

MOMENTUM_FORMS = ("torch", "sutskever")


class RMSpropOptions(NamedTuple):
    weight_decay_mode: str | None
    centered: bool
    momentum: bool
    nesterov: bool
    eps_in_sqrt: bool


class RMSpropRule(Rule):
    """RMSprop's math; see :class:`RMSprop` for the equations."""

    multi_tensor = True

    name = "RMSprop"
    nonnegative_states = frozenset({"square_avg"})

    def validate(self, group: Group) -> None:
        check_lr(group)
        check_eps(group)
        check_at_least_zero(group, "momentum")
        check_weight_decay(group)
        check_at_least_zero(group, "alpha")
        for flag in ("centered", "maximize", "eps_in_sqrt", "nesterov"):
            check_bool(group, flag)
        check_choice(group, "momentum_form", MOMENTUM_FORMS)
        if group["nesterov"] and as_float("momentum", group["momentum"]) <= 0:
            raise ValueError("Nesterov momentum requires a momentum")

    def options(self, group: Group) -> RMSpropOptions:
        return RMSpropOptions(
            weight_decay_mode(group),
            group["centered"],
            group["momentum"] > 0,
            group["nesterov"],
            group["eps_in_sqrt"],
        )

    def state_names(self, options: RMSpropOptions) -> tuple[str, ...]:
        momentum = ("momentum_buffer",) if options.momentum else ()
        centered = ("grad_avg",) if options.centered else ()
        return ("square_avg", *momentum, *centered)

    def scalars(self, group: Group, state: State, options: RMSpropOptions) -> Scalars:
        lr = as_float("lr", group["lr"])
        # the buffer sums g/d (torch) or γ·g/d (sutskever); the step takes γ·b or b
        inside = group["momentum_form"] == "sutskever"
        return {
            "lr": lr,
            "buffer_weight": lr if inside else 1.0,
            "step_size": 1.0 if inside else lr,
            "alpha": as_float("alpha", group["alpha"]),
            "eps": as_float("eps", group["eps"]),
            "momentum": as_float("momentum", group["momentum"]),
            "weight_decay": weight_decay_scalar(group, options.weight_decay_mode),
        }

    def update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: RMSpropOptions
    ) -> None:
        grad = apply_weight_decay(param, grad, options.weight_decay_mode, scalars["weight_decay"])
        alpha, eps = scalars["alpha"], scalars["eps"]
        square_avg = state["square_avg"]
        update_second_moment(square_avg, grad, alpha)
        variance = square_avg
        if options.centered:
            grad_avg = state["grad_avg"]
            update_first_moment(grad_avg, grad, alpha)
            variance = square_avg.addcmul(grad_avg, grad_avg, value=-1)
        denom = variance.add(eps).sqrt_() if options.eps_in_sqrt else add_eps(variance.sqrt(), eps)
        if options.momentum:
            buffer = state["momentum_buffer"]
            momentum, weight = scalars["momentum"], scalars["buffer_weight"]
            buffer.mul_(momentum).addcdiv_(grad, denom, value=weight)
            if options.nesterov:
                buffer = buffer.mul(momentum).addcdiv_(grad, denom, value=weight)
            param.add_(buffer, alpha=-scalars["step_size"])
        else:
            param.addcdiv_(grad, denom, value=-scalars["lr"])


class RMSprop(RuleOptimizer):
    r"""RMSprop (Tieleman & Hinton, *Lecture 6.5*, 2012), optionally centered (Graves,
    *Generating Sequences With Recurrent Neural Networks*, 2013), in torch.optim.RMSprop's form:

    .. math::
        v_t &= \alpha v_{t-1} + (1-\alpha) g_t^2, \qquad
        \bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g_t \ \text{(centered)} \\
        \tilde v_t &= v_t - \bar g_t^2 \ \text{(centered) or } v_t \\
        d_t &= \sqrt{\tilde v_t} + \epsilon \ \text{(torch) or } \sqrt{\tilde v_t + \epsilon}
               \ \text{(eps_in_sqrt: TensorFlow, optax)} \\
        b_t &= \mu b_{t-1} + g_t/d_t,\quad \theta_t = \theta_{t-1} - \gamma b_t
               \ \text{(momentum μ > 0) or } \theta_t = \theta_{t-1} - \gamma g_t/d_t

    No bias correction: :math:`v_0 = 0`. ``momentum_form="sutskever"`` puts the learning rate
    inside the buffer, as optax's ``rmsprop`` (a ``trace`` after the learning rate) and
    TensorFlow do: :math:`b_t = \mu b_{t-1} + \gamma_t g_t/d_t,\ \theta_t = \theta_{t-1} - b_t`;
    the same numbers at a constant γ, while under a schedule each step keeps the γ it was
    taken with. ``nesterov=True`` steps along :math:`g_t/d_t + \mu b_t` (torch form, times γ)
    or :math:`\gamma_t g_t/d_t + \mu b_t` (sutskever form), optax's ``nesterov``.

    Args:
        params: iterable of tensors or of dicts defining param groups.
        lr: learning rate γ.
        alpha: smoothing constant α.
        eps: ε.
        weight_decay: λ, applied as ``weight_decay_mode`` says (see :class:`adamkit.Adam`).
        momentum: μ, applied to the normalised gradient.
        centered: normalise by the estimated variance instead of the second moment.
        maximize: maximize the objective.
        foreach, capturable, differentiable: torch's flags, see RuleOptimizer.
        eps_in_sqrt: put ε inside the square root.
        momentum_form: ``"torch"`` (γ outside the buffer) or ``"sutskever"`` (γ inside,
            optax's and TensorFlow's).
        nesterov: Nesterov momentum (optax's ``rmsprop(nesterov=True)``); needs μ > 0.
        weight_decay_mode: ``"l2"``, ``"decoupled_lr"`` or ``"decoupled_schedule"``.
        skip_nonfinite: skip the whole step (params, state and step count untouched) when
            any gradient holds a NaN or an Inf, counting it in ``skipped_steps``.
        state_dtype: how per-element state is kept: None (the param's dtype, as torch),
            ``torch.float32``, ``torch.bfloat16`` (rounded stochastically) or ``"8bit"``
            (block-wise dynamic quantization, Dettmers et al. 2022); see
            :mod:`adamkit.precision`.
        backend: ``"auto"`` (default), ``"eager"`` or ``"fused"`` (see docs/performance.md).

    State: ``step``, ``square_avg``, ``grad_avg`` (centered), ``momentum_buffer`` (μ > 0).
    """

    rule = RMSpropRule()
    torch_flags = ("capturable", "foreach", "differentiable")

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        eps_in_sqrt: bool = False,
        momentum_form: str = "torch",
        nesterov: bool = False,
        weight_decay_mode: str = "l2",
        backend: str | None = None,
        skip_nonfinite: bool = False,
        state_dtype: StateDtype = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "maximize": maximize,
            "eps_in_sqrt": eps_in_sqrt,
            "momentum_form": momentum_form,
            "nesterov": nesterov,
            "weight_decay_mode": weight_decay_mode,
        }
        super().__init__(
            params,
            defaults,
            backend=backend,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            torch_flags={
                "capturable": capturable,
                "foreach": foreach,
                "differentiable": differentiable,
            },
        )
