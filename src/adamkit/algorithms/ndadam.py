"""ND-Adam (Zhang, Ma, Li & Wu 2017): Adam that preserves the direction of weight vectors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from adamkit.algorithms.adam import AdamOptions, AdamRule, adam_scalars, denominator
from adamkit.algorithms.common import (
    check_adam_family,
    check_choice,
    update_first_moment,
    weight_decay_mode,
)
from adamkit.optimizer import Params, RuleOptimizer, StateDtype
from adamkit.rule import FusedForm, Group, Rule, Scalars, State

VecAxes = Sequence[int] | None


def vector_axes(ndim: int, vec_axes: VecAxes, name: str = "the param") -> tuple[int, ...]:
    """The axes that span one hidden unit's weight vector in a param of ``ndim`` dims, or ()
    when the param is not made of vectors. ``None``: every dim but 0 for ``ndim`` >= 2.
    Axes out of range or repeated raise a ``ValueError`` that names the param."""
    if vec_axes is None:
        return tuple(range(1, ndim)) if ndim >= 2 else ()
    if any(not -ndim <= axis < ndim for axis in vec_axes) or len(
        {axis % ndim for axis in vec_axes}
    ) != len(vec_axes):
        raise ValueError(
            f"Invalid vec_axes {tuple(vec_axes)} for {name}: it has {ndim} dimensions "
            f"(the axes must be distinct dims of it)"
        )
    return tuple(sorted(axis % ndim for axis in vec_axes))


def vector_norms(param: Tensor, axes: tuple[int, ...]) -> Tensor:
    return torch.linalg.vector_norm(param, dim=axes, keepdim=True)


def normalize_(param: Tensor, axes: tuple[int, ...]) -> None:
    """Scale each vector of ``param`` to unit L2 norm, in place (a zero vector stays 0)."""
    param.div_(vector_norms(param, axes).clamp_min_(torch.finfo(param.dtype).tiny))


@torch.no_grad()
def normalize_vectors_(params: nn.Module | Iterable[Tensor], vec_axes: VecAxes = None) -> None:
    """ND-Adam's initialisation: scale every hidden-unit weight vector to unit norm, in place.

    Args:
        params: a model or an iterable of tensors.
        vec_axes: the vector axes, as :class:`NDAdam`'s option (None: every dim but 0 of the
            params with 2 or more dims; the others are left alone).
    """
    if isinstance(params, nn.Module):
        params = params.parameters()
    for index, param in enumerate(params):
        axes = vector_axes(param.ndim, vec_axes, f"parameter {index}")
        if axes:
            normalize_(param, axes)


def check_vec_axes(group: Group) -> None:
    """vec_axes is None or a sequence of distinct ints within every param's dims, and every
    vector starts with unit norm, or at 0 (an all-zero row, such as an embedding's padding
    row, which stays 0 until its gradient is not)."""
    vec_axes = group["vec_axes"]
    if vec_axes is not None and (
        isinstance(vec_axes, (str, bytes))
        or not isinstance(vec_axes, Sequence)
        or not all(isinstance(axis, int) and not isinstance(axis, bool) for axis in vec_axes)
    ):
        raise TypeError(f"vec_axes must be None or a sequence of ints, got {vec_axes!r}")
    for index, param in enumerate(group.get("params", ())):
        axes = vector_axes(param.ndim, vec_axes, f"parameter {index} of the group")
        if not axes or param.numel() == 0 or param.is_meta:
            continue
        with torch.no_grad():
            norms = vector_norms(param.detach(), axes).double()
        tolerance = max(1e-3, 4 * torch.finfo(param.dtype).eps)
        if not torch.all(((norms - 1).abs() <= tolerance) | (norms == 0)):
            raise ValueError(
                f"NDAdam needs unit-norm weight vectors: parameter {index} of the group "
                f"(shape {tuple(param.shape)}) has vector norms from {norms.min().item():.4g} "
                f"to {norms.max().item():.4g}; call adamkit.normalize_vectors_ on it first"
            )


class NDAdamOptions(NamedTuple):
    weight_decay_mode: str | None
    vec_axes: tuple[int, ...] | None


class NDAdamRule(Rule):
    """ND-Adam's math; see :class:`NDAdam` for the equations."""

    name = "NDAdam"
    nonnegative_states = frozenset({"exp_avg_sq"})
    supports_complex = False
    adam = AdamRule()

    def validate(self, group: Group) -> None:
        check_adam_family(group)
        check_choice(group, "eps_mode", ("paper", "efficient"))
        check_vec_axes(group)

    def options(self, group: Group) -> NDAdamOptions:
        vec_axes = group["vec_axes"]
        return NDAdamOptions(
            weight_decay_mode(group), None if vec_axes is None else tuple(vec_axes)
        )

    def fused_form(self, param: Tensor, options: NDAdamOptions) -> FusedForm | None:
        """Non-vector params stack as Adam's elements; params whose vectors are the slices
        ``p[j]`` stack as rows (one kernel per vector length); others (and empty ones, whose
        per-vector state is not empty) step alone."""
        axes = vector_axes(param.ndim, options.vec_axes)
        if not axes:
            return FusedForm(0, options._replace(vec_axes=()))
        if axes == tuple(range(1, param.ndim)) and param.numel():
            return FusedForm(param[0].numel(), options._replace(vec_axes=(1,)))
        return None

    def state_names(self, options: NDAdamOptions) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def init_state(self, name: str, param: Tensor, options: NDAdamOptions) -> Tensor:
        axes = vector_axes(param.ndim, options.vec_axes)
        if name == "exp_avg_sq" and axes:
            # one per vector, laid out (and, for a DTensor, sharded) like the param
            return torch.zeros_like(param).sum(axes, keepdim=True)
        return super().init_state(name, param, options)

    def shardable(self, param: Tensor, dims: set[int], options: NDAdamOptions) -> bool:
        return not dims & set(vector_axes(param.ndim, options.vec_axes))

    def scalars(self, group: Group, state: State, options: NDAdamOptions) -> Scalars:
        scalars = adam_scalars(group, state, options.weight_decay_mode)
        # at lr 0 no vector moves, and renormalising one could only change its rounding:
        # torch.distributed.checkpoint's set_optimizer_state_dict creates the state by a
        # step at lr 0 after the model's params were loaded, which must leave them as loaded
        return {**scalars, "renormalize": scalars["step_size"] != 0.0}

    def update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: NDAdamOptions
    ) -> None:
        axes = vector_axes(param.ndim, options.vec_axes)
        if not axes:
            adam_options = AdamOptions(options.weight_decay_mode, False, "raw")
            self.adam.update(param, grad, state, scalars, adam_options)
            return
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        grad = grad - (grad * param).sum(axes, keepdim=True) * param  # tangent to the sphere
        update_first_moment(exp_avg, grad, scalars["beta1"])
        beta2 = scalars["beta2"]
        exp_avg_sq.mul_(beta2).add_(grad.square().sum(axes, keepdim=True), alpha=1.0 - beta2)
        param.addcdiv_(exp_avg, denominator(exp_avg_sq, scalars), value=-scalars["step_size"])
        if scalars["renormalize"]:
            normalize_(param, axes)


