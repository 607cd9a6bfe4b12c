"""What a rule is: one optimizer algorithm's math, independent of how it is run.

A rule names and checks its hyperparameters, creates per-parameter state, computes the
per-step scalars and applies the element-wise update in place. Backends run rules over
tensors and never restate the math.

The split between :meth:`Rule.options` and :meth:`Rule.scalars` is what lets a compiled
backend generate one kernel per rule: options are the static choices (booleans and strings
that pick a code path or a state tensor), scalars are every number the update reads
(learning rate, betas, bias corrections). A kernel is compiled once per options value and
receives the scalars as arguments, so changing a number never changes the code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

Group = Mapping[str, Any]
State = dict[str, Any]
Scalars = Mapping[str, Any]
# What an update returns for a decision over many params: named partial sums over its
# param, added up by :meth:`Rule.finish_step` (SWATS' projections)
Sums = Mapping[str, Tensor]


TorchKernel = Callable[
    [list[Tensor], list[Tensor], list[list[Tensor]], list[Tensor], tuple[str, ...], Tensor | None],
    None,
]


class GroupStep(NamedTuple):
    """One group's part of a step: the group, its params with a gradient, what each
    param's update returned."""

    group: Group
    params: Sequence[Tensor]
    sums: Sequence[Sums | None]


class FusedForm(NamedTuple):
    """Params with equal forms are stacked. ``width`` 0: their elements, as one 1-D tensor;
    ``width`` L > 0: their slices ``p[j]`` (each of L elements, contiguous in storage) as the
    rows of one (rows, L) tensor. ``options``: the options :meth:`Rule.update` reads for the
    stacked tensor."""

    width: int
    options: Hashable


def scalar_dtype() -> torch.dtype:
    """The dtype of 0-dim state such as ``step``: float64 under a float64 default dtype,
    float32 otherwise (torch.optim's convention, so state dicts match)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class Rule(ABC):
    """One optimizer algorithm, as the pieces a backend needs.

    ``step`` is counted by the backend (``state["step"]``, a 0-dim tensor, torch's
    convention; where :meth:`counts_steps`) and advanced before :meth:`scalars` is called,
    so ``t`` starts at 1.
    """

    name: ClassVar[str]
    # 0-dim state besides ``step`` (NAdam's ``mu_product``): created before :meth:`scalars`,
    # kept in :func:`scalar_dtype` and never cast to the param's dtype on load, like ``step``
    scalar_state_names: ClassVar[tuple[str, ...]] = ()
    # param-shaped state that is never negative (second moments): kept in 8 bits, it takes
    # the unsigned code, one bit more precise (adamkit.precision)
    nonnegative_states: ClassVar[frozenset[str]] = frozenset()
    supports_complex: ClassVar[bool] = True
    # whether :meth:`update` uses only the ops of adamkit.backends.multi.TensorList and
    # returns nothing: the eager backend may then step many params in one call
    multi_tensor: ClassVar[bool] = False
    # the hyperparameters a ``differentiable=True`` step differentiates when they are
    # Tensors that require grad (torch's: SGD's lr and weight_decay; Adam's and AdamW's
    # lr, betas and weight_decay); the optimizer refuses any other that requires grad
    # there, where its gradient would silently be lost
    hypergradients: ClassVar[frozenset[str]] = frozenset()

    def counts_steps(self, group: Group) -> bool:
        """Whether this group's params keep ``state["step"]``: every rule but SGD in torch's
        momentum form, whose update never reads it (torch's SGD keeps no step either)."""
        return True

    def fused_form(self, param: Tensor, options: Any) -> FusedForm | None:
        """How the fused backend may stack ``param`` with others of its group, dtype and
        device into one tensor that :meth:`update` steps at once: element-wise rules stack
        elements (the default). None: the param steps alone."""
        return FusedForm(0, options)

    def shardable(self, param: Tensor, dims: set[int], options: Any) -> bool:
        """Whether :meth:`update` on the local shard of ``param``, sharded along ``dims``
        (a DTensor of FSDP2), is its update restricted to that shard: true of element-wise
        rules; a rule that reduces along a sharded dim says False."""
        return True

    def torch_kernel(self, group: Group, options: Any) -> TorchKernel | None:
        """torch's own fused kernel for this group's update (the op behind torch.optim's
        ``fused=True``), where torch has one for exactly these options; None elsewhere.
        The fused backend runs it over params whose tensors share one dtype and layout:
        ``kernel(params, grads, states, steps, missing, grad_scale)``, with ``states`` one
        list per name of :meth:`state_names` and ``missing`` the names of the state this
        step creates (zeros)."""
        return None

    @abstractmethod
    def validate(self, group: Group) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first bad hyperparameter."""

    def complete(self, group: dict[str, Any], defaults: Group) -> None:
        """Fill the keys a loaded group lacks (torch.optim's state dicts lack adamkit's
        options) from ``defaults``."""
        for name, default in defaults.items():
            group.setdefault(name, default)

    @abstractmethod
    def options(self, group: Group) -> Hashable:
        """The static choices of this group: hashable, no per-step numbers."""

    @abstractmethod
    def state_names(self, options: Any) -> tuple[str, ...]:
        """The parameter-shaped state tensors these options need."""

    def init_state(self, name: str, param: Tensor, options: Any) -> Tensor:
        """The initial value of state ``name`` for ``param``: zeros shaped like it."""
        return torch.zeros_like(param, memory_format=torch.preserve_format)

    @abstractmethod
    def scalars(self, group: Group, state: State, options: Any) -> Scalars:
        """Every number the update reads, for this parameter at this step.

        Called before missing parameter-shaped state is created, so a rule can tell a
        buffer that starts this step (torch's SGD starts its buffer at the gradient). May
        advance scalar state (``mu_product``); never touches parameter-shaped tensors."""

    @abstractmethod
    def update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: Any
    ) -> Sums | None:
        """Apply one step in place: element-wise torch operations on ``param`` and the
        parameter-shaped entries of ``state``. ``grad`` is read-only (already negated for
        ``maximize``); complex tensors arrive as their real views.

        A rule that decides something over many params returns its partial sums over
        this param; they reach :meth:`finish_step`."""

    def sparse_update(
        self, param: Tensor, grad: Tensor, state: State, scalars: Scalars, options: Any
    ) -> None:
        """:meth:`update` for a sparse ``grad`` (``nn.Embedding(sparse=True)``), where
        :meth:`steps_sparse`; it creates its missing state itself."""
        raise NotImplementedError

    def steps_sparse(self, group: Group) -> bool:
        """Whether :meth:`sparse_update` steps this group's sparse gradients (torch's SGD
        and Adagrad do; the other optimizers refuse them)."""
        return False

    def prepare_step(  # noqa: B027 (an optional hook: most rules need none)
        self,
        groups: Sequence[Group],
        params: Sequence[Sequence[Tensor]],
        states: Mapping[Tensor, State],
    ) -> None:
        """Before the step: set up state shared between params (SWATS' switch, which a
        param that first gets a gradient late must join). ``params`` holds, per group, its
        params with a gradient."""

    def finish_step(  # noqa: B027 (an optional hook: most rules need none)
        self,
        groups: Sequence[Group],
        stepped: Sequence[GroupStep],
        states: Mapping[Tensor, State],
    ) -> None:
        """After every group's updates: decide what depends on more than one param, from
        what each update returned. ``stepped`` holds, per group with gradients, the group,
        its params with a gradient and their updates' sums (in the same order)."""
