"""Adam (Kingma & Ba 2015), AdamW (Loshchilov & Hutter 2019), AMSGrad (Reddi et al. 2018)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from adamkit.algorithms.common import (
    add_eps,
    addcdiv_scaled_,
    apply_weight_decay,
    as_float,
    betas,
    bias_correction,
    check_adam_family,
    check_at_least_zero,
    check_bool,
    check_choice,
    complete_with_decoupled_flag,
    hyperparameter,
    maximum_,
    update_first_moment,
    update_second_moment,
    weight_decay_mode,
    weight_decay_options,
    weight_decay_scalar,
)
from adamkit.optimizer import Params, RuleOptimizer, StateDtype
from adamkit.rule import Group, Rule, Scalars, State, TorchKernel


def check_tensor_numbers(group: Group) -> None:
    """torch.optim.Adam's checks of a Tensor lr and Tensor betas: betas both Tensors or
    both numbers, and no Tensor with ``foreach=True`` unless ``capturable=True``."""
    foreach_only = bool(group.get("foreach")) and not group.get("capturable")
    if isinstance(group["lr"], Tensor) and foreach_only:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    beta1, beta2 = group["betas"]
    if isinstance(beta1, Tensor) != isinstance(beta2, Tensor):
        raise ValueError("betas must be either both floats or both Tensors")
    if isinstance(beta1, Tensor) and foreach_only:
        raise ValueError(
            "betas[0] as a Tensor is not supported for capturable=False and foreach=True"
        )


class AdamOptions(NamedTuple):
    weight_decay_mode: str | None
    amsgrad: bool
    amsgrad_max: str
    eps_root: bool = False  # ε_root ≠ 0: sqrt(v̂ + ε_root) + ε


class AdamRule(Rule):
    """Adam's math; see :class:`Adam` for the equations."""

    multi_tensor = True
    hypergradients = frozenset({"lr", "betas", "weight_decay"})

    name = "Adam"
    nonnegative_states = frozenset({"exp_avg_sq", "max_exp_avg_sq"})

    def validate(self, group: Group) -> None:
        check_adam_family(group)
        check_tensor_numbers(group)
        for flag in ("amsgrad", "bias_correction", "decoupled_weight_decay"):
            check_bool(group, flag)
        check_choice(group, "eps_mode", ("paper", "efficient"))
        check_choice(group, "amsgrad_max", ("raw", "corrected"))
        check_at_least_zero(group, "eps_root")
        if as_float("eps_root", group["eps_root"]) and group["eps_mode"] != "paper":
            raise ValueError("eps_root needs eps_mode='paper' (it is inside sqrt(v̂ + eps_root))")

    def complete(self, group: dict[str, Any], defaults: Group) -> None:
        complete_with_decoupled_flag(group, defaults)

    def options(self, group: Group) -> AdamOptions:
        return AdamOptions(
            weight_decay_mode(group),
            group["amsgrad"],
            group["amsgrad_max"],
            as_float("eps_root", group["eps_root"]) != 0,
        )

    def state_names(self, options: AdamOptions) -> tuple[str, ...]:
        names = ("exp_avg", "exp_avg_sq")
        return (*names, "max_exp_avg_sq") if options.amsgrad else names

    def torch_kernel(self, group: Group, options: AdamOptions) -> TorchKernel | None:
        """torch's fused Adam (L2 decay) or AdamW (decoupled by lr), for torch's
        conventions: bias correction, ε outside the root, AMSGrad's raw maximum."""
        mode = options.weight_decay_mode
        if (
            mode not in (None, "l2", "decoupled_lr")
            or not group["bias_correction"]
            or group["eps_mode"] != "paper"
            or options.eps_root
            or (options.amsgrad and options.amsgrad_max != "raw")
        ):
            return None
        kernel = torch._fused_adamw_ if mode == "decoupled_lr" else torch._fused_adam_
        beta1, beta2 = betas(group)
        numbers = {
            "lr": as_float("lr", group["lr"]),
            "beta1": beta1,
            "beta2": beta2,
            "weight_decay": as_float("weight_decay", group["weight_decay"]),
            "eps": as_float("eps", group["eps"]),
            "amsgrad": options.amsgrad,
            "maximize": group["maximize"],
        }

        def run(params, grads, states, steps, missing, grad_scale):
            maxima = states[2] if options.amsgrad else []
            kernel(params, grads, *states[:2], maxima, steps, grad_scale=grad_scale, **numbers)

        return run

    def scalars(self, group: Group, state: State, options: AdamOptions) -> Scalars:
        scalars = adam_scalars(group, state, options.weight_decay_mode, group["bias_correction"])
        if options.eps_root:
            scalars["eps_root"] = as_float("eps_root", group["eps_root"])
        return scalars

    def update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: AdamOptions
    ) -> None:
        grad = apply_weight_decay(param, grad, options.weight_decay_mode, scalars["weight_decay"])
        denom = update_moments(grad, state, scalars, options)
        addcdiv_scaled_(param, state["exp_avg"], denom, -scalars["step_size"])


