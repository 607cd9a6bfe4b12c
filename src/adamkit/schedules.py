"""Learning-rate schedules: warm restarts (SGDR / AdamWR), one-cycle, normalized weight decay.

Both schedulers are ``torch.optim.lr_scheduler.LRScheduler`` subclasses, so they drive any
optimizer, adamkit's or torch's, and save and resume like torch's schedulers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LRScheduler

from adamkit.algorithms.common import as_float

__all__ = [
    "OneCycle",
    "WarmRestarts",
    "cosine_anneal",
    "linear_anneal",
    "normalized_weight_decay",
]


# ---------------------------------------------------------------- annealing


def cosine_anneal(start: float, end: float, elapsed: float, length: float = 1.0) -> float:
    """``start`` → ``end`` along half a cosine, at progress ``elapsed/length`` ∈ [0, 1]:

        value = end + (start − end)·(1 + cos(π·elapsed/length))/2

    The angle is computed as ``π·elapsed/length`` in that order, as torch does for SGDR;
    one-cycle passes its phase fraction as ``elapsed`` with ``length`` 1.
    """
    return end + (start - end) * (1.0 + math.cos(math.pi * elapsed / length)) / 2.0


def linear_anneal(start: float, end: float, progress: float) -> float:
    """``start`` → ``end`` on a straight line at ``progress`` ∈ [0, 1]:
    value = (end − start)·progress + start."""
    return (end - start) * progress + start


ANNEALS = {"cos": cosine_anneal, "linear": linear_anneal}


# ---------------------------------------------------------------- checks


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected positive integer {name}, but got {value}")


def _check_positive(name: str, value: Any) -> None:
    if not as_float(name, value) > 0:
        raise ValueError(f"Expected positive {name}, but got {value}")


def _per_group(name: str, optimizer: Optimizer, value: Any) -> list[Any]:
    """``value`` for every param group: a list or tuple with one entry per group, or one value
    for all."""
    count = len(optimizer.param_groups)
    if not isinstance(value, (list, tuple)):
        return [value] * count
    if len(value) != count:
        raise ValueError(
            f"{name} must have the same length as optimizer.param_groups. "
            f"{name} has {len(value)} values, param_groups has {count}."
        )
    return list(value)


# ---------------------------------------------------------------- normalized weight decay


def normalized_weight_decay(
    weight_decay_norm: float, batch_size: float, dataset_size: float, epochs: float
) -> float:
    """The raw weight decay λ from the normalized one (Loshchilov & Hutter, *Decoupled Weight
    Decay Regularization*, ICLR 2019, Appendix B.1):

        λ = λ_norm·sqrt(b / (B·T))

    with b the batch size, B the number of training points and T the number of epochs (in
    AdamWR, the epochs of the current restart period). λ_norm is the decay one would use for a
    single pass over one batch; λ shrinks with the square root of the number of batch passes.
    """
    if not 0.0 <= as_float("weight_decay_norm", weight_decay_norm):
        raise ValueError(f"Invalid weight_decay_norm value: {weight_decay_norm}")
    for name, value in (
        ("batch_size", batch_size),
        ("dataset_size", dataset_size),
        ("epochs", epochs),
    ):
        _check_positive(name, value)
    return weight_decay_norm * math.sqrt(batch_size / (dataset_size * epochs))


# ---------------------------------------------------------------- SGDR / AdamWR


class WarmRestarts(LRScheduler):
    r"""Cosine annealing with warm restarts, stepped per batch (SGDR: Loshchilov & Hutter,
    *SGDR: Stochastic Gradient Descent with Warm Restarts*, ICLR 2017; AdamWR: *Decoupled
    Weight Decay Regularization*, ICLR 2019, Appendix B.2):

    .. math::

        \eta_t = \tfrac12\,(1 + \cos(\pi\,T_{cur}/T_i)), \qquad
        \mathrm{lr}_t = \eta_{min} + (\mathrm{base\_lr} - \eta_{min})\,\eta_t

    T_cur counts the epochs since the last restart and advances by 1/``steps_per_epoch`` at
    every :meth:`step`; when it reaches T_i the run restarts: T_cur ← 0, T_i ← T_i·T_mult, with
    T_0 the first period. Both are kept as whole numbers of batches, so nothing drifts. With
    ``steps_per_epoch=1`` the lrs are those of torch's ``CosineAnnealingWarmRestarts``, bit for
    bit; with ``steps_per_epoch=n`` those of its ``step(epoch + i/n)`` up to rounding.

    With ``batch_size`` and ``dataset_size`` the weight decay is normalized (AdamWR): each
    group's ``weight_decay`` at construction is read as λ_norm and kept in
    ``group["weight_decay_norm"]``, and in every period the group decays by

        λ_i = λ_norm·sqrt(b / (B·T_i))          (:func:`normalized_weight_decay`)

    applied as η_t·λ_i. Groups in adamkit's ``weight_decay_mode="decoupled_schedule"`` (the
    paper's decay) get ``weight_decay = λ_i``; groups whose decay is scaled by the lr
    (``"decoupled_lr"``, torch's AdamW) get ``λ_i / initial_lr``, so that
    lr_t·weight_decay = η_t·λ_i. A group with L2 weight decay (added to the gradient: torch's
    Adam, SGD, ..., adamkit's ``"l2"``) is refused with a ``ValueError``: no L2 coefficient
    reproduces decoupled decay for adaptive methods (the paper's Proposition 2). Groups with
    weight decay 0 stay 0.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        T_0: epochs of the first period, a positive int.
        T_mult: factor by which each period is longer than the last, an int >= 1.
        eta_min: the lr at the end of every period, >= 0.
        steps_per_epoch: batches per epoch: how many :meth:`step` calls make one epoch.
        batch_size: b, for normalized weight decay; with ``dataset_size``.
        dataset_size: B, the number of training points; with ``batch_size``.
        last_epoch: index of the last step taken (in batches), as in torch; -1 to start.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        *,
        steps_per_epoch: int = 1,
        batch_size: int | None = None,
        dataset_size: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        _check_positive_int("T_0", T_0)
        if isinstance(T_mult, bool) or not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if isinstance(eta_min, bool) or not isinstance(eta_min, (float, int)):
            raise ValueError(
                f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}"
            )
        if not 0 <= eta_min:
            raise ValueError(f"Expected eta_min >= 0, but got {eta_min}")
        _check_positive_int("steps_per_epoch", steps_per_epoch)
        if (batch_size is None) != (dataset_size is None):
            raise ValueError(
                "normalized weight decay needs both batch_size and dataset_size, got "
                f"batch_size={batch_size}, dataset_size={dataset_size}"
            )
        self.T_0 = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.dataset_size = dataset_size
        super().__init__(optimizer, last_epoch)

    def _position(self) -> tuple[int, int, int]:
        """(i, T_cur, T_i) at the current step, T_cur and T_i counted in batches."""
        length = self.T_0 * self.steps_per_epoch
        if self.T_mult == 1:
            period, elapsed = divmod(self.last_epoch, length)
            return period, elapsed, length
        period, elapsed = 0, self.last_epoch
        while elapsed >= length:
            period, elapsed, length = period + 1, elapsed - length, length * self.T_mult
        return period, elapsed, length

    @property
    def period(self) -> int:
        """i, the index of the current run: 0 until the first restart."""
        return self._position()[0]

    @property
    def T_cur(self) -> float:
        """Epochs since the last restart (fractional between epochs)."""
        return self._position()[1] / self.steps_per_epoch

    @property
    def T_i(self) -> float:
        """Epochs in the current period: T_0·T_mult^i."""
        return self._position()[2] / self.steps_per_epoch

    @property
    def multiplier(self) -> float:
        """η_t = (1 + cos(π·T_cur/T_i))/2: 1 right after a restart, → 0 at the period's end."""
        _, elapsed, length = self._position()
        return cosine_anneal(1.0, 0.0, elapsed, length)

    def get_lr(self) -> list[float]:
        """The lrs at the current step; sets the groups' normalized weight decay on the way."""
        _, elapsed, length = self._position()
        if self.batch_size is not None:
            self._set_weight_decay()
        return [cosine_anneal(base_lr, self.eta_min, elapsed, length) for base_lr in self.base_lrs]

    def _set_weight_decay(self) -> None:
        epochs = self.T_i
        for index, group in enumerate(self.optimizer.param_groups):
            # read at the first step, like torch's initial_lr; a resumed optimizer keeps it
            norm = group.setdefault("weight_decay_norm", group["weight_decay"])
            decay = normalized_weight_decay(norm, self.batch_size, self.dataset_size, epochs)
            if decay:
                mode = self._decay_mode(group)
                if mode == "l2":
                    raise ValueError(
                        f"normalized weight decay is decoupled weight decay, but param group "
                        f"{index} adds weight_decay={norm} to the gradient (L2): use AdamW or "
                        f"SGDW, or weight_decay_mode='decoupled_schedule'"
                    )
                if mode == "decoupled_lr":
                    # torch's decay lr_t·(λ_i/initial_lr) = η_t·λ_i
                    initial_lr = as_float("initial_lr", group["initial_lr"])
                    if initial_lr == 0.0:
                        raise ValueError(
                            f"param group {index} has initial_lr 0, so its decay lr·weight_decay "
                            f"cannot follow η_t·λ: use weight_decay_mode='decoupled_schedule'"
                        )
                    decay /= initial_lr
            group["weight_decay"] = decay

    def _decay_mode(self, group: dict[str, Any]) -> str:
        """How the group's optimizer applies ``weight_decay``: adamkit's mode, or for
        torch.optim's optimizers ``"decoupled_lr"`` (AdamW, ``decoupled_weight_decay=True``)
        or ``"l2"`` (every other)."""
        if "weight_decay_mode" in group:
            return group["weight_decay_mode"]
        decoupled = group.get("decoupled_weight_decay") or isinstance(self.optimizer, AdamW)
        return "decoupled_lr" if decoupled else "l2"


# ---------------------------------------------------------------- one-cycle


def _set_momentum(group: dict[str, Any], value: float) -> None:
    """Write β1 (Adam family, ``betas`` stays a tuple) or SGD's ``momentum``."""
    if "betas" in group:
        group["betas"] = (value, *group["betas"][1:])
    else:
        group["momentum"] = value


class OneCycle(LRScheduler):
    r"""Smith's one-cycle policy (*Super-Convergence*, arXiv:1708.07120; *A disciplined approach
    to neural network hyper-parameters: Part 1*, arXiv:1803.09820), stepped per batch, with the
    arguments and numbers of torch's ``OneCycleLR``, bit for bit.

    With ``initial_lr = max_lr/div_factor`` and ``min_lr = initial_lr/final_div_factor``, and
    p = ``pct_start``·``total_steps``:

    * two phases (default): steps 0 … p−1: lr initial_lr → max_lr, momentum max → base;
      then to step total_steps−1: lr max_lr → min_lr, momentum base → max.
    * ``three_phase=True``: steps 0 … p−1: lr initial_lr → max_lr, momentum max → base;
      to step 2p−2: lr max_lr → initial_lr, momentum base → max; to step total_steps−1:
      lr initial_lr → min_lr, momentum held at max.

    Within a phase from step s to e the progress is (t − s)/(e − s), and values follow
    :func:`cosine_anneal` (``"cos"``) or :func:`linear_anneal` (``"linear"``). A phase of a
    single step (e = s, where torch divides by zero) ends at its end value.

    The momentum cycled is β1 of the Adam family (``group["betas"][0]``) or SGD's
    ``group["momentum"]``. Each group records ``initial_lr``, ``max_lr``, ``min_lr``,
    ``max_momentum`` and ``base_momentum``, like torch; adamkit's
    ``weight_decay_mode="decoupled_schedule"`` reads η_t = lr_t/max_lr from them.

    The ``total_steps``-th :meth:`step` is allowed, as in torch, so the loop ``optimizer.step();
    scheduler.step()`` runs ``total_steps`` times; one more raises ``ValueError``.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        max_lr: the peak lr, one for all groups or a list with one per group.
        total_steps: the number of steps in the cycle; or give ``epochs`` and
            ``steps_per_epoch``, whose product it then is.
        pct_start: the fraction of the cycle spent raising the lr, a float in [0, 1].
        anneal_strategy: ``"cos"`` or ``"linear"``.
        cycle_momentum: whether to cycle momentum (β1) inversely to the lr.
        base_momentum, max_momentum: the momentum's lower and upper bounds, one or per group.
        div_factor: initial_lr = max_lr/div_factor, > 0.
        final_div_factor: min_lr = initial_lr/final_div_factor, > 0.
        three_phase: Smith's three phases instead of fastai's two.
        last_epoch: index of the last step taken, as in torch; -1 to start.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.85,
        max_momentum: float | Sequence[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if total_steps is not None:
            _check_positive_int("total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            _check_positive_int("epochs", epochs)
            _check_positive_int("steps_per_epoch", steps_per_epoch)
            total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ANNEALS:
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
            )
        _check_positive("div_factor", div_factor)
        _check_positive("final_div_factor", final_div_factor)
        max_lrs = _per_group("max_lr", optimizer, max_lr)
        for peak in max_lrs:
            if not 0.0 <= as_float("max_lr", peak):
                raise ValueError(f"Invalid max_lr value: {peak}")
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(
                    "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
                )
            max_momentums = _per_group("max_momentum", optimizer, max_momentum)
            base_momentums = _per_group("base_momentum", optimizer, base_momentum)
        if last_epoch == -1:
            for index, group in enumerate(optimizer.param_groups):
                group["max_lr"] = max_lrs[index]
                group["initial_lr"] = max_lrs[index] / div_factor
                group["min_lr"] = group["initial_lr"] / final_div_factor
                if cycle_momentum:
                    group["max_momentum"] = max_momentums[index]
                    group["base_momentum"] = base_momentums[index]
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.anneal_strategy = anneal_strategy
        self.cycle_momentum = cycle_momentum
        self.three_phase = three_phase
        super().__init__(optimizer, last_epoch)

    def _phase(self, step: int) -> tuple[tuple[str, str, str, str], float]:
        """The keys (lr from, lr to, momentum from, momentum to) of the phase holding ``step``,
        and the progress through it."""
        rise = ("initial_lr", "max_lr", "max_momentum", "base_momentum")
        if self.three_phase:
            ends = [
                self.pct_start * self.total_steps - 1,
                2 * self.pct_start * self.total_steps - 2,
                self.total_steps - 1,
            ]
            keys = [
                rise,
                ("max_lr", "initial_lr", "base_momentum", "max_momentum"),
                ("initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            ends = [self.pct_start * self.total_steps - 1, self.total_steps - 1]
            keys = [rise, ("max_lr", "min_lr", "base_momentum", "max_momentum")]
        index = next((i for i, end in enumerate(ends[:-1]) if step <= end), len(ends) - 1)
        start, end = [0.0, *ends][index], ends[index]
        # a phase of a single step (torch divides by zero) ends at its end value
        return keys[index], (step - start) / (end - start) if end != start else 1.0

    def get_lr(self) -> list[float]:
        """The lrs at the current step; sets the groups' momentum (β1) on the way."""
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"Tried to step {step} times. "
                f"The specified number of total steps is {self.total_steps}"
            )
        (lr_from, lr_to, momentum_from, momentum_to), progress = self._phase(step)
        anneal = ANNEALS[self.anneal_strategy]
        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(anneal(group[lr_from], group[lr_to], progress))
            if self.cycle_momentum:
                _set_momentum(group, anneal(group[momentum_from], group[momentum_to], progress))
        return lrs
