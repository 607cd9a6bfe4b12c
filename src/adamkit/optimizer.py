"""The ``torch.optim.Optimizer`` subclass that runs a rule over param groups via a backend."""

from __future__ import annotations

import copy
import functools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain, compress, repeat
from numbers import Real
from operator import eq, is_, is_not, itemgetter
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch._C._profiler import _RecordFunctionFast
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from adamkit.backends import BACKENDS, Backend, check_backend
from adamkit.backends.eager import DTYPE, GRAD, SHAPE, SPARSE, is_dtensor, local
from adamkit.backends.fused import FusedBackend
from adamkit.precision import ABSMAX, blocks_of, check_state_dtype, loaded_entries, storage
from adamkit.rule import Group, GroupStep, Rule, scalar_dtype

Params = Iterable[Tensor] | Iterable[dict[str, Any]]
StateDtype = torch.dtype | str | None


class RuleOptimizer(torch.optim.Optimizer):
    """Runs ``rule`` over every param group: drop-in for ``torch.optim``.

    Subclasses set ``rule`` and pass their hyperparameters as ``defaults``. Every group is
    validated when it is added (constructor and :meth:`add_param_group`), so a bad value in
    a per-group dict fails as early as a bad constructor argument.

    With ``skip_nonfinite=True`` a step whose gradients hold a NaN or an Inf anywhere changes
    nothing (params, state, step count) and is counted in :attr:`skipped_steps`, which the
    state dict carries; the first skip warns. Without it (the default) such a step runs as
    in ``torch.optim``: the NaN reaches that param and its state, and no other param.

    torch's flags, where torch's twin takes them (:attr:`torch_flags`), are kept in the
    groups as torch keeps them. ``fused=True`` selects ``backend="fused"`` (with
    ``foreach=True`` or ``differentiable=True`` it raises torch's error);
    ``differentiable=True`` steps under autograd, so that gradients flow through the update
    (in place on params that are not leaves, as torch's; eager backend only); ``foreach``
    and ``capturable`` change no number (the eager loop serves both of torch's paths).

    ``backend`` (docs/performance.md): ``"auto"`` where not given, torch's fused kernel
    where torch has the update, the fused backend for a CPU group of 2**20 param elements
    or more whose update torch has no kernel for (on Linux, where the C++ toolchain
    builds; compiled at its first step),
    the eager backend elsewhere; ``"eager"`` where torch's flags ask for its unfused paths
    (``foreach`` given, ``fused=False`` or ``differentiable=True``), whose numbers the
    eager backend gives bit for bit.
    """

    rule: ClassVar[Rule]
    # the flags of torch's twin among foreach, capturable, differentiable and fused
    torch_flags: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        params: Params,
        defaults: dict[str, Any],
        *,
        backend: str | None = None,
        skip_nonfinite: bool = False,
        state_dtype: StateDtype = None,
        torch_flags: Mapping[str, Any] | None = None,
    ):
        """``torch_flags``: the values of the class's :attr:`torch_flags` (see the class)."""
        flags = dict(torch_flags or {})
        assert set(flags) == set(self.torch_flags), (flags, self.torch_flags)
        if flags.get("fused"):
            if flags.get("foreach"):
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
            backend = "fused"
        if backend is None:
            unfused = flags.get("foreach") is not None or flags.get("fused") is False
            backend = "eager" if unfused or flags.get("differentiable") else "auto"
        if flags.get("differentiable") and backend == "fused":
            raise RuntimeError("`fused` does not support `differentiable`")
        defaults = {**defaults, **flags, "state_dtype": state_dtype}
        self._validate(defaults)
        check_backend(backend)
        if not isinstance(skip_nonfinite, bool):
            raise TypeError(f"skip_nonfinite must be a bool, got {skip_nonfinite!r}")
        self.backend = backend
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps = 0
        self._runner: Backend | None = None
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group, dict):
            self.rule.complete(param_group, self.defaults)
        super().add_param_group(param_group)
        try:
            group = self.param_groups[-1]
            self._validate(group)
            seen: set[int] = set()
            for index, param in enumerate(group["params"]):
                if param.is_complex() and not self.rule.supports_complex:
                    raise ValueError(
                        f"{self.rule.name} does not support complex parameters: parameter "
                        f"{index} of the group is {param.dtype}"
                    )
                if id(param) in seen:
                    # torch warns and steps it twice (the fused backend could not): refused
                    raise ValueError(f"parameter {index} of the group appears in it twice")
                seen.add(id(param))
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict``, plus ``skipped_steps`` (see ``skip_nonfinite``)."""
        return {**super().state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, with three differences.

        It checks the whole dict before it changes anything, and names what does not fit:
        the missing key, the group and param (by index, and by name where the dict has
        ``param_names``), both sizes or both shapes. torch maps a state tensor of the wrong
        shape onto the param and fails at a later step, or not at all.

        It works on a copy: torch keeps the passed ``step`` tensors (and any tensor already of
        the param's dtype and device) by reference, so the next step would advance the
        caller's dict, or a second optimizer loaded from it. And scalar state such as
        ``mu_product`` keeps its dtype, like ``step``: torch casts it to the param's dtype,
        which in bf16 changes the step size after a resume.

        Hooks run as torch runs them: the pre-hooks on the dict as passed (before any
        check; one may return another dict), the post-hooks on the whole loaded state,
        ``mu_product`` and compact state included; a hook may store any object in
        :attr:`state`.
        """
        state_dict = dict(state_dict) if isinstance(state_dict, Mapping) else state_dict
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)  # torch's order: before any check
            if result is not None:
                state_dict = result
        self._check_loadable(state_dict)
        state_dict = copy.deepcopy(state_dict)
        self.skipped_steps = int(state_dict.pop("skipped_steps", 0))
        listed = set(chain.from_iterable(group["params"] for group in state_dict["param_groups"]))
        # torch would keep state of an id no group lists, under that id: dropped
        state_dict["state"] = {k: v for k, v in state_dict["state"].items() if k in listed}
        names = self.rule.scalar_state_names
        held = []  # per param in order: the entries torch would cast to the param's dtype
        for saved, group in zip(state_dict["param_groups"], self.param_groups, strict=True):
            state_dtype = saved.get("state_dtype", self.defaults["state_dtype"])
            for key, param in zip(saved["params"], group["params"], strict=True):
                values = state_dict["state"].get(key, {})
                held.append(
                    {
                        name: values.pop(name)
                        for name in list(values)
                        if name in names or keeps_dtype(name, values[name], param, state_dtype)
                    }
                )
        # torch's load then calls __setstate__, which puts them back (_restore), and runs
        # the post-hooks, which so see the whole state; the pre-hooks ran above
        pre_hooks = self._optimizer_load_state_dict_pre_hooks
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._loading = held
        try:
            super().load_state_dict(state_dict)
        finally:
            self._optimizer_load_state_dict_pre_hooks = pre_hooks
            self.__dict__.pop("_loading", None)

    def _restore(self, held: list[dict[str, Any]]) -> None:
        """Put back, after torch's load, the entries it would have cast (scalar state,
        compact state), and make Python-number steps (torch < 1.12) tensors."""
        names = self.rule.scalar_state_names
        groups = chain.from_iterable([g] * len(g["params"]) for g in self.param_groups)
        params = chain.from_iterable(group["params"] for group in self.param_groups)
        for entries, group, param in zip(held, groups, params, strict=True):
            scalars = {n: v for n, v in entries.items() if n in names}
            compact = {n: v for n, v in entries.items() if n not in names}
            signs = {n: n not in self.rule.nonnegative_states for n in compact}
            self.state[param].update(scalars)
            self.state[param].update(loaded_entries(compact, param, group["state_dtype"], signs))
        for param_state in self.state.values():
            for name in ("step", *names):
                value = param_state.get(name) if isinstance(param_state, dict) else None
                if value is not None and not isinstance(value, Tensor):
                    param_state[name] = torch.tensor(float(value), dtype=scalar_dtype())

    def _refuse_grad(self, param: Tensor, group: Group, index: int, position: int) -> None:
        """Refuse, before the step changes anything, a gradient no update can take (of
        another dtype or shape than its param, or sparse where the rule steps none)."""
        grad = param.grad
        if grad.is_sparse and grad.shape == param.shape and grad.dtype == param.dtype:
            if not self.rule.steps_sparse(group):
                raise RuntimeError(f"{self.rule.name} does not support sparse gradients")
            if self.backend == "fused" or group["state_dtype"] is not None:
                raise RuntimeError(
                    f"{self.rule.name} steps sparse gradients on the eager or auto backend "
                    "with state of the param's dtype only"
                )
            return
        if grad.shape != param.shape or grad.dtype != param.dtype:
            raise RuntimeError(
                f"group {index}, param {position}: gradient of shape {tuple(grad.shape)} and "
                f"dtype {grad.dtype} for a param of shape {tuple(param.shape)} and dtype "
                f"{param.dtype}"
            )

    def _check_loadable(self, state_dict: Any) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first part of ``state_dict`` that
        does not fit this optimizer. State for an id no group lists is dropped."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"the state dict has no {key!r} entry")
        skipped = state_dict.get("skipped_steps", 0)
        if isinstance(skipped, bool) or not isinstance(skipped, int):
            raise TypeError(f"skipped_steps must be an int, got {skipped!r}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                "loaded state dict has a different number of parameter groups: "
                f"{len(saved_groups)}, the optimizer has {len(self.param_groups)}"
            )
        for index, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if "params" not in saved:
                raise ValueError(f"group {index} of the loaded state dict has no 'params' entry")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"loaded state dict contains a parameter group that doesn't match the size "
                    f"of optimizer's group: group {index} has {len(saved['params'])} params "
                    f"there, {len(group['params'])} here"
                )
            loaded = {**saved, "params": group["params"]}  # the group torch's load makes
            self.rule.complete(loaded, self.defaults)
            try:
                self._validate(loaded)
            except (ValueError, TypeError) as error:
                raise type(error)(f"group {index} of the loaded state dict: {error}") from None
            names = saved.get("param_names", [None] * len(group["params"]))
            for position, (key, param, name) in enumerate(
                zip(saved["params"], group["params"], names, strict=True)
            ):
                where = f"group {index}, param {position}" + (f" ({name})" if name else "")
                self._check_param_state(state_dict["state"].get(key), param, loaded, where)

    def _check_param_state(self, state: Any, param: Tensor, group: Any, where: str) -> None:
        if not state:
            return
        scalar_names = ("step", *self.rule.scalar_state_names)
        for name in scalar_names:
            value = state.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, (Tensor, Real)):
                raise TypeError(f"{where}: state {name!r} must be a number, got {value!r}")
        options = self.rule.options(group)
        names: Sequence[str] = self.rule.state_names(options)
        like = torch.empty(param.shape, dtype=param.dtype, device="meta")
        foreign = [name for name in state if name not in names and name not in scalar_names]
        if names and foreign and not any(name in state for name in names):
            # another algorithm's state; some or all of ours missing is an option turned on
            # since (AMSGrad, momentum), created at the next step as when turned on in place
            raise ValueError(
                f"{where}: the loaded state has no {names[0]!r} ({self.rule.name} keeps "
                f"{', '.join(names)}; the state holds {', '.join(map(str, state))})"
            )
        for name in names:
            if name not in state:
                continue
            value = state[name]
            if not isinstance(value, Tensor):
                raise TypeError(f"{where}: state {name!r} must be a Tensor, got {value!r}")
            shape = self.rule.init_state(name, like, options).shape
            if value.shape != shape:
                raise ValueError(
                    f"{where}: state {name!r} has shape {tuple(value.shape)}, "
                    f"the param needs {tuple(shape)}"
                )
            if value.dtype == torch.uint8:  # 8-bit codes (adamkit.precision)
                absmax = state.get(name + ABSMAX)
                blocks = (blocks_of(value.numel()),)
                if not isinstance(absmax, Tensor) or absmax.shape != blocks:
                    raise ValueError(
                        f"{where}: 8-bit state {name!r} needs {name + ABSMAX!r} of shape "
                        f"{blocks}, the state holds {describe(absmax)}"
                    )
            elif not (value.is_floating_point() or value.is_complex()):
                raise TypeError(f"{where}: state {name!r} is {value.dtype}, not floating point")

    def __getstate__(self) -> dict[str, Any]:
        # the runner is made again at the copy's first step
        return {
            **super().__getstate__(),
            "backend": self.backend,
            "skip_nonfinite": self.skip_nonfinite,
            "skipped_steps": self.skipped_steps,
            "_runner": None,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "backend" in state:  # pickling; load_state_dict keeps the optimizer's backend
            self.backend = state.pop("backend")
            self.skip_nonfinite = state.pop("skip_nonfinite", False)
            self.skipped_steps = state.pop("skipped_steps", 0)
            self._runner = state.pop("_runner", None)
        super().__setstate__(state)
        # torch's __setstate__ adds "differentiable" to the defaults of every optimizer;
        # groups keep it only where the torch twin takes it
        defaults = {
            k: v
            for k, v in self.defaults.items()
            if k != "differentiable" or "differentiable" in self.torch_flags
        }
        for group in self.param_groups:
            self.rule.complete(group, defaults)
            self._validate(group)
        held = self.__dict__.pop("_loading", None)
        if held is not None:  # load_state_dict
            self._restore(held)

    def _validate(self, group: Group) -> None:
        """The rule's checks of a group's hyperparameters, its state precision, and that a
        differentiable step differentiates every hyperparameter that requires grad."""
        self.rule.validate(group)
        check_state_dtype(group.get("state_dtype"))
        if not group.get("differentiable"):
            return  # the step runs without autograd: a Tensor's value is all it reads
        for name, value in group.items():
            values = value if isinstance(value, (tuple, list)) and name != "params" else [value]
            wanted = any(isinstance(v, Tensor) and v.requires_grad for v in values)
            if wanted and name not in self.rule.hypergradients:
                raise ValueError(
                    f"{name} requires grad, but {self.rule.name}'s differentiable step does not "
                    f"differentiate it (it differentiates "
                    f"{', '.join(sorted(self.rule.hypergradients)) or 'no hyperparameter'})"
                )

    @property
    def _step_supports_amp_scaling(self) -> bool:
        """Whether ``torch.amp.GradScaler`` hands the step its scale instead of unscaling the
        gradients first: on the fused backend, as for torch's fused optimizers (the kernel
        divides by it); on the eager one the scaler unscales, as for torch's others. Tools
        read it too: Lightning refuses gradient clipping under mixed precision where it holds.
        """
        if self._runner is not None:
            return isinstance(self._runner, FusedBackend)
        return self.backend == "fused"

    @staticmethod
    def profile_hook_step(func: Callable[..., Any]) -> Callable[..., Any]:
        """``step`` as ``torch.optim.Optimizer`` wraps it (at the first construction): in the
        profiler's range ``Optimizer.step#<class>.step``, after the global then the
        optimizer's step pre-hooks (each may return new ``(args, kwargs)``, ``args`` starting
        with the optimizer) and before its then the global post-hooks. The range is opened
        by torch's C++ record function, not its Python ``record_function``: ≈ 6 µs against
        70-140 µs on a step whose memory traffic has emptied the caches (about 1 % of a
        20 M-element AMSGrad step here)."""

        @functools.wraps(func)
        def step(*args: Any, **kwargs: Any) -> Any:
            self = args[0]
            with _RecordFunctionFast(f"Optimizer.step#{type(self).__name__}.step"):
                pre = chain(
                    _global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()
                )
                for hook in pre:
                    result = hook(self, args, kwargs)
                    if result is None:
                        continue
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(
                            f"{func} must return None or a tuple of (new_args, new_kwargs), "
                            f"but got {result}."
                        )
                    args, kwargs = result
                out = func(*args, **kwargs)
                self._optimizer_step_code()
                post = chain(
                    self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()
                )
                for hook in post:
                    hook(self, args, kwargs)
                return out

        return step

    # a compiled training step runs the optimizer's step eagerly (a graph break): the step
    # reads its scalars on the host, and the fused backend runs kernels compiled on their own
    @torch._disable_dynamo  # torch.compiler.disable, importing dynamo at the first step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Under ``torch.amp.GradScaler`` (``scaler.step(optimizer)``) on the fused backend, the
        scaler sets ``grad_scale`` and ``found_inf`` as for torch's fused optimizers:
        gradients are divided by the scale inside the step (``p.grad`` is left as it is),
        and a step whose gradients held an inf or NaN changes nothing, the step count
        included. So does a step whose gradients hold one under ``skip_nonfinite=True``.
        Inside a ``torch.compile``d function the step runs eagerly. With
        ``differentiable=True`` the step runs under autograd (its in-place updates are
        recorded), as torch's differentiable steps do; otherwise without.

        Args:
            closure: re-evaluates the model and returns the loss; run with grad enabled.

        Returns:
            The closure's loss, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            self._step_groups()
        return loss

    def _step_groups(self) -> None:
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and found_inf.item():
            return  # GradScaler saw an inf or NaN: params, state and step untouched
        grad_scale = getattr(self, "grad_scale", None)
        if self._runner is None:
            self._runner = BACKENDS[self.backend]()
        step_group = self._runner.step_group
        with_grad: list[list[Tensor]] = []
        checked = self.__dict__.setdefault("_checked", {})
        for index, group in enumerate(self.param_groups):
            # a value edited into the group since (β2 > 1) fails here on every backend; a
            # group of plain values is checked again only where one changed (≈ 10 µs)
            numbers = [item for item in group.items() if item[0] != "params"]
            plain = all(map(immutable, map(itemgetter(1), numbers)))
            if not plain or checked.get(index) != numbers:
                try:
                    self._validate({**group, "params": ()})  # its numbers, not its params
                except (ValueError, TypeError) as error:
                    raise type(error)(f"group {index}: {error}") from None
                if plain:
                    checked[index] = numbers
            grads = list(map(GRAD, group["params"]))
            params = list(compress(group["params"], map(is_not, grads, repeat(None))))
            grads = [grad for grad in grads if grad is not None]
            # checked in C-level passes, ≈ 1 µs a param less than one by one (each shape
            # compared as it is made: thousands of them alive at once set off the collector)
            if (
                not all(map(is_, map(DTYPE, grads), map(DTYPE, params)))
                or any(map(SPARSE, grads))
                or not all(map(eq, map(SHAPE, grads), map(SHAPE, params)))
            ):
                for position, p in enumerate(group["params"]):
                    grad = p.grad
                    if grad is not None and (
                        grad.dtype != p.dtype or grad.is_sparse or grad.shape != p.shape
                    ):
                        self._refuse_grad(p, group, index, position)
            with_grad.append(params)
        if self.skip_nonfinite and not all_finite([p.grad for ps in with_grad for p in ps]):
            self.skipped_steps += 1
            if self.skipped_steps == 1:
                warnings.warn(
                    f"{self.rule.name} skipped a step: a gradient holds NaN or Inf (later skips "
                    "are counted in skipped_steps, without a warning)",
                    RuntimeWarning,
                    stacklevel=5,
                )
            return
        self.rule.prepare_step(self.param_groups, with_grad, self.state)
        stepped = [
            GroupStep(group, params, step_group(self.rule, group, params, self.state, grad_scale))
            for group, params in zip(self.param_groups, with_grad, strict=True)
            if params
        ]
        self.rule.finish_step(self.param_groups, stepped, self.state)


IMMUTABLE = frozenset((int, float, bool, str, type(None), torch.dtype))


def immutable(value: Any) -> bool:
    """Whether ``value`` cannot change in place: a number, string, dtype, None, or a tuple
    of such (a Tensor or a list can)."""
    return type(value) in IMMUTABLE or (type(value) is tuple and all(map(immutable, value)))


def all_finite(grads: Sequence[Tensor]) -> bool:
    """Whether no gradient holds a NaN or an Inf: one host sync per device. DTensor
    gradients (FSDP2) are checked on their local shards and the answer is agreed over the
    ranks that share them, so every rank takes the same decision."""
    shards = [local(grad) for grad in grads]
    by_device: dict[torch.device, list[Tensor]] = {}
    for shard in shards:
        if shard.numel():  # the infinity norm of an empty tensor is undefined
            by_device.setdefault(shard.device, []).append(shard)
    finite = all(
        bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors, float("inf")))).all())
        for tensors in by_device.values()
    )
    groups = {}
    for grad, shard in zip(grads, shards, strict=True):
        if is_dtensor(grad):
            for dim, placement in enumerate(grad.placements):
                if placement.is_shard():
                    group = grad.device_mesh.get_group(dim)
                    groups.setdefault(id(group), (group, shard.device))
    for group, device in groups.values():
        flag = torch.tensor([0 if finite else 1], dtype=torch.int32, device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=group)
        finite = not flag.item()
    return finite


def describe(value: Any) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value)


def keeps_dtype(name: str, value: Any, param: Tensor, state_dtype: Any) -> bool:
    """Whether a loaded state entry keeps its own dtype (torch casts floating state to the
    param's): 8-bit codes and their block maxima, and state the group keeps compact."""
    if not isinstance(value, Tensor) or name == "step":
        return False
    if value.dtype == torch.uint8 or name.endswith(ABSMAX):
        return True
    compact = storage(state_dtype, param.dtype, value.numel()) is not None
    return compact and value.is_floating_point() and value.dim() > 0