def adam_scalars(
    group: Group, state: State, weight_decay_mode: str | None, corrected: bool = True
) -> dict[str, Any]:
    """Adam's numbers at this step: betas, step size γ/(1−β1^t), the second moment's
    correction 1−β2^t and ε in the group's ``eps_mode`` (all corrections 1 when not
    ``corrected``), and the weight-decay scalar. Shared by the rules built on Adam's step.
    A differentiated lr or β (:func:`hyperparameter`) stays a Tensor, and so do the numbers
    computed from it."""
    beta1, beta2 = (hyperparameter(group, "betas", beta) for beta in group["betas"])
    scalars = {
        "beta1": beta1,
        "beta2": beta2,
        "weight_decay": weight_decay_scalar(group, weight_decay_mode),
    }
    eps = as_float("eps", group["eps"])
    torch_form = group["eps_mode"] == "paper" and group.get("amsgrad_max", "raw") == "raw"
    if group.get("differentiable") and corrected and torch_form and not group.get("eps_root"):
        return scalars | tensor_step_scalars(group, state, eps)
    step = state["step"].item()
    if corrected:
        bias_correction1 = bias_correction(beta1, step)
        bias_correction2 = bias_correction(beta2, step)
    else:
        bias_correction1 = bias_correction2 = 1.0
    bias_correction2_sqrt = bias_correction2**0.5
    if group["eps_mode"] == "efficient":
        # α·sqrt(1−β2^t)/(1−β1^t)·m/(sqrt(v) + ε̂) is the paper form with ε = ε̂/sqrt(1−β2^t)
        eps /= bias_correction2_sqrt
    return scalars | {
        "step_size": hyperparameter(group, "lr") / bias_correction1,
        "bias_correction2": bias_correction2,
        "bias_correction2_sqrt": bias_correction2_sqrt,
        "eps": eps,
    }


def tensor_step_scalars(group: Group, state: State, eps: float) -> dict[str, Any]:
    """torch's differentiable (and capturable) Adam: the corrections from the step count
    as a Tensor (float32 under torch's default dtype), the step size s = γ/(1−β1^t) folded
    into the denominator, θ ← θ + m/(sqrt(v)/(sqrt(1−β2^t)·(−s)) + ε/(−s)): the same
    update as the float form's, in torch's roundings."""
    step = state["step"]
    beta1, beta2 = (as_operand(beta) for beta in group["betas"])
    bias_correction2 = 1 - beta2**step
    step_size_neg = (as_operand(group["lr"]) / (1 - beta1**step)).neg()
    return {
        "step_size": -1.0,
        "bias_correction2": bias_correction2,
        "bias_correction2_sqrt": bias_correction2.sqrt() * step_size_neg,
        "eps": eps / step_size_neg,
    }


def as_operand(value: float | Tensor) -> float | Tensor:
    """A hyperparameter as torch's step takes it: a 1-element Tensor as a 0-dim one."""
    return value.squeeze() if isinstance(value, Tensor) else value


