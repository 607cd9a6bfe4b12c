"""SWATS (Keskar & Socher 2017): Adam until its projected SGD learning rate settles, then SGD."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from adamkit.algorithms.adam import AdamOptions, adam_scalars, update_moments
from adamkit.algorithms.common import (
    apply_weight_decay,
    as_float,
    betas,
    bias_correction,
    check_adam_family,
    check_choice,
    update_first_moment,
    weight_decay_mode,
    weight_decay_scalar,
)
from adamkit.optimizer import Params, RuleOptimizer, StateDtype
from adamkit.rule import Group, GroupStep, Rule, Scalars, State, Sums

GRANULARITIES = ("group", "tensor", "global")
# Adam's step before the switch: plain Adam, the weight decay being applied by SWATS itself
ADAM_PHASE = AdamOptions(weight_decay_mode=None, amsgrad=False, amsgrad_max="raw")
# Per-param copies of the switch state: λ (the EMA of γ), Λ, the switch step (0 while in
# the Adam phase) and the group's lr at that step
SWITCH_STATE: Mapping[str, float | int] = {
    "sgd_lr_average": 0.0,
    "sgd_lr": 0.0,
    "switch_step": 0,
    "switch_lr": 0.0,
}


class SwitchPoint(NamedTuple):
    """Where SWATS switched to SGD: at ``step``, with SGD learning rate Λ = ``sgd_lr``
    while the group's lr was ``lr``."""

    step: int
    sgd_lr: float
    lr: float


class SWATSOptions(NamedTuple):
    weight_decay_mode: str | None


class SWATSRule(Rule):
    """SWATS' math; see :class:`SWATS` for the equations."""

    name = "SWATS"
    nonnegative_states = frozenset({"exp_avg_sq"})

    def validate(self, group: Group) -> None:
        check_adam_family(group)
        check_choice(group, "eps_mode", ("paper", "efficient"))
        check_choice(group, "granularity", GRANULARITIES)
        if not as_float("switch_tolerance", group["switch_tolerance"]) > 0.0:
            raise ValueError(
                f"Invalid switch threshold: switch_tolerance={group['switch_tolerance']}"
            )
        rtol = group["switch_rtol"]
        if rtol is not None and not 0.0 < as_float("switch_rtol", rtol) < math.inf:
            raise ValueError(f"Invalid switch threshold: switch_rtol={rtol}")

    def options(self, group: Group) -> SWATSOptions:
        return SWATSOptions(weight_decay_mode(group))

    def state_names(self, options: SWATSOptions) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def prepare_step(
        self,
        groups: Sequence[Group],
        params: Sequence[Sequence[Tensor]],
        states: Mapping[Tensor, State],
    ) -> None:
        # a param that first gets a gradient late (unfrozen) joins its peers' phase
        for group, stepping in zip(groups, params, strict=True):
            for param in stepping:
                if param in states and "switch_step" in states[param]:
                    continue
                # a peer of its own group first: the switch's lr is the group's
                candidates = sorted(peers(groups, group, param), key=lambda p: p[0] is not group)
                source_group, source = next(
                    (
                        (peer_group, states[peer])
                        for peer_group, peer in candidates
                        if peer in states and "switch_step" in states[peer]
                    ),
                    (group, SWITCH_STATE),
                )
                states[param].update({name: source[name] for name in SWITCH_STATE})
                if source_group is not group and source["switch_step"]:
                    # its group's lr at the switch is not known: it starts at Λ
                    states[param]["switch_lr"] = as_float("lr", group["lr"])

    def scalars(self, group: Group, state: State, options: SWATSOptions) -> Scalars:
        if state["switch_step"]:
            lr = as_float("lr", group["lr"])
            return {
                "switched": True,
                "beta1": betas(group)[0],
                "sgd_lr": state["sgd_lr"] * lr / state["switch_lr"],
                "weight_decay": weight_decay_scalar(group, options.weight_decay_mode),
            }
        return {"switched": False, **adam_scalars(group, state, options.weight_decay_mode)}

    def update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: SWATSOptions
    ) -> Sums | None:
        grad = apply_weight_decay(param, grad, options.weight_decay_mode, scalars["weight_decay"])
        exp_avg = state["exp_avg"]
        if scalars["switched"]:
            # v ← β1·v + g, θ ← θ − (1−β1)·Λ·v, with m = (1−β1)·v kept in exp_avg
            update_first_moment(exp_avg, grad, scalars["beta1"])
            param.add_(exp_avg, alpha=-scalars["sgd_lr"])
            return None
        denom = update_moments(grad, state, scalars, ADAM_PHASE)
        # the step is applied as Adam applies it (bit for bit in every dtype) and computed
        # again for the projections: the same numbers in float32 and float64
        param.addcdiv_(exp_avg, denom, value=-scalars["step_size"])
        step = exp_avg.mul(-scalars["step_size"]).div_(denom)
        return {
            "step_dot_step": torch.sum(step * step, dtype=torch.float64),
            "step_dot_grad": torch.sum(step * grad, dtype=torch.float64),
        }

    def finish_step(
        self,
        groups: Sequence[Group],
        stepped: Sequence[GroupStep],
        states: Mapping[Tensor, State],
    ) -> None:
        units: dict[Any, list[tuple[Group, Tensor, Sums | None]]] = {}
        for group, params, sums in stepped:
            granularity = group["granularity"]
            for param, part in zip(params, sums, strict=True):
                key = id(param) if granularity == "tensor" else id(group)
                units.setdefault("global" if granularity == "global" else key, []).append(
                    (group, param, part)
                )
        for members in units.values():
            parts = [part for _, _, part in members]
            if any(part is None for part in parts):
                continue  # already switched
            group, param, _ = members[0]
            decision = switch_decision(group, [states[p] for _, p, _ in members], parts)
            if decision is None:
                continue
            switched = "sgd_lr" in decision
            for peer_group, peer in peers(groups, group, param):
                if peer in states and "switch_step" in states[peer]:
                    states[peer].update(decision)
                    if switched:
                        states[peer]["switch_lr"] = as_float("lr", peer_group["lr"])
                        states[peer]["exp_avg"].zero_()