class NDAdam(RuleOptimizer):
    r"""ND-Adam (Zhang, Ma, Li & Wu, *Normalized Direction-preserving Adam*, 2017).

    The incoming weight vector :math:`w` of each hidden unit (by default the slices
    ``W[j]`` of every param with 2 or more dims: a Linear weight's rows, a conv weight's
    filters) stays on the unit sphere, with one second moment per vector, so Adam's
    per-coordinate scaling no longer turns its direction and the lr controls the angle of
    the step. At step :math:`t` with gradient :math:`\bar g_t` (negated when ``maximize``):

    .. math::
        g_t &= \bar g_t - (\bar g_t \cdot w_{t-1})\, w_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) \lVert g_t \rVert_2^2 \\
        \bar w_t &= w_{t-1} - \alpha \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
            \frac{m_t}{\sqrt{v_t}+\epsilon}, \quad
        w_t = \bar w_t / \lVert \bar w_t \rVert_2

    (``eps_mode="efficient"``, the authors' code; ``"paper"`` divides by
    :math:`\sqrt{v_t/(1-\beta_2^t)}+\epsilon` instead). Every other param (biases, norm
    scales, params with ``vec_axes=()``) gets :class:`adamkit.Adam` with the same
    ``eps_mode`` and weight decay; weight decay does not apply to the vectors.

    The vectors must start with unit norm: building the optimizer, or adding a group,
    refuses a param whose vectors are not (within max(1e-3, 4 × the dtype's machine
    epsilon)) with a ``ValueError`` that names it; :func:`normalize_vectors_` normalises a
    model's vectors first. An all-zero vector is accepted: it stays 0 until it gets a non-zero
    gradient, and is on the sphere after that step. Put params that are not hidden units'
    weights, such as embedding tables, in a group with ``vec_axes=()``. Each step ends with
    the renormalisation, so even a zero gradient can move a vector by a rounding error; a step
    at lr 0 skips it and leaves every param as it was (``torch.distributed.checkpoint``'s
    ``set_optimizer_state_dict`` takes one). The gradient is not modified; complex params are
    refused. In float16 the per-vector sum of squares overflows above 65504: keep float32
    params (with autocast) for ND-Adam.

    Args:
        params: iterable of tensors or of dicts defining param groups.
        lr: learning rate α (float or 1-element Tensor).
        betas: (β1, β2).
        eps: ε.
        weight_decay: λ, for the params that are not vectors (``weight_decay_mode`` as in
            :class:`adamkit.Adam`, default ``"l2"`` as in the paper).
        maximize: maximize the objective.
        weight_decay_mode: ``"l2"``, ``"decoupled_lr"`` or ``"decoupled_schedule"``.
        eps_mode: ``"efficient"`` or ``"paper"``.
        vec_axes: the axes of each param that span one vector, per group: None (every dim
            but 0 for params of 2 or more dims, the others are not vectors), ``()`` (no
            vectors: the group is Adam) or a tuple such as ``(1, 2, 3)`` for every param of
            the group.
        skip_nonfinite: skip the whole step (params, state and step count untouched) when
            any gradient holds a NaN or an Inf, counting it in ``skipped_steps``.
        state_dtype: how per-element state is kept: None (the param's dtype, as torch),
            ``torch.float32``, ``torch.bfloat16`` (rounded stochastically) or ``"8bit"``
            (block-wise dynamic quantization, Dettmers et al. 2022); see
            :mod:`adamkit.precision`.
        backend: ``"auto"`` (default), ``"eager"`` or ``"fused"`` (see docs/performance.md;
            fused, each param's update is one compiled kernel).

    State: ``step``, ``exp_avg`` and ``exp_avg_sq``; for a param made of vectors
    ``exp_avg_sq`` has the param's shape with 1 on the vector axes.
    """

    rule = NDAdamRule()

    def __init__(
        self,
        params: Params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        weight_decay_mode: str = "l2",
        eps_mode: str = "efficient",
        vec_axes: VecAxes = None,
        backend: str | None = None,
        skip_nonfinite: bool = False,
        state_dtype: StateDtype = None,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "weight_decay_mode": weight_decay_mode,
            "eps_mode": eps_mode,
            "vec_axes": vec_axes,
        }
        super().__init__(
            params,
            defaults,
            backend=backend,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
        )