def update_moments(grad: Tensor, state: State, scalars: Scalars, options: AdamOptions) -> Tensor:
    """Advance m and v (and AMSGrad's maximum) in place; return Adam's denominator
    sqrt(v̂) + ε as a new tensor. The step is then θ ← θ − step_size·m/denominator."""
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    update_first_moment(exp_avg, grad, scalars["beta1"])
    update_second_moment(exp_avg_sq, grad, scalars["beta2"])
    if not options.amsgrad:
        return denominator(exp_avg_sq, scalars, options.eps_root)
    max_exp_avg_sq = state["max_exp_avg_sq"]
    if options.amsgrad_max == "raw":
        maximum_(max_exp_avg_sq, exp_avg_sq)
        return denominator(max_exp_avg_sq, scalars, options.eps_root)
    maximum_(max_exp_avg_sq, exp_avg_sq / scalars["bias_correction2"])
    return root_plus_eps(max_exp_avg_sq, scalars, options.eps_root)


def denominator(second_moment: Tensor, scalars: Scalars, root: bool = False) -> Tensor:
    """sqrt(v/(1−β2^t)) + ε, as a new tensor (ND-Adam passes its per-vector v); with
    ``root`` (optax's ``eps_root``) sqrt(v/(1−β2^t) + ε_root) + ε."""
    if root:
        return root_plus_eps(second_moment / scalars["bias_correction2"], scalars, root)
    return (second_moment.sqrt() / scalars["bias_correction2_sqrt"]).add_(scalars["eps"])


def root_plus_eps(corrected: Tensor, scalars: Scalars, root: bool) -> Tensor:
    """sqrt(v̂) + ε, or with ``root`` sqrt(v̂ + ε_root) + ε, for a corrected second moment
    v̂ (left as it is), as a new tensor."""
    square = corrected.add(scalars["eps_root"]) if root else corrected
    return add_eps(square.sqrt(), scalars["eps"])


class AdamWRule(AdamRule):
    """Adam's math, with weight decay always decoupled."""

    name = "AdamW"

    def validate(self, group: Group) -> None:
        super().validate(group)
        if group["weight_decay_mode"] == "l2":
            raise ValueError("AdamW decouples weight decay: weight_decay_mode='l2' is Adam's")


