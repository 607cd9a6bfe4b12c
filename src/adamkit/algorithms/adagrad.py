"""AdaGrad (Duchi, Hazan & Singer 2011)."""

from __future__ import annotations

from typing import NamedTuple

import torch
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
    weight_decay_mode,
    weight_decay_scalar,
)
from adamkit.optimizer import Params, RuleOptimizer, StateDtype
from adamkit.rule import Group, Rule, Scalars, State, TorchKernel


class AdagradOptions(NamedTuple):
    weight_decay_mode: str | None
    initial_accumulator_value: float
    eps_inside: bool


class AdagradRule(Rule):
    """AdaGrad's math; see :class:`Adagrad` for the equations."""

    multi_tensor = True

    name = "Adagrad"
    nonnegative_states = frozenset({"sum"})

    def validate(self, group: Group) -> None:
        check_lr(group)
        check_at_least_zero(group, "lr_decay")
        check_weight_decay(group)
        check_at_least_zero(group, "initial_accumulator_value")
        check_eps(group)
        check_bool(group, "maximize")
        check_choice(group, "eps_mode", ("outside", "inside"))
        if group["eps_mode"] == "inside" and as_float("eps", group["eps"]) == 0:
            raise ValueError("eps_mode='inside' needs eps > 0 (it is 1/sqrt(s + eps))")

    def options(self, group: Group) -> AdagradOptions:
        initial = as_float("initial_accumulator_value", group["initial_accumulator_value"])
        return AdagradOptions(weight_decay_mode(group), initial, group["eps_mode"] == "inside")

    def state_names(self, options: AdagradOptions) -> tuple[str, ...]:
        return ("sum",)

    def init_state(self, name: str, param: Tensor, options: AdagradOptions) -> Tensor:
        value = options.initial_accumulator_value
        if param.is_complex():
            # both parts start at τ, so a complex parameter steps as its real view (as torch)
            value = complex(value, value)
        return torch.full_like(param, value, memory_format=torch.preserve_format)

    def torch_kernel(self, group: Group, options: AdagradOptions) -> TorchKernel | None:
        """torch's fused Adagrad, for L2 decay and ε outside the root."""
        if options.weight_decay_mode not in (None, "l2") or options.eps_inside:
            return None
        numbers = {
            name: as_float(name, group[name]) for name in ("lr", "lr_decay", "weight_decay", "eps")
        }

        def run(params, grads, states, steps, missing, grad_scale):
            torch._fused_adagrad_(
                params,
                grads,
                states[0],
                steps,
                maximize=group["maximize"],
                grad_scale=grad_scale,
                **numbers,
            )

        return run

    def scalars(self, group: Group, state: State, options: AdagradOptions) -> Scalars:
        lr_decay = as_float("lr_decay", group["lr_decay"])
        return {
            "clr": as_float("lr", group["lr"]) / (1 + (state["step"].item() - 1) * lr_decay),
            "eps": as_float("eps", group["eps"]),
            "weight_decay": weight_decay_scalar(group, options.weight_decay_mode),
        }

    def update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: AdagradOptions
    ) -> None:
        grad = apply_weight_decay(param, grad, options.weight_decay_mode, scalars["weight_decay"])
        state_sum = state["sum"]
        state_sum.addcmul_(grad, grad, value=1)
        if options.eps_inside:  # optax: g/sqrt(s + ε), 0 where s and g are 0
            root = state_sum.add(scalars["eps"]).sqrt_()
        else:
            root = add_eps(state_sum.sqrt(), scalars["eps"])
        param.addcdiv_(grad, root, value=-scalars["clr"])

    def steps_sparse(self, group: Group) -> bool:
        return group["eps_mode"] == "outside"

    def sparse_update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: AdagradOptions
    ) -> None:
        """The update on the gradient's entries only, as torch.optim.Adagrad's: the sum of
        squares gains the squares of the (coalesced) entries, and the param moves there."""
        if options.weight_decay_mode is not None:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        if "sum" not in state:
            state["sum"] = self.init_state("sum", param, options)
        grad = grad.coalesce()
        indices, values = grad._indices(), grad._values()
        if not values.numel():
            return
        state["sum"].add_(torch.sparse_coo_tensor(indices, values.pow(2), grad.size()))
        std = state["sum"].sparse_mask(grad)._values().sqrt_().add_(scalars["eps"])
        step = torch.sparse_coo_tensor(indices, values / std, grad.size())
        param.add_(step, alpha=-scalars["clr"])


class Adagrad(RuleOptimizer):
    r"""AdaGrad (Duchi, Hazan & Singer, *Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization*, JMLR 2011), in torch.optim.Adagrad's form:

    .. math::
        s_0 &= \tau,\quad \tilde\gamma_t = \gamma / (1 + (t-1)\eta) \\
        s_t &= s_{t-1} + g_t^2 \\
        \theta_t &= \theta_{t-1} - \tilde\gamma_t\, g_t / (\sqrt{s_t} + \epsilon)

    ``eps_mode="inside"`` puts ε inside the root, as optax's ``adagrad`` (``scale_by_rss``):
    :math:`\theta_t = \theta_{t-1} - \tilde\gamma_t\, g_t / \sqrt{s_t + \epsilon}`, so an
    entry whose sum is still 0 (τ = 0, no gradient yet) does not move; ε must be > 0.

    Args:
        params: iterable of tensors or of dicts defining param groups.
        lr: learning rate γ.
        lr_decay: η.
        weight_decay: λ, applied as ``weight_decay_mode`` says (see :class:`adamkit.Adam`;
            the decoupled modes scale by the group's lr, not by :math:`\tilde\gamma_t`).
        initial_accumulator_value: τ, the starting value of the sum of squares.
        eps: ε, added outside the square root (``eps_mode="inside"``: inside).
        maximize: maximize the objective.
        foreach, differentiable, fused: torch's flags, see RuleOptimizer.
        weight_decay_mode: ``"l2"``, ``"decoupled_lr"`` or ``"decoupled_schedule"``.
        eps_mode: ``"outside"`` (torch, the default) or ``"inside"`` (optax).
        skip_nonfinite: skip the whole step (params, state and step count untouched) when
            any gradient holds a NaN or an Inf, counting it in ``skipped_steps``.
        state_dtype: how per-element state is kept: None (the param's dtype, as torch),
            ``torch.float32``, ``torch.bfloat16`` (rounded stochastically) or ``"8bit"``
            (block-wise dynamic quantization, Dettmers et al. 2022); see
            :mod:`adamkit.precision`.
        backend: ``"auto"`` (default), ``"eager"`` or ``"fused"`` (see docs/performance.md).

    State: ``step``, ``sum``. Sparse gradients step as torch's (``eps_mode="outside"`` only).
    """

    rule = AdagradRule()
    torch_flags = ("foreach", "differentiable", "fused")

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        weight_decay_mode: str = "l2",
        eps_mode: str = "outside",
        backend: str | None = None,
        skip_nonfinite: bool = False,
        state_dtype: StateDtype = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
            "maximize": maximize,
            "weight_decay_mode": weight_decay_mode,
            "eps_mode": eps_mode,
        }
        super().__init__(
            params,
            defaults,
            backend=backend,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            torch_flags={"foreach": foreach, "differentiable": differentiable, "fused": fused},
        )