def peers(groups: Sequence[Group], group: Group, param: Tensor) -> list[tuple[Group, Tensor]]:
    """The params (with their groups) that share ``param``'s switch: itself
    (``granularity="tensor"``), its group's, or those of every ``"global"`` group."""
    granularity = group["granularity"]
    if granularity == "tensor":
        return [(group, param)]
    if granularity == "group":
        return [(group, p) for p in group["params"]]
    chosen = [g for g in groups if g["granularity"] == "global"]
    return [(g, p) for g in chosen for p in g["params"]]


def switch_decision(
    group: Group, states: Sequence[State], parts: Sequence[Sums]
) -> dict[str, Any] | None:
    """The new switch state of one unit (a group, a tensor, or every "global" group) after
    its Adam step, or None when pᵀg = 0 leaves it as it was. β2 and the switch tolerances
    are those of ``group``, the unit's first group.

    γ_k = pᵀp/(−pᵀg) over the unit's whole step p and gradient g; λ_k = β2·λ_{k−1} +
    (1−β2)·γ_k; switch when k > 1, Λ = λ_k/(1−β2^k) > 0 and |Λ − γ_k| < switch_tolerance
    (the paper's test), or |Λ − γ_k| ≤ switch_rtol·|γ_k| where ``switch_rtol`` is set. The
    sums are added exactly (``math.fsum``), so the decision does not depend on the params'
    order.
    """

    def total(name: str) -> float:
        return math.fsum(torch.stack([part[name] for part in parts]).tolist())

    step_dot_grad = total("step_dot_grad")
    if step_dot_grad == 0.0:
        return None
    sgd_lr = total("step_dot_step") / -step_dot_grad
    beta2 = betas(group)[1]
    step = max(int(state["step"].item()) for state in states)
    average = beta2 * states[0]["sgd_lr_average"] + (1.0 - beta2) * sgd_lr
    corrected = average / bias_correction(beta2, step)
    decision: dict[str, Any] = {"sgd_lr_average": average}
    if step > 1 and corrected > 0.0 and settled(group, corrected, sgd_lr):
        decision |= {"sgd_lr": corrected, "switch_step": step}
    return decision