class Adam(RuleOptimizer):
    r"""Adam (Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015).

    At step :math:`t` (from 1), with gradient :math:`g_t` (negated when ``maximize``):

    .. math::
        g_t &\leftarrow g_t + \lambda\theta_{t-1}  \quad\text{(weight_decay_mode="l2")}\\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \hat m_t &= m_t/(1-\beta_1^t), \quad \hat v_t = v_t/(1-\beta_2^t) \\
        \theta_t &= \theta_{t-1} - \gamma\, \hat m_t/(\sqrt{\hat v_t} + \epsilon)

    Defaults, state names (``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) and
    numbers are ``torch.optim.Adam``'s. The paper's and other frameworks' conventions by
    switch:

    Args:
        params: iterable of tensors or of dicts defining param groups.
        lr: learning rate γ (float or 1-element Tensor).
        betas: (β1, β2), each in [0, 1).
        eps: ε, added to the denominator.
        weight_decay: λ.
        amsgrad: use the running maximum of the second moment (Reddi, Kale & Kumar 2018):
            ``amsgrad_max="raw"`` (torch) takes :math:`\max(v^{max}_{t-1}, v_t)` and then
            corrects it by :math:`1-\beta_2^t`; ``"corrected"`` (optax) takes the max over
            :math:`\hat v_t`. The paper's AMSGrad is ``amsgrad=True,
            bias_correction=False, eps=0``.
        maximize: maximize the objective.
        foreach, capturable, differentiable, fused: torch's flags, see RuleOptimizer.
        decoupled_weight_decay: torch's flag; True means ``weight_decay_mode="decoupled_lr"``.
        weight_decay_mode: ``"l2"`` adds λθ to the gradient; ``"decoupled_lr"`` shrinks
            :math:`\theta \leftarrow \theta(1-\gamma\lambda)` (torch AdamW);
            ``"decoupled_schedule"`` shrinks :math:`\theta \leftarrow \theta(1-\eta_t\lambda)`
            with :math:`\eta_t` = lr / peak lr, the schedule multiplier (Loshchilov &
            Hutter's Algorithm 2).
        bias_correction: divide the moments by :math:`1-\beta^t` (Algorithm 1). False gives
            RMSprop with momentum (Kingma & Ba §6.4).
        eps_mode: ``"paper"`` (Algorithm 1, torch) or ``"efficient"`` (§2:
            :math:`\alpha_t = \alpha\sqrt{1-\beta_2^t}/(1-\beta_1^t)`,
            :math:`\theta_t = \theta_{t-1} - \alpha_t m_t/(\sqrt{v_t}+\hat\epsilon)`), which
            is the paper form with :math:`\epsilon = \hat\epsilon/\sqrt{1-\beta_2^t}`.
        amsgrad_max: ``"raw"`` or ``"corrected"``, see ``amsgrad``.
        eps_root: :math:`\epsilon_{root}` inside the root, as optax's ``adam``:
            :math:`\hat m_t/(\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)` (keeps the
            root's gradient finite when meta-learning through the step); 0 (torch) by
            default; with ``eps_mode="paper"`` only.
        skip_nonfinite: skip the whole step (params, state and step count untouched) when
            any gradient holds a NaN or an Inf, counting it in ``skipped_steps``.
        state_dtype: how per-element state is kept: None (the param's dtype, as torch),
            ``torch.float32``, ``torch.bfloat16`` (rounded stochastically) or ``"8bit"``
            (block-wise dynamic quantization, Dettmers et al. 2022); see
            :mod:`adamkit.precision`.
        backend: ``"auto"`` (default), ``"eager"`` or ``"fused"`` (see docs/performance.md).
    """

    rule = AdamRule()
    torch_flags = ("foreach", "capturable", "differentiable", "fused")

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool | None = None,
        weight_decay_mode: str | None = None,
        bias_correction: bool = True,
        eps_mode: str = "paper",
        amsgrad_max: str = "raw",
        eps_root: float = 0.0,
        backend: str | None = None,
        skip_nonfinite: bool = False,
        state_dtype: StateDtype = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            **weight_decay_options(decoupled_weight_decay, weight_decay_mode),
            "bias_correction": bias_correction,
            "eps_mode": eps_mode,
            "amsgrad_max": amsgrad_max,
            "eps_root": eps_root,
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
                "fused": fused,
            },
        )


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, *Decoupled Weight Decay
    Regularization*, ICLR 2019, Algorithm 2).

    .. math::
        \theta_t = \theta_{t-1} - \gamma\,\hat m_t/(\sqrt{\hat v_t}+\epsilon)
                   - \gamma\lambda\theta_{t-1}

    with torch's default ``weight_decay=1e-2`` and torch's scaling of the decay by the
    learning rate (``weight_decay_mode="decoupled_lr"``). The paper scales it by the schedule
    multiplier :math:`\eta_t` only: ``weight_decay_mode="decoupled_schedule"``, where the
    paper's λ equals torch's ``weight_decay`` times the base lr. Other keyword arguments
    as :class:`Adam`.
    """

    rule = AdamWRule()

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        weight_decay_mode: str = "decoupled_lr",
        **options: Any,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            weight_decay_mode=weight_decay_mode,
            **options,
        )


class AMSGrad(Adam):
    r"""AMSGrad (Reddi, Kale & Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018):
    :class:`Adam` with ``amsgrad=True``.

    .. math::
        v^{max}_t = \max(v^{max}_{t-1}, v_t), \quad
        \theta_t = \theta_{t-1} - \gamma\,\hat m_t/(\sqrt{v^{max}_t/(1-\beta_2^t)}+\epsilon)

    (torch's form). ``amsgrad_max="corrected"`` takes the max over :math:`\hat v_t`
    (optax); the paper's Algorithm 2 is ``bias_correction=False, eps=0``:
    :math:`\theta_t = \theta_{t-1} - \gamma m_t/\sqrt{v^{max}_t}`. Other keyword arguments as
    :class:`Adam`.
    """

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, True, **options)