def settled(group: Group, corrected: float, sgd_lr: float) -> bool:
    """The switch test on Λ = ``corrected`` and γ_k = ``sgd_lr``: relative,
    |Λ − γ_k| ≤ switch_rtol·|γ_k|, where the group's ``switch_rtol`` is set; else the
    paper's absolute |Λ − γ_k| < switch_tolerance."""
    gap = abs(corrected - sgd_lr)
    if group["switch_rtol"] is not None:
        return gap <= as_float("switch_rtol", group["switch_rtol"]) * abs(sgd_lr)
    return gap < as_float("switch_tolerance", group["switch_tolerance"])


class SWATS(RuleOptimizer):
    r"""SWATS (Keskar & Socher, *Improving Generalization Performance by Switching from Adam
    to SGD*, 2017): Adam until the SGD learning rate that its steps imply has settled, then
    SGD with momentum for the rest of training.

    Adam phase, at step :math:`k` with gradient :math:`g_k` (negated when ``maximize``; plus
    λθ for L2 weight decay), in Adam's efficient form (``eps_mode="efficient"``, as the
    implementations that transcribe the paper write it, the paper's own form being
    unverified; ``"paper"`` gives :class:`adamkit.Adam`'s form):

    .. math::
        m_k &= \beta_1 m_{k-1} + (1-\beta_1) g_k, \quad
        a_k = \beta_2 a_{k-1} + (1-\beta_2) g_k^2 \\
        p_k &= -\alpha \frac{\sqrt{1-\beta_2^k}}{1-\beta_1^k} \frac{m_k}{\sqrt{a_k}+\epsilon},
        \quad w_k = w_{k-1} + p_k \\
        \gamma_k &= \frac{p_k^\top p_k}{-p_k^\top g_k}, \quad
        \lambda_k = \beta_2 \lambda_{k-1} + (1-\beta_2)\gamma_k
        \quad (\text{both only when } p_k^\top g_k \ne 0)

    :math:`\gamma_k` is the SGD learning rate whose step :math:`-\gamma_k g_k` projects onto
    :math:`p_k` exactly. The group switches to SGD after step :math:`k` when :math:`k > 1`,
    :math:`\Lambda = \lambda_k/(1-\beta_2^k) > 0` and
    :math:`|\Lambda - \gamma_k| <` ``switch_tolerance`` (the paper's absolute test, the
    default), or, where ``switch_rtol`` is given, the relative test

    .. math::
        |\Lambda - \gamma_k| \le \mathrm{switch\_rtol} \cdot |\gamma_k|

    (``switch_tolerance`` then unused), the relative part of the ``torch.allclose(Λ, γ_k,
    rtol)`` test of other implementations. The paper's ε = 1e-9 is an absolute tolerance on
    an lr-sized quantity: it is below float32's resolution of any γ_k above 0.01, and on
    mini-batch gradients γ_k fluctuates from step to step by far more, so the paper's test
    may never pass; a relative tolerance does not depend on the scale of γ_k (Λ and γ_k
    scale with the lr). From then on, with :math:`v` zeroed at the switch,

    .. math::
        v_k = \beta_1 v_{k-1} + g_k, \quad
        w_k = w_{k-1} - (1-\beta_1)\,\Lambda \frac{\mathrm{lr}_k}{\mathrm{lr}_s}\, v_k

    where :math:`\mathrm{lr}_k` is the group's lr now and :math:`\mathrm{lr}_s` its lr at the
    switch: an LR scheduler keeps acting after the switch, scaling Λ by the factor it applied
    since. It never switches back. The momentum is stored in EMA form,
    ``exp_avg`` = :math:`m = (1-\beta_1) v`, updated as
    :math:`m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k` and stepped as
    :math:`w_k = w_{k-1} - \Lambda (\mathrm{lr}_k/\mathrm{lr}_s) m_k`: the same numbers for a
    constant β1; when a scheduler changes β1 after the switch (OneCycle cycling momentum),
    a new β1 weighs the new gradient, as in Adam's m, instead of rescaling the whole sum.
    Adam's ``exp_avg_sq`` is kept but no longer read.

    ``p`` and ``g`` are the whole group's flattened step and gradient (``granularity=
    "group"``), each tensor's own (``"tensor"``), or those of every param of every group with
    ``granularity="global"``: the paper's switch of the whole model, also when the model is
    split into groups (say, by :func:`adamkit.weight_decay_groups`); its β2 and switch
    tolerances are those of the first such group. The sums are exact, so the params' order
    does not matter.
    A param that first gets a gradient after its peers switched joins the SGD phase with a
    zero momentum.

    Args:
        params: iterable of tensors or of dicts defining param groups.
        lr: Adam's learning rate α (float or 1-element Tensor).
        betas: (β1, β2); β1 is also the SGD momentum, β2 also averages γ.
        eps: ε of Adam's step (the paper's 1e-9).
        weight_decay: λ, applied in both phases as ``weight_decay_mode`` says (see
            :class:`adamkit.Adam`; ``"decoupled_lr"`` scales it by the group's lr, not Λ).
        maximize: maximize the objective.
        weight_decay_mode: ``"l2"``, ``"decoupled_lr"`` or ``"decoupled_schedule"``.
        eps_mode: ``"efficient"`` or ``"paper"``, as in :class:`adamkit.Adam`.
        switch_tolerance: the absolute threshold of the switch test (the paper uses
            ε = 1e-9 for both); must be > 0.
        switch_rtol: None (default: the paper's absolute test) or the relative tolerance
            (> 0, finite) of the switch test |Λ − γ_k| ≤ switch_rtol·|γ_k|, a departure
            from the paper.
        granularity: ``"group"``, ``"tensor"`` or ``"global"``.
        skip_nonfinite: skip the whole step (params, state and step count untouched) when
            any gradient holds a NaN or an Inf, counting it in ``skipped_steps``.
        state_dtype: how per-element state is kept: None (the param's dtype, as torch),
            ``torch.float32``, ``torch.bfloat16`` (rounded stochastically) or ``"8bit"``
            (block-wise dynamic quantization, Dettmers et al. 2022); see
            :mod:`adamkit.precision`.
        backend: ``"auto"`` (default), ``"eager"`` or ``"fused"`` (see docs/performance.md;
            fused, each param's update is one call of the compiled kernel).

    State, per param: ``step``, ``exp_avg``, ``exp_avg_sq``, and the switch as plain
    numbers: ``sgd_lr_average`` (λ), ``sgd_lr`` (Λ, 0 before the switch), ``switch_step``
    (0 before the switch) and ``switch_lr`` (lr_s); every param of a group holds the same
    copy. :meth:`switch_point` reports them.
    """

    rule = SWATSRule()

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-9,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        weight_decay_mode: str = "l2",
        eps_mode: str = "efficient",
        switch_tolerance: float = 1e-9,
        switch_rtol: float | None = None,
        granularity: str = "group",
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
            "weight_decay_mode": weight_decay_mode,
            "eps_mode": eps_mode,
            "switch_tolerance": switch_tolerance,
            "switch_rtol": switch_rtol,
            "granularity": granularity,
        }
        super().__init__(
            params,
            defaults,
            backend=backend,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
        )

    def switch_point(self, param: Tensor) -> SwitchPoint | None:
        """Where ``param`` (its group, or itself with ``granularity="tensor"``) switched to
        SGD, or None while it is in the Adam phase."""
        state = self.state[param] if param in self.state else {}
        if not state.get("switch_step"):
            return None
        return SwitchPoint(state["switch_step"], state["sgd_lr"], state["switch_lr"])
