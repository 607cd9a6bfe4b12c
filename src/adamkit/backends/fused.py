"""The fused backend: the update both backends run, compiled, over the params where they lie.

The fused backend takes over no storage of the user's. Params and gradients are the tensors
the eager backend steps, and state is what ``optimizer.state`` holds (created by the rule;
for the small params of a :class:`Pack`, views of its buffers); each step reads them where
they are, so anything a training script does to them (``model.to(...)``,
``p.data = ...``, a loaded or edited state, shared memory) is seen at the next step as the
eager backend sees it.

Per group:

* where a group has many small params with gradients (:data:`PACKED`; on the CPU, many
  params of any size), they step together (on the CPU, one call that runs the compiled C
  loop on each where it lies): their state lives in flat buffers of the backend's own
  (see :class:`Pack`);
* where torch has a fused kernel for exactly the rule's options (Adam and AdamW in torch's
  conventions, AMSGrad's raw maximum, SGD's torch momentum, Adagrad; see
  :meth:`Rule.torch_kernel`), the params whose tensors share one dtype and layout step by
  it, in one call per dtype and device, as ``torch.optim``'s ``fused=True`` steps them;
* the params that step share their numbers (the rule's scalars) where their step counts
  and scalar state agree (kept in one buffer then: :class:`Counts`); those numbers reach
  the compiled kernel as 0-dim tensors, so that no value a user can change is ever part
  of a compiled graph;
* a large param whose param, gradient and state tensors are laid out alike steps in one
  call of the compiled update over them where they lie, read in memory order (on the CPU,
  of the update's C loop itself: see :class:`Kernel`);
* other small params step in the eager backend's multi-tensor calls (see :data:`LARGE`);
* anything else (vectors of ND-Adam along other axes, mixed layouts after a change of
  memory format, compact state, DTensor shards) steps through the eager backend's loop,
  with the compiled kernel where its layout allows it.

Kernels are compiled with dynamic sizes, one per rule, options, dtype and device: a new
param, a new size or a different set of params with gradients compiles nothing.
"""

from __future__ import annotations

import ctypes
import getpass
import hashlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from itertools import compress, repeat
from operator import attrgetter, eq, is_, itemgetter
from typing import Any

import torch
from torch import Tensor

from adamkit.backends.eager import (
    DTYPE,
    GRAD,
    LOW_PRECISION,
    PLAIN,
    SHAPE,
    Batches,
    States,
    add_to_batch,
    advance,
    alike,
    all_alike,
    any_dtensor,
    apply_update,
    real_view,
    shared_scalars,
    start_step,
    state_columns,
    step_batches,
    step_count,
)
from adamkit.backends.eager import step_group as eager_step_group
from adamkit.precision import storage
from adamkit.rule import FusedForm, Group, Rule, Scalars, State, Sums

DEVICE = attrgetter("device")

# params with fewer elements are small: they step as a pack (PACKED), or in the eager
# backend's multi-tensor calls (an op ≈ 2 µs per tensor; a call of the compiled graph ≈ 25
# µs on 2 CPU cores), and a kernel compiled for them is not parallelised. (A direct call of
# the C loop per small param, ≈ 15-30 µs of host work, was tried and reverted at 369652f:
# no gain in the loop benchmark, and 57 s more compiling for the test suite.)
LARGE = 1 << 16
# a group steps its small params (on the CPU, all its params) as one tensor (a Pack) where
# at least this many of them have gradients; fewer cost about as much in the multi-tensor
# calls
PACKED = 16
# backend="auto" steps a CPU group of this many param elements or more on the fused backend
# where torch has no kernel for its update: there the eager backend runs torch's for-loop
# ops and only ties with it (RMSprop, NAdam, Adamax on 20 M params in 200 tensors:
# 0.88-1.08x in the loop), while the compiled step runs 1.8-2.6 times as fast and pays
# back its first compile (7-8 s with an empty inductor cache) after about 600 steps of
# that model (docs/performance.md)
AUTO_FUSED = 1 << 20
# a pack's driver steps its members in rows of at most this many elements, spread over the
# threads (a multiple of every vector width: a row's elements round as the whole member's)
ROW = 1 << 15


class Kernel:
    """:func:`apply_update` of one rule, options and kind of input, compiled with the
    first dim of the stacked tensors (elements, or ND-Adam's rows) dynamic: one graph
    serves every size. The rule, its options and the boolean numbers are constants of the
    graph (they choose code); the param, gradient, state tensors and 0-dim numbers are its
    inputs, by name.

    Once compiled, the graph is called directly: the kernel's key (:func:`kernel_for`)
    fixes everything dynamo's guards would check (dtypes, device, dims, contiguity, the
    constants), so the guards' cost per call (≈ 70 µs on 2 CPU cores) is not paid; and
    where the graph is one C loop on the CPU (:func:`find_loop`), that loop is called on
    the tensors where they lie, which :func:`stack` checked. Where the graph's inputs
    cannot be matched to the arguments, or the update returns sums (SWATS), every call
    goes through dynamo.
    """

    def __init__(
        self,
        rule: Rule,
        options: Any,
        names: Sequence[str],
        numbers: Scalars,
        maximize: bool,
        scaled: bool,
        width: int,
        large: bool,
        tag: str,
    ) -> None:
        self.width = width
        self.large = large  # compiled for large params (see kernel_for)
        self.ready = False  # compiled (Kernel.compile_for)
        self.tensor_numbers = [n for n, v in numbers.items() if not isinstance(v, bool)]
        constants = {n: v for n, v in numbers.items() if isinstance(v, bool)}
        states = [f"state{i}" for i in range(len(names))]
        self.tensors = 2 + len(states)  # param, grad, state: the arguments with a dynamic dim
        inputs = [f"number{i}" for i in range(len(self.tensor_numbers))]
        self.arguments = ["param", "grad", *states, *inputs, *(["grad_scale"] if scaled else [])]
        entries = [f"{n!r}: {a}" for n, a in zip(self.tensor_numbers, inputs, strict=True)]
        name = f"{type(rule).__name__}_update"
        source = (
            f"def {name}({', '.join(self.arguments)}):\n"
            f"    numbers = {{**constants, {', '.join(entries)}}}\n"
            f"    state = [{', '.join(states)}]\n"
            f"    return apply_update(rule, options, maximize, param, grad, names, state, "
            f"numbers, {'grad_scale' if scaled else 'None'})\n"
        )
        namespace = {
            "apply_update": apply_update,
            "rule": rule,
            "options": options,
            "maximize": maximize,
            "names": tuple(names),
            "constants": constants,
        }
        # a file name of its own: dynamo keeps what it learns of a function's inputs (which
        # dims vary) by file and name, so kernels of one rule must not share them (one
        # compiled after another's sizes varied made a dim dynamic, and rounded otherwise)
        exec(compile(source, f"<adamkit kernel {name} {tag}>", "exec"), namespace)
        # a function and what it takes from the arguments (with the size last): the
        # compiled graph, and the C loop in it (see find_loop)
        self.direct: tuple[Callable, itemgetter] | None = None
        self.eager = namespace[name]
        self.graph: Callable | None = None  # torch.compile of eager, made where it is needed
        # the C loop another process found for the same kernel (see stored_loop): nothing
        # is compiled, nor inductor imported, where it is there
        self.stored = f"{tag}-{environment()}"
        self.loop: tuple[Callable, itemgetter] | bool | None = stored_loop(self.stored)

    @property
    def compiled(self) -> Callable:
        """The update compiled by torch.compile with :meth:`capture` as its backend."""
        if self.graph is None:
            self.graph = torch.compile(self.eager, fullgraph=True, backend=self.capture)
        return self.graph

    def capture(self, graph: torch.fx.GraphModule, inputs: list[Any]) -> Callable:
        """The inductor backend, keeping the compiled graph and where each of its inputs
        comes from (an argument, or the dynamic size) for direct calls."""
        from torch._inductor.compile_fx import compile_fx

        if any(isinstance(value, Tensor) and value.is_cpu for value in inputs):
            vector_isa_probes().join()  # before anything of inductor's reads their answers
        with torch._inductor.config.patch({"cpp.threads": 1} if not self.large else {}):
            compiled = compile_fx(graph, inputs)
        placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
        output = next(node for node in graph.graph.nodes if node.op == "output")
        size = next(
            (n.meta["example_value"].shape[0] for n in placeholders if n.name == "l_param_"),
            None,
        )
        order: list[int | None] = []
        for node in placeholders:
            value = node.meta.get("example_value")
            if isinstance(value, torch.SymInt):
                order.append(
                    -1 if isinstance(size, torch.SymInt) and str(value) == str(size) else None
                )
            else:
                argument = node.name[2:-1] if node.name.startswith("l_") else None
                order.append(self.arguments.index(argument) if argument in self.arguments else None)
        returns_nothing = not output.args[0]
        if (
            self.direct is None
            and returns_nothing
            and isinstance(size, torch.SymInt)
            and None not in order
        ):
            self.direct = (compiled, itemgetter(*order))  # type: ignore[arg-type]
        return compiled

    def inputs(self, numbers: Scalars, grad_scale: Tensor | None) -> list[Tensor]:
        """The kernel's inputs besides the tensors it steps: ``numbers`` (0-dim tensors:
        :func:`kernel_numbers`) and the gradient scale."""
        inputs = [numbers[n] for n in self.tensor_numbers]
        return inputs if grad_scale is None else [*inputs, grad_scale]

    def bind(self, tensors: Sequence[Tensor], inputs: list[Tensor]) -> Callable[[], Sums | None]:
        """The kernel's call on a param's ``tensors`` (param, gradient, state, laid out alike:
        :func:`stack`) with its :meth:`inputs`, ready to run. A step binds every param's
        call before it runs any, so that its host work is not done between kernels, each of
        which streams megabytes through the caches that work runs in (that made it 2-3
        times slower per param)."""
        size = tensors[0].shape[0] if self.width else tensors[0].numel()
        if self.loop and size > 1:  # the C loop reads the tensors' data where it lies
            function, pick = self.loop
            return partial(function, *pick([*tensors, *inputs, size]))
        arguments = [*(flat(tensor, self.width) for tensor in tensors), *inputs]
        if self.direct is None or size < 2:
            return partial(self.call, size, arguments)
        self.find_loop(arguments, size)
        function, pick = self.loop or self.direct
        return partial(function, *pick([*arguments, size]))

    def c_loop(self, tensors: Sequence[Tensor], inputs: list[Tensor]) -> CLoop | None:
        """The address of the kernel's C loop and where each of its arguments comes from (an
        index into ``[param, gradient, *state, *inputs]``, -1 for the size), for
        :func:`driver` to call it on many params; compiled and found on zeros laid out as
        ``tensors`` (nothing of the user's is touched). None where there is no such loop (a
        GPU, another torch's code, a form with rows)."""
        if self.loop is None and not self.width:
            # (19 elements: no other integer the loop takes is likely to equal it)
            zeros = [t.new_zeros(19).requires_grad_(t.requires_grad) for t in tensors]
            try:
                self.bind(zeros, inputs)()  # compiles the kernel and finds its C loop
            except Exception:  # no C++ compiler: the caller steps otherwise, or fails there
                self.loop = False
        if not self.loop:
            return None
        function, pick = self.loop
        address = c_address(function)
        order = pick([*range(len(tensors) + len(inputs)), -1])
        return None if address is None else (address, order)

    def find_loop(self, arguments: list[Any], size: int) -> None:
        """Once compiled, find the graph's C loop (:func:`find_loop`) and store it for
        later processes (:func:`store_loop`)."""
        if self.loop is None and self.direct is not None and size > 1:
            self.loop = find_loop(*self.direct, arguments, size) or False
            if self.loop:
                function, pick = self.loop
                store_loop(self.stored, function, pick([*range(len(arguments)), -1]))

    def call(self, size: int, arguments: list[Any]) -> Sums | None:
        """The kernel through dynamo (its first call, which compiles it; a size of 1; an
        update that returns sums)."""
        if not self.ready:
            self.ready = True
            self.compile_for(arguments)
            self.find_loop(arguments, size)
        if size > 1:  # a size-1 dim is specialised, and marking it would raise
            for tensor in arguments[: self.tensors]:
                torch._dynamo.mark_dynamic(tensor, 0)
        try:
            return self.compiled(*arguments)
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            # dynamo refuses before the graph runs: nothing has changed yet
            return self.eager(*arguments)

    def compile_for(self, arguments: list[Any]) -> None:
        """Compile the kernel on zeros of :data:`COMPILED_FOR` elements (or rows) laid out as
        ``arguments``' tensors, whatever their own size: inductor's code depends on the size
        it compiles for (for a few elements, a loop without vectors, which rounds otherwise),
        so that a kernel compiled in another process, or first for other params, computes
        the same numbers (a resumed checkpoint continues bit for bit)."""
        tensors = arguments[: self.tensors]
        width = math.prod(tensors[0].shape[1:])
        rows = max(2, COMPILED_FOR[self.large] // max(width, 1))
        zeros = [t.new_zeros((rows, *t.shape[1:])).requires_grad_(t.requires_grad) for t in tensors]
        for tensor in zeros:
            torch._dynamo.mark_dynamic(tensor, 0)
        probes = vector_isa_probes() if zeros[0].is_cpu else None  # run while dynamo traces
        try:
            self.compiled(*zeros, *arguments[self.tensors :])
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            pass
        finally:  # joined in capture; here too where the compile failed before it
            if probes is not None:
                probes.join()


# the size (elements, or rows of ND-Adam's vectors) a kernel for small or large params is
# compiled for (Kernel.compile_for)
COMPILED_FOR = {False: 1 << 12, True: 1 << 18}
_KERNELS: dict[Any, Kernel] = {}


def find_loop(
    compiled: Callable, pick: itemgetter, arguments: list[Any], size: int
) -> tuple[Callable, itemgetter] | None:
    """The one C function a compiled graph runs and where each of its arguments comes from
    (an index into ``arguments`` with ``size`` appended), or None where the graph is not one such
    call. Inductor's code for a graph on the CPU checks every input's size and strides and
    then calls its kernels with the tensors' data; an update compiles to one loop, whose
    direct call saves the checks and the wrappers around them (≈ 20 µs a call on 2 CPU
    cores). Found by running the graph once with that C function replaced by a recorder
    (nothing is computed), on ``arguments`` with dynamic dim ``size``: each argument it
    receives must be one of ``arguments`` or the size."""
    module = graph_module(compiled)
    if module is None:
        return None
    names = [name for name in module if name.startswith("cpp_fused_")]
    if len(names) != 1:
        return None
    # the graph's code may read the inputs' sizes and check them, and call the loop: any
    # other work of its own (an op outside the loop) would be skipped by a direct call
    call = module["call"]
    if not set(getattr(call, "__func__", call).__code__.co_names) <= {*CHECKS, names[0]}:
        return None
    loop = module[names[0]]
    calls: list[tuple[Any, ...]] = []
    probe = threading.get_ident()

    def record(*received: Any) -> None:  # another thread's step runs the loop meanwhile
        if threading.get_ident() == probe:
            calls.append(received)
        else:
            loop(*received)

    module[names[0]] = record
    try:
        compiled(*pick([*arguments, size]))
    finally:
        module[names[0]] = loop
    if len(calls) != 1:
        return None
    positions = {id(argument): index for index, argument in enumerate(arguments)}
    mapping = []
    for received in calls[0]:
        if isinstance(received, int) and received == size:
            mapping.append(-1)
        elif id(received) in positions:
            mapping.append(positions[id(received)])
        else:
            return None
    return loop, itemgetter(*mapping)


CHECKS = ("clear", "size", "stride", "assert_size_stride", "assert_alignment")

# a kernel's C loop: its address, and where each argument comes from (Kernel.c_loop)
CLoop = tuple[int, tuple[int, ...]]


def c_address(function: Callable) -> int | None:
    """The address of the C function ``kernel`` in the library whose Python binding is
    ``function`` (inductor compiles each C loop with one), or None."""
    try:
        library = ctypes.CDLL(sys.modules[function.__module__].__file__)
        return ctypes.cast(library.kernel, ctypes.c_void_p).value
    except (AttributeError, KeyError, OSError, TypeError):
        return None


def load_binding(path: str, name: str) -> Callable | None:
    """The function ``kernel`` of the Python binding inductor compiled into the library at
    ``path`` (a kernel's C loop, or a driver), loaded as inductor loads it; None where it
    cannot be (a file removed from the cache, another torch's binding)."""
    module_name = f"adamkit_{name}.kernel"
    try:
        if module_name not in sys.modules:
            # the binding reads where torch's function that gives a tensor's data pointer is
            os.environ["_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR"] = str(
                torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr
            )
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            sys.modules[module_name] = module
        return sys.modules[module_name].kernel
    except (AttributeError, ImportError, OSError, TypeError):
        return None


def stored_loop(name: str) -> tuple[Callable, itemgetter] | None:
    """The C loop of kernel ``name`` (its key and :func:`environment`) that a process
    stored with :func:`store_loop`, and where its arguments come from; None where none is
    stored or it cannot be loaded. A process whose kernels are all stored steps without
    importing inductor or tracing anything: a warm first step costs no compile."""
    try:
        with open(os.path.join(stored_dir(), f"{name}.json")) as file:
            entry = json.load(file)
        function = load_binding(entry["path"], name)
        return None if function is None else (function, itemgetter(*entry["order"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_loop(name: str, function: Callable, order: Sequence[int]) -> None:
    """Record the library of a C loop (or driver) and where its arguments come from (an
    index into the kernel's arguments, -1 for the size) for :func:`stored_loop` in later
    processes."""
    try:
        write_entry(name, {"path": sys.modules[function.__module__].__file__, "order": [*order]})
    except (AttributeError, KeyError, OSError):
        pass


def write_entry(name: str, entry: dict[str, Any]) -> None:
    """Write ``entry`` as ``name``.json in :func:`stored_dir`, whole or not at all."""
    folder = stored_dir()
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}")
    with open(temporary, "w") as file:
        json.dump(entry, file)
    os.replace(temporary, os.path.join(folder, f"{name}.json"))


def stored_dir() -> str:
    """adamkit's records in inductor's cache directory (``TORCHINDUCTOR_CACHE_DIR``, or the
    default inductor chooses), which hold the libraries they name."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if folder is None:
        try:
            user = getpass.getuser()
        except (KeyError, ImportError, OSError):
            user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
        user = re.sub(r'[\\/:*?"<>|]', "_", user)
        folder = os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
    return os.path.join(os.path.abspath(folder), "adamkit")


def environment() -> str:
    """A digest of what a compiled kernel depends on besides its key: adamkit's source
    (the update it compiles), torch's version, the Python ABI, the CPU's features (the
    vector instructions inductor compiled for) and the thread count (inductor compiles a
    loop without threads for one thread)."""
    digest = hashlib.sha256(machine().encode())
    digest.update(str(torch.get_num_threads()).encode())
    return digest.hexdigest()[:16]


@cache
def machine() -> str:
    """The part of :func:`environment` that a process does not change."""
    digest = hashlib.sha256()
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder, _, files in sorted(os.walk(package)):
        for file in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(folder, file), "rb") as source:
                digest.update(source.read())
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        flags = ""
    digest.update(
        repr((torch.__version__, sys.implementation.cache_tag, platform.machine(), flags)).encode()
    )
    return digest.hexdigest()


_PROBES: list[threading.Thread] = []  # the one thread of vector_isa_probes, once started
_PROBES_LOCK = threading.Lock()  # two threads' first compiles start one


def vector_isa_probes() -> threading.Thread:
    """Inductor's checks of the CPU's vector instruction sets, started once per process in
    the background at its first CPU compile: a caller joins the thread before inductor
    reads their answers. Inductor compiles and loads a probe program for each set the CPU
    reports (AVX2, AVX-512 and its extensions, AMX; about 10 s of CPU time here) one after
    the other, and keeps each answer; run side by side (:func:`probe_vector_isas`) while
    dynamo traces the update and inductor's modules load, its own checks then find them:
    a first step with an empty cache took 16-18 s here, 12 s with the checks side by side
    but before the trace."""
    with _PROBES_LOCK:
        if not _PROBES:
            try:  # what the checks import, imported in this thread: an import in the
                # background while the caller imported inductor's failed ("No module named")
                import torch._inductor.codecache
                import torch._inductor.cpp_builder
                import torch._inductor.cpu_vec_isa
                import torch.utils._filelock
                import torch.utils.cpp_extension  # noqa: F401
            except ImportError:  # another torch: inductor checks as it does
                work = None
            else:
                work = probe_vector_isas
            _PROBES.append(threading.Thread(target=work, daemon=True))
            _PROBES[0].start()
        return _PROBES[0]


def probe_vector_isas() -> None:
    """Run inductor's checks of the vector instruction sets the CPU reports, each in a
    thread of its own. Only a speed-up: where inductor's code differs, it checks as
    before."""
    try:
        from torch._inductor import cpu_vec_isa

        flags = cpu_vec_isa.x86_isa_checker()
        sets = [
            isa
            for isa in cpu_vec_isa.supported_vec_isa_list
            if all(flag in flags for flag in str(isa).split())
        ]
        if len(sets) > 1:
            with ThreadPoolExecutor(len(sets)) as pool:
                list(pool.map(bool, sets))
    except Exception:  # another torch's inductor
        return


# the most arguments a C loop may take for the driver to call it (AMSGrad's: 15)
DRIVEN = 32


@cache
def driver() -> Callable | None:
    """A C function ``(table, rows, loop, grads, column, count)`` that calls the C loop at
    address ``loop``, which takes ``count`` arguments (at most :data:`DRIVEN`), once per row
    of ``table`` (an int64 tensor of ``rows`` × ``count + 1``: each row the loop's arguments,
    data pointers and sizes, then the index of the row's gradient in ``grads``, an address
    of int64 data pointers; the row's argument ``column`` holds the row's offset into that
    gradient), the rows spread over the threads: one call from Python steps every param of
    a pack where it lies, and a step changes nothing in the table (only the gradients are
    new). Compiled once by inductor's C++ toolchain (stored for later processes: see
    :func:`stored_loop`); None where that fails, which tells ``"auto"`` that the toolchain
    cannot build what the fused backend compiles (a compiler without Python's headers or
    OpenMP)."""
    name = f"driver-{environment()}"
    stored = stored_loop(name)
    if stored is not None:
        return stored[0]
    from torch._inductor.codecache import CppPythonBindingsCodeCache

    vector_isa_probes().join()
    cases = "".join(
        f"    case {count}: return drive(table, rows, loop, grad, column, "
        f"std::make_index_sequence<{count}>());\n"
        for count in range(1, DRIVEN + 1)
    )
    source = (
        "#include <cstdint>\n"
        "#include <utility>\n"
        "template <std::size_t... I>\n"
        "static void drive(const int64_t* table, int64_t rows, int64_t loop,\n"
        "                  const int64_t* grad, int64_t column, std::index_sequence<I...>) {\n"
        "  constexpr int64_t count = sizeof...(I);\n"
        "  const auto call = reinterpret_cast<void (*)(decltype(I, int64_t())...)>(loop);\n"
        "  #pragma omp parallel for schedule(dynamic, 8)\n"
        "  for (int64_t r = 0; r < rows; ++r) {\n"
        "    int64_t row[count];\n"
        "    const int64_t* from = table + r * (count + 1);\n"
        "    for (int64_t c = 0; c < count; ++c) row[c] = from[c];\n"
        "    row[column] += grad[from[count]];\n"
        "    call(row[I]...);\n"
        "  }\n"
        "}\n"
        'extern "C" void kernel(const int64_t* table, int64_t rows, int64_t loop,\n'
        "                       int64_t grads, int64_t column, int64_t count) {\n"
        "  const auto grad = reinterpret_cast<const int64_t*>(grads);\n"
        "  switch (count) {\n"
        f"{cases}"
        "  }\n"
        "}\n"
    )
    try:
        function = CppPythonBindingsCodeCache.load_pybinding(
            ["const int64_t*", "int64_t", "int64_t", "int64_t", "int64_t", "int64_t"], source
        )
    except Exception:  # no C++ toolchain, or another torch's API: the copies then
        return None
    store_loop(name, function, [0])
    return function


def graph_module(compiled: Callable) -> dict[str, Any] | None:
    """The namespace of the module inductor generated for ``compiled`` (the callable
    compile_fx returned), found through the wrappers around it; None where there is none."""
    seen: set[int] = set()
    todo = [compiled]
    while todo and len(seen) < 200:
        value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        call = getattr(value, "current_callable", None)
        function = getattr(call, "__func__", call)
        module = getattr(function, "__globals__", None)
        if module is not None and module.get("call") is not None:
            return module
        for cell in getattr(value, "__closure__", None) or ():
            try:
                todo.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        for name in ("__wrapped__", "__self__"):
            if hasattr(value, name):
                todo.append(getattr(value, name))
        if type(value).__module__.startswith("torch."):
            todo.extend(vars(value).values() if hasattr(value, "__dict__") else ())
    return None


def kernel_for(
    rule: Rule,
    form: FusedForm,
    maximize: bool,
    tensors: Sequence[Tensor],
    names: Sequence[str],
    numbers: Scalars,
    grad_scale: Tensor | None,
    large: bool | None = None,
) -> Kernel:
    """The kernel of :func:`apply_update` for a param's ``tensors`` (param, gradient,
    state, laid out alike: :func:`stack`) in ``form``. Large and small tensors get kernels
    of their own (``large``: by the param's size unless given): a small one's loop is
    compiled for one thread (a pack's driver runs it on every member, spread over the
    threads; a parallel region of its own, entered once per row, cost 3-7 % of AMSGrad's
    step on 20 M params), a large one's over all of them."""
    param = tensors[0]
    key = (
        type(rule),
        form,
        tuple(names),
        tuple((n, v if isinstance(v, bool) else None) for n, v in numbers.items()),
        maximize,
        grad_scale is None or (grad_scale.dtype, grad_scale.device),
        param.device,
        tuple((t.dtype, t.shape[1:] if form.width else ()) for t in tensors),
        param.numel() >= LARGE if large is None else large,
    )
    kernel = _KERNELS.get(key)
    if kernel is None:
        scaled = grad_scale is not None
        tag = hashlib.sha256(repr(key).encode()).hexdigest()[:16]  # the same in every process
        kernel = _KERNELS[key] = Kernel(
            rule, form.options, names, numbers, maximize, scaled, form.width, key[-1], tag
        )
    return kernel


def kernel_numbers(scalars: Scalars, device: torch.device) -> dict[str, Any]:
    """The rule's numbers as 0-dim float64 tensors on ``device``: a changed value is then an
    input of the kernel, never a recompile or a constant of its graph, and what the update
    computes from them (1 − β) is computed in double precision, as from the Python floats
    of the eager backend. Booleans choose code and pass through."""
    return {
        name: value
        if isinstance(value, bool)
        else torch.as_tensor(value, dtype=torch.float64, device=device).reshape(())
        for name, value in scalars.items()
    }


def numbers_of(rule: Rule, group: Group) -> tuple[str, ...]:
    """The names of a group's 0-dim state: ``step`` where the rule counts steps, and the
    rule's scalar state."""
    return (*(("step",) if rule.counts_steps(group) else ()), *rule.scalar_state_names)


def install(states: Sequence[State], views: dict[str, list[Tensor]]) -> dict[str, list[int]]:
    """Make each state's entry ``name`` its view in ``views[name]``; returns where each
    view lies (its data pointer), for :func:`installed`."""
    for name, named in views.items():
        for state, view in zip(states, named, strict=True):
            state[name] = view
    return {name: list(map(Tensor.data_ptr, named)) for name, named in views.items()}


def installed(
    states: Sequence[State], views: dict[str, list[Tensor]], pointers: dict[str, list[int]]
) -> bool:
    """Whether every state still holds the views :func:`install` put there, each over the
    same memory (``.data = ...`` on a state tensor moves it)."""
    for name, named in views.items():
        if not all(map(is_, map(dict.get, states, repeat(name)), named)):
            return False
        if list(map(Tensor.data_ptr, named)) != pointers[name]:
            return False
    return True


class Counts:
    """The 0-dim state (``step``, NAdam's ``mu_product``) of params whose values agree, in
    one buffer per name of the backend's own; the params' states hold 0-dim views of it.
    A step then advances every step count at once and computes the rule's numbers once
    (the rule advances the first param's scalar state; it is copied to the others),
    where per param it would read, compare and advance each (≈ 4 µs a param). On the CPU
    the buffers are compared and written as memoryviews (:func:`host_values`), each torch
    op on them costing 20-60 µs where a step's memory traffic has emptied the caches.

    It serves a step while :meth:`holds`: the same states, each entry still the view it
    made over its memory, and the values still equal (an in-place reset of one step count
    breaks that); otherwise the backend builds another, or steps as without it."""

    def __init__(self, states: list[State], numbers: Sequence[str]) -> None:
        self.states = states
        self.buffers = {}
        self.views: dict[str, list[Tensor]] = {}
        with torch.enable_grad():  # views a user may edit in place, as they would any state
            for name in numbers:
                self.buffers[name] = torch.stack([state[name] for state in states])
                self.views[name] = list(self.buffers[name].unbind())
        self.pointers = install(states, self.views)
        self.values = {name: host_values(buffer) for name, buffer in self.buffers.items()}
        # each buffer but its first value and but its last: equal where every value is
        self.shifted = [
            (values[1:], values[:-1]) if values is not None else (buffer[1:], buffer[:-1])
            for buffer, values in zip(self.buffers.values(), self.values.values(), strict=True)
        ]

    @staticmethod
    def agreeing(states: Sequence[State], numbers: Sequence[str]) -> list[int]:
        """The indices of the ``states`` that hold every 0-dim state of ``numbers``, with the
        values, dtypes and devices most of them hold (read in one host sync)."""
        held = [
            index
            for index, state in enumerate(states)
            if all(type(state.get(n)) in PLAIN and state[n].dim() == 0 for n in numbers)
        ]
        if not numbers or not held:
            return held
        values = [states[index][name] for index in held for name in numbers]
        try:
            read = torch.stack(values).tolist()
        except RuntimeError:  # on several devices
            read = [value.item() for value in values]
        described = [(v, value.dtype, value.device) for v, value in zip(read, values, strict=True)]
        width = len(numbers)
        keys = [tuple(described[i : i + width]) for i in range(0, len(described), width)]
        common = Counter(keys).most_common(1)[0][0]
        return [index for index, key in zip(held, keys, strict=True) if key == common]

    def holds(self, states: Sequence[State]) -> bool:
        """Whether the 0-dim state of ``states`` is still this one's (see the class)."""
        if len(states) != len(self.states) or not all(map(is_, states, self.states)):
            return False
        if not installed(states, self.views, self.pointers):
            return False
        return all(
            first == last if isinstance(first, memoryview) else torch.equal(first, last)
            for first, last in self.shifted
        )

    def advance(self) -> None:
        """Add 1 to every step count."""
        if "step" in self.buffers:
            self.spread("step", 1)

    def scalars(self, rule: Rule, group: Group, options: Any) -> Scalars:
        """The rule's numbers for every param (after :meth:`advance`)."""
        scalars = rule.scalars(group, self.states[0], options)  # advances its scalar state
        for name in rule.scalar_state_names:  # and the others' with it
            self.spread(name, 0)
        return scalars

    def spread(self, name: str, offset: int) -> None:
        """Make every value of buffer ``name`` its first plus ``offset`` (the values agree,
        :meth:`holds`, but where the rule has just changed the first)."""
        buffer, values = self.buffers[name], self.values[name]
        if values is None:
            if offset:
                buffer.add_(offset)
            else:
                buffer[1:].copy_(buffer[0])
            return
        # summed in a double, rounded to the buffer's dtype once as stored: as add_ rounds
        values[:] = array(values.format, [values[0] + offset]) * len(values)
        torch.autograd.graph.increment_version(buffer)  # as an op in place moves it


def host_values(buffer: Tensor) -> memoryview | None:
    """The values of ``buffer`` (contiguous, float32 or float64, on the CPU) as a memoryview
    of its memory, which Python reads, compares and writes without a torch op; None for
    another dtype or device."""
    code = {torch.float32: "f", torch.float64: "d"}.get(buffer.dtype)
    if code is None or not buffer.is_cpu:
        return None
    memory = (ctypes.c_ubyte * buffer.nbytes).from_address(buffer.data_ptr())
    return memoryview(memory).cast("B").cast(code)


def overlapping(params: Sequence[Tensor]) -> set[int]:
    """The ids of the contiguous ``params`` whose memory overlaps another's (tied weights
    made as two Parameters over one tensor, a param viewing part of another): a pack steps
    its members at once, the eager backend one after the other, each reading what the one
    before wrote."""
    spans = sorted(
        (param.data_ptr(), param.data_ptr() + param.numel() * param.element_size(), id(param))
        for param in params
        if param.numel()
    )
    found: set[int] = set()
    reach, reaching = -1, 0  # the furthest end so far, and whose
    for start, end, key in spans:
        if start < reach:
            found.update((key, reaching))
        if end > reach:
            reach, reaching = end, key
    return found


class Pack:
    """A group's small params of one dtype and device that step together, in one call (on
    the CPU its large params too: the driver spreads each over the threads in rows of
    :data:`ROW` elements).

    Their state lives in flat buffers of the pack's own, one per state tensor, and their
    0-dim state in :class:`Counts`; the entries of ``optimizer.state`` are views of them,
    so the state a user reads, saves or edits in place is the eager backend's. Params and
    gradients stay where they lie. On the CPU a step is one call of :func:`driver`, which
    runs the compiled update's C loop on each member where its param, gradient and state
    lie (:meth:`step_in_place`). Otherwise (a GPU, a gradient that is not contiguous) it
    copies params and gradients into two more buffers, runs the update once over them
    (torch's fused kernel where torch has the update, :meth:`Rule.torch_kernel`; the
    compiled one otherwise) and copies the params back. Either costs less than a kernel
    call per param (≈ 7 µs of host work each) or ten multi-tensor ops.

    A pack steps again when the same params are offered (a group's small params with
    gradients, in order) and :meth:`holds`; otherwise the backend builds another (the state
    is copied into new buffers; a tensor taken from the state before is then no longer
    the param's state) or steps the params as any other."""

    def __init__(
        self,
        offered: list[Tensor],
        members: list[Tensor],
        states: list[State],
        names: Sequence[str],
        numbers: Sequence[str],
    ) -> None:
        self.offered = offered
        self.members = members
        self.states = states  # the members' state dicts
        self.names = names  # the param-shaped state
        first = members[0]
        self.dtype, self.device = first.dtype, first.device
        self.shapes = [param.shape for param in members]
        self.sizes = [param.numel() for param in members]
        self.buffers: dict[str, Tensor] = {}
        self.views: dict[str, list[Tensor]] = {}
        self.pointers: dict[str, list[int]] = {}
        with torch.enable_grad():  # views a user may edit in place, as they would any state
            for name in names:  # (one at a time: the state replaced is freed before the next)
                self.buffers[name], self.views[name] = self.buffer()
                torch._foreach_copy_(self.views[name], [state[name] for state in states])
                self.pointers.update(install(states, {name: self.views[name]}))
        self.counts = Counts(states, numbers)
        self.where = [param.data_ptr() for param in members]  # where each param lies
        # the ids of the optimizer's state keys and values when the members' states were
        # last found in it (see same_states)
        self.seen: tuple[list[int], list[int]] | None = None
        # the driver's table of the C loop's arguments, a row per ROW elements of a member
        self.table: Rows | None = None
        # buffers of the params and gradients, for a step by copies (see step)
        self.copies: tuple[list[Tensor], Tensor, list[Tensor], Tensor, list[Tensor]] | None = None

    def buffer(self) -> tuple[Tensor, list[Tensor]]:
        """A flat buffer for the members and its views shaped as each member."""
        flat = torch.empty(sum(self.sizes), dtype=self.dtype, device=self.device)
        pieces = flat.split(self.sizes)
        return flat, [piece.view(shape) for piece, shape in zip(pieces, self.shapes, strict=True)]

    @classmethod
    def build(
        cls,
        rule: Rule,
        group: Group,
        options: Any,
        offered: list[Tensor],
        states: States,
        least: int,
    ) -> Pack | None:
        """A pack of the ``offered`` params (a group's small params with gradients) that
        are plain, contiguous, of the first one's dtype and device, hold every state of the
        step (of their dtype, device and layout; the first step creates it as the eager
        backend does) and agree with most such params on every 0-dim state
        (:meth:`Counts.agreeing`); None where fewer than ``least`` are."""
        names = tuple(rule.state_names(options))
        first = offered[0]
        dtype, device = first.dtype, first.device
        if dtype.is_complex:
            return None
        members = []
        for param in offered:
            if type(param) not in PLAIN or param.dtype != dtype or param.device != device:
                continue
            tensors = [states[param].get(name) for name in names]
            if param.is_contiguous() and all(
                type(t) in PLAIN
                and t.dtype == dtype
                and t.device == device
                and t.shape == param.shape
                and t.is_contiguous()
                for t in tensors
            ):
                members.append(param)
        alone = overlapping(members)  # the eager backend steps them one after the other
        members = [param for param in members if id(param) not in alone]
        entries = [states[param] for param in members]
        numbers = numbers_of(rule, group)
        kept = Counts.agreeing(entries, numbers) if len(members) >= least else []
        if len(kept) < least:
            return None
        members, entries = [members[i] for i in kept], [entries[i] for i in kept]
        return cls(offered, members, entries, names, numbers)

    def holds(self, offered: Sequence[Tensor], states: States) -> bool:
        """Whether the pack steps ``offered``: the params it was built for, each still
        where it lay (``p.data = ...`` moves it), of its shape and dtype and contiguous,
        holding the pack's views (over the pack's memory) as its state
        (:meth:`Counts.holds` for the 0-dim state)."""
        if len(offered) != len(self.offered) or not all(map(is_, offered, self.offered)):
            return False
        members = self.members
        if (
            list(map(Tensor.data_ptr, members)) != self.where
            or not all(map(eq, map(SHAPE, members), self.shapes))
            or not all(map(Tensor.is_contiguous, members))
            or {*map(DTYPE, members)} != {self.dtype}
            or not self.same_states(states)
        ):
            return False
        return installed(self.states, self.views, self.pointers) and self.counts.holds(self.states)

    def same_states(self, states: States) -> bool:
        """Whether ``states`` maps each member to the state dict the pack holds. Where the
        ids of its keys and values are, in order, those of the last time it did, it still
        does (members and their dicts are alive: no other object has their ids), which two
        C-level passes tell; otherwise each member is looked up (a lookup hashes a tensor
        in Python: ≈ 0.4 µs each, in the loop)."""
        seen = (list(map(id, states)), list(map(id, states.values())))
        if seen == self.seen:
            return True
        if not all(map(is_, map(states.get, self.members), self.states)):
            return False
        self.seen = seen
        return True

    def step(self, rule: Rule, group: Group, options: Any, grad_scale: Tensor | None) -> None:
        """One step of the members (with gradients), as the eager backend steps them: on the
        CPU, one call of the compiled update's C loop per member where it lies
        (:meth:`step_in_place`); otherwise over the buffers, the params and gradients
        copied in and the params copied back."""
        members = self.members
        grads = list(map(GRAD, members))
        self.counts.advance()
        tensors = [self.buffers[name] for name in self.names]
        in_place = (  # what the C loop can read as it lies: plain CPU memory
            self.device.type == "cpu"
            and {*map(type, grads)} <= PLAIN
            and all(map(attrgetter("is_cpu"), grads))
            and all(map(Tensor.is_contiguous, grads))
            and not any(map(Tensor.is_neg, grads))
            and (grad_scale is None or grad_scale.is_cpu)
        )
        scalars = None
        if in_place:
            scalars = self.counts.scalars(rule, group, options)
            if self.step_in_place(rule, group, options, grads, scalars, grad_scale):
                # the loop wrote params and state where autograd does not see it
                torch.autograd.graph.increment_version([*members, *tensors])
                return
        kernel = None if self.dtype in LOW_PRECISION else rule.torch_kernel(group, options)
        if kernel is None and scalars is None:
            scalars = self.counts.scalars(rule, group, options)
        if self.copies is None:
            self.copies = (
                [param.view(-1) for param in members],
                *self.buffer(),
                *self.buffer(),
            )
        flat, param, param_views, grad, grad_views = self.copies
        torch._foreach_copy_(grad_views, grads)
        torch.cat(flat, out=param)  # (1-D views of the members: one op)
        if kernel is not None:
            steps = self.counts.views.get("step", [])[:1]
            kernel([param], [grad], [[t] for t in tensors], steps, (), grad_scale)
        else:
            stacked = [param, grad, *tensors]
            form = rule.fused_form(param, options)
            numbers = kernel_numbers(scalars, self.device)
            compiled = kernel_for(
                rule, form, bool(group["maximize"]), stacked, self.names, numbers, grad_scale
            )
            compiled.bind(stacked, compiled.inputs(numbers, grad_scale))()
        # the kernels wrote the state where autograd does not see it (its views: through
        # the buffers); the params move by the copy back
        torch.autograd.graph.increment_version(tensors)
        torch._foreach_copy_(members, param_views)
        if not in_place and self.device.type == "cpu":
            self.copies = None  # a step by copies is rare there: its buffers are not kept

    def step_in_place(
        self,
        rule: Rule,
        group: Group,
        options: Any,
        grads: list[Tensor],
        scalars: Scalars,
        grad_scale: Tensor | None,
    ) -> bool:
        """The step as one call of :func:`driver`: the C loop of the compiled update (the
        kernel for small params) on each member's param, gradient (contiguous) and state
        where they lie, the members spread over the threads. Where the members lie and the
        state's views lie is what :meth:`holds` checked; only the gradients and the numbers
        are new at each step. False, with nothing done, where there is no C loop to call."""
        first = [self.members[0], grads[0], *(self.views[name][0] for name in self.names)]
        form = rule.fused_form(first[0], options)
        maximize = bool(group["maximize"])
        kernel = kernel_for(
            rule, form, maximize, first, self.names, scalars, grad_scale, large=False
        )
        if self.table is None or self.table.kernel is not kernel:
            fixed = {0: self.where, **{2 + i: self.pointers[n] for i, n in enumerate(self.names)}}
            self.table = Rows.build(kernel, first, self.sizes, fixed, scalars, grad_scale)
            if self.table is None:
                return False
        self.table.step(grads, scalars, grad_scale)
        return True


class Rows:
    """A pack's table for :func:`driver`: a row per :data:`ROW` elements of a member (a
    large one spreads over the threads), each the C loop's arguments moved to the row's
    first element, the gradient's as the offset from its member's. The kernel's numbers
    are 0-dim views of one buffer of the table's own, which each step rewrites: a step
    changes nothing in the table (where the gradient scale is an input, but its column)
    and runs no torch op, each of which costs 10-30 µs after a backward."""

    def __init__(
        self,
        kernel: Kernel,
        run: Callable,
        address: int,
        table: Tensor,
        column: int,
        values: array,
        scale_column: int | None,
    ) -> None:
        self.kernel, self.driver, self.address, self.table = kernel, run, address, table
        self.column = column  # the gradient's column
        self.count = table.shape[1] - 1  # the C loop's arguments
        self.values = values  # the numbers' buffer, in the order of kernel.tensor_numbers
        self.scale_column = scale_column
        self.scale_pointer = 0

    @classmethod
    def build(
        cls,
        kernel: Kernel,
        first: list[Tensor],
        sizes: list[int],
        fixed: dict[int, list[int]],
        scalars: Scalars,
        grad_scale: Tensor | None,
    ) -> Rows | None:
        """The table of ``kernel`` for members of ``sizes`` whose tensors lie at ``fixed``
        (an index into ``[param, gradient, *state]``: each member's data pointer); None where
        there is no C loop or driver. ``first``: the first member's tensors, laid out as
        every member's."""
        names = kernel.tensor_numbers
        values = array("d", [0.0] * max(1, len(names)))
        views = torch.frombuffer(values, dtype=torch.float64).unbind()
        inputs = kernel.inputs(dict(zip(names, views, strict=False)), grad_scale)
        values[: len(names)] = array("d", map(scalars.__getitem__, names))
        loop = kernel.c_loop(first, inputs)
        run = loop and len(loop[1]) <= DRIVEN and driver()
        if not run or 1 not in loop[1]:
            return None
        address, order = loop
        element = first[0].element_size()
        rows = [
            (member, start, min(ROW, size - start))
            for member, size in enumerate(sizes)
            for start in range(0, max(size, 1), ROW)
        ]
        table = []
        for member, start, length in rows:
            row = []
            for index in order:
                if index == -1:
                    row.append(length)
                elif index == 1:
                    row.append(start * element)
                elif index in fixed:
                    row.append(fixed[index][member] + start * element)
                else:
                    row.append(inputs[index - len(first)].data_ptr())
            table.append([*row, member])
        scaled = len(first) + len(inputs) - 1 if grad_scale is not None else None
        return cls(
            kernel,
            run,
            address,
            torch.tensor(table, dtype=torch.int64),
            order.index(1),
            values,
            order.index(scaled) if scaled in order else None,
        )

    def step(self, grads: list[Tensor], scalars: Scalars, grad_scale: Tensor | None) -> None:
        """Run the C loop over every row, on the members' ``grads`` (contiguous, of the
        members' shapes) with the step's numbers and gradient scale."""
        names = self.kernel.tensor_numbers
        self.values[: len(names)] = array("d", map(scalars.__getitem__, names))
        if self.scale_column is not None and grad_scale.data_ptr() != self.scale_pointer:
            self.scale_pointer = grad_scale.data_ptr()
            self.table[:, self.scale_column] = self.scale_pointer
        pointers = array("q", map(Tensor.data_ptr, grads))
        self.driver(
            self.table,
            len(self.table),
            self.address,
            pointers.buffer_info()[0],
            self.column,
            self.count,
        )


class FusedBackend:
    """Runs a rule's compiled update over the params where they lie; holds its packs
    (:class:`Pack`) and shares the compiled kernels with every optimizer of the process."""

    def __init__(self, packed: int = PACKED) -> None:
        """``packed``: how many small params with gradients a group needs to step as a pack."""
        self.packed = packed
        # per group: its pack, and the 0-dim state of its params that step by a kernel call
        # each; kept by the group's list of params (which a load_state_dict keeps in the
        # new group it makes: the entry is then replaced, never left behind)
        self.packs: dict[int, tuple[list[Tensor], Group, Pack]] = {}
        self.counts: dict[int, tuple[list[Tensor], Group, Counts]] = {}

    def step_group(
        self,
        rule: Rule,
        group: Group,
        params: Sequence[Tensor],
        states: States,
        grad_scale: Tensor | None = None,
    ) -> list[Sums | None]:
        options = rule.options(group)
        if eager_only(group, params):
            # sharded params (FSDP2) and compact state step as on the eager backend, each
            # param through the compiled kernel where its layout allows
            return eager_step_group(rule, group, params, states, grad_scale, self.per_tensor)
        rest = self.step_pack(rule, group, options, params, states, grad_scale)
        rest = step_torch_kernel(rule, group, options, rest, states, grad_scale)
        if not rest:
            return [None] * len(params)
        entries = [states[param] for param in rest]
        scalars_of = self.shared_numbers(rule, group, options, rest, entries)
        names = tuple(rule.state_names(options))
        maximize = bool(group["maximize"])
        sums: dict[int, Sums | None] = {}
        for param in params:
            sums[id(param)] = None  # the params torch's kernel stepped (the others: below)
        numbers: dict[tuple[Any, ...], Scalars] = {}
        kernels: dict[tuple[Any, ...], tuple[Kernel, list[Tensor]]] = {}
        launches: list[tuple[Tensor, Callable[[], Sums | None]]] = []
        written: list[Tensor] = []  # what the kernels write: params and state
        batches: Batches = {}
        batch = rule.multi_tensor and grad_scale is None
        for param, state, scalars in zip(rest, entries, scalars_of, strict=True):
            for name in names:
                if name not in state:
                    state[name] = rule.init_state(name, param, options)
            target, grad = real_view(param), real_view(param.grad)
            tensors = [real_view(state[name]) for name in names]
            small = target.numel() < LARGE
            if (
                batch
                and small
                and alike(target, grad, tensors)
                and add_to_batch(batches, scalars, target, grad, tensors)
            ):
                continue
            form = rule.fused_form(target, options)
            stacked = stack(form, target, grad, tensors)
            if stacked is None:
                arguments = (maximize, target, grad, names, tensors, scalars, grad_scale)
                sums[id(param)] = apply_update(rule, options, *arguments)
                continue
            where = (id(scalars), target.dtype, target.device)  # params that share numbers
            kind = (where, form, small, *[t.dtype for t in tensors])
            if form.width:
                kind += tuple(t.shape[1:] for t in stacked)
            found = kernels.get(kind)
            if found is None:
                if where not in numbers:
                    numbers[where] = kernel_numbers(scalars, target.device)
                arguments = (maximize, stacked, names, numbers[where], grad_scale)
                kernel = kernel_for(rule, form, *arguments)
                found = kernels[kind] = (kernel, kernel.inputs(numbers[where], grad_scale))
            launches.append((param, found[0].bind(stacked, found[1])))
            written.append(param)
            written.extend(tensors)
        step_batches(rule, options, maximize, names, batches)
        for param, launch in launches:
            sums[id(param)] = launch() or None  # a graph that returns nothing: ()
        # the kernels wrote params and state where they lie, unseen by autograd: their
        # versions move, as eager's in-place ops move them
        torch.autograd.graph.increment_version(written)
        return [sums[id(param)] for param in params]

    def shared_numbers(
        self,
        rule: Rule,
        group: Group,
        options: Any,
        params: Sequence[Tensor],
        entries: list[State],
    ) -> Sequence[Scalars]:
        """Each param's numbers, its step counted (:func:`start_step` and
        :func:`shared_scalars`); through the group's :class:`Counts` where it holds, which
        a step whose params all shared their numbers builds for the next."""
        counts = of_group(self.counts, group)
        if counts is not None and counts.holds(entries):
            counts.advance()
            return [counts.scalars(rule, group, options)] * len(params)
        start_step(rule, group, options, params, entries)
        scalars_of = shared_scalars(rule, group, options, entries)
        numbers = numbers_of(rule, group)
        if (
            rule.multi_tensor  # (the others' numbers may read more than 0-dim state)
            and numbers
            and len(params) > 1
            and all(scalars is scalars_of[0] for scalars in scalars_of)
            and len(Counts.agreeing(entries, numbers)) == len(entries)
        ):
            self.counts[id(group["params"])] = (group["params"], group, Counts(entries, numbers))
        return scalars_of

    def step_pack(
        self,
        rule: Rule,
        group: Group,
        options: Any,
        params: Sequence[Tensor],
        states: States,
        grad_scale: Tensor | None,
    ) -> Sequence[Tensor]:
        """Step the group's small params (on the CPU, all of them) as one pack where at
        least :data:`PACKED` of them have gradients (see :class:`Pack`); returns the params
        left to step."""
        if not rule.multi_tensor or len(params) < self.packed:
            return params
        if all(map(attrgetter("is_cpu"), params)):  # the driver steps large ones as well
            offered = params
        else:
            offered = list(compress(params, map(LARGE.__gt__, map(Tensor.numel, params))))
        if len(offered) < self.packed:
            return params
        pack = of_group(self.packs, group)
        if pack is None or not pack.holds(offered, states):
            pack = Pack.build(rule, group, options, offered, states, self.packed)
            if pack is None:
                self.packs.pop(id(group["params"]), None)
                return params
            self.packs[id(group["params"])] = (group["params"], group, pack)
        pack.step(rule, group, options, grad_scale)
        if len(pack.members) == len(params):
            return []
        members = set(map(id, pack.members))
        return [param for param in params if id(param) not in members]

    @staticmethod
    def per_tensor(
        rule: Rule,
        options: Any,
        maximize: bool,
        param: Tensor,
        grad: Tensor,
        names: Sequence[str],
        tensors: Sequence[Tensor],
        scalars: Scalars,
        grad_scale: Tensor | None,
    ) -> Sums | None:
        """One param as the eager backend steps it (same arguments as :func:`apply_update`),
        through the compiled kernel where its tensors stack (see :func:`stack`)."""
        form = rule.fused_form(param, options)
        stacked = stack(form, param, grad, tensors)
        arguments = (maximize, param, grad, names, tensors, scalars, grad_scale)
        if stacked is None or not param.numel():
            return apply_update(rule, options, *arguments)
        numbers = kernel_numbers(scalars, param.device)
        kernel = kernel_for(rule, form, maximize, stacked, names, numbers, grad_scale)
        return kernel.bind(stacked, kernel.inputs(numbers, grad_scale))() or None


def of_group(table: dict[int, tuple[list[Tensor], Group, Any]], group: Group) -> Any:
    """The entry of ``table`` (:attr:`FusedBackend.packs` or ``counts``) made for ``group``,
    or None (none made, or made for the group a load_state_dict replaced)."""
    entry = table.get(id(group["params"]))
    return entry[2] if entry is not None and entry[1] is group else None


def step_torch_kernel(
    rule: Rule,
    group: Group,
    options: Any,
    params: Sequence[Tensor],
    states: States,
    grad_scale: Tensor | None,
) -> list[Tensor]:
    """Step the params that torch's own fused kernel for this update can (see
    :meth:`Rule.torch_kernel`): its tensors of one dtype, contiguous or laid out alike, its
    missing state then created (rules with a kernel of torch's keep no scalar state but
    ``step``). Returns the params left to step."""
    if not params:
        return []
    kernel = rule.torch_kernel(group, options)
    if kernel is None or torch.is_grad_enabled():  # no kernel of torch's records autograd
        return list(params)
    names = rule.state_names(options)
    counts = rule.counts_steps(group)
    grads = list(map(GRAD, params))
    entries = [states[param] for param in params]
    columns = state_columns(entries, names)
    if columns is not None and all_laid(params, grads, columns):  # the common case
        steps = list(map(step_count, entries)) if counts else []
        advance(steps)
        kernel(list(params), grads, columns, steps, (), grad_scale)
        torch.autograd.graph.increment_version(list(params))
        return []
    rest = []
    steps = []
    lists: dict[tuple[Any, ...], list[list[Tensor]]] = {}
    for param in params:
        state = states[param]
        try:
            held, missing = [state[name] for name in names], ()
        except KeyError:
            held = [state[name] for name in names if name in state]
            missing = tuple(name for name in names if name not in state)
        # state created for the step is zeros like the param: of its dtype and layout
        laid = torch_layout(param, param.grad, held)
        if laid is None:
            rest.append(param)
            continue
        step = step_count(state) if counts else None
        if missing or param.dtype.is_complex:
            for name in missing:
                state[name] = rule.init_state(name, param, options)
            tensors = [real_view(state[name]) for name in names]
            laid = torch_layout(real_view(param), real_view(param.grad), tensors)
        if step is not None:
            steps.append(step)
            laid.append(step)
        lists.setdefault((missing, laid[0].dtype, laid[0].device), []).append([param, *laid])
    advance(steps)
    for (missing, _, _), members in lists.items():
        columns = [list(column) for column in zip(*members, strict=True)]
        if not counts:
            columns.append([])
        owners, target, grad, *tensors, owned = columns
        kernel(target, grad, tensors, owned, missing, grad_scale)
        # torch's kernels write the params without moving their autograd versions; eager's
        # in-place ops move them (a graph built before the step then refuses backward)
        torch.autograd.graph.increment_version(owners)
    return rest


def eager_only(group: Group, params: Sequence[Tensor]) -> bool:
    """Whether a group steps on the eager backend whatever the backend asked: DTensor
    shards (FSDP2) and compact state."""
    state_dtype = group.get("state_dtype")
    return any_dtensor(params) or (
        state_dtype is not None
        and any(storage(state_dtype, p.dtype, p.numel()) is not None for p in params)
    )


class AutoBackend:
    """``backend="auto"``: torch's fused kernel where torch has the rule's update for the
    group's options (:meth:`Rule.torch_kernel`), over the params it can take; the fused
    backend for a CPU group of :data:`AUTO_FUSED` param elements or more whose update torch
    has no kernel for (on Linux, where inductor finds a C++ compiler and that compiler
    builds the pack's :func:`driver`, before anything steps); the eager backend for
    everything else."""

    def __init__(self, fused_from: int = AUTO_FUSED) -> None:
        """``fused_from``: how many param elements a group needs to step fused."""
        self.fused_from = fused_from
        self.fused = FusedBackend()

    def step_group(
        self,
        rule: Rule,
        group: Group,
        params: Sequence[Tensor],
        states: States,
        grad_scale: Tensor | None = None,
    ) -> list[Sums | None]:
        rest = params
        if not eager_only(group, params):
            options = rule.options(group)
            if rule.torch_kernel(group, options) is None:
                if self.pays(group):
                    return self.fused.step_group(rule, group, params, states, grad_scale)
            elif grad_scale is None:
                rest = step_torch_kernel(rule, group, options, params, states, None)
                if not rest:
                    return [None] * len(params)
        if len(rest) == len(params):
            return eager_step_group(rule, group, params, states, grad_scale)
        sums: dict[int, Sums | None] = dict.fromkeys(map(id, params))
        for param, result in zip(rest, eager_step_group(rule, group, rest, states), strict=True):
            sums[id(param)] = result
        return [sums[id(param)] for param in params]

    def pays(self, group: Group) -> bool:
        """Whether the group's update pays for its compile: on the CPU, without autograd,
        its params (with a gradient or not: the choice stays) hold ``fused_from`` elements
        or more."""
        members = group["params"]
        return (
            not torch.is_grad_enabled()
            and sum(map(Tensor.numel, members)) >= self.fused_from
            and all(map(attrgetter("is_cpu"), members))
            and compiler_found()
            and driver() is not None  # the toolchain builds (with Python's headers, OpenMP)
        )


@cache
def compiler_found() -> bool:
    """Whether inductor finds the C++ compiler a CPU kernel needs, on Linux (elsewhere, as
    without one, ``"auto"`` steps on the eager backend: a macOS compiler without OpenMP
    fails inductor's build, and the fused backend has run on Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return shutil.which(get_cpp_compiler()) is not None
    except Exception:  # none found (inductor raises), or another torch's API
        return False


def all_laid(
    params: Sequence[Tensor], grads: Sequence[Tensor], columns: Sequence[Sequence[Tensor]]
) -> bool:
    """Whether every param steps by torch's kernel as it lies (:func:`torch_layout`'s first
    case, for many params at once in C-level passes): plain tensors of one dtype, neither
    bfloat16, float16 nor complex (:func:`all_alike`), on one device, each contiguous and
    of its param's shape (``columns``: each state tensor's column over the params), and no
    gradient negated lazily."""
    if not all_alike(params, grads, columns) or any(map(Tensor.is_neg, grads)):
        return False
    device, shapes = params[0].device, list(map(SHAPE, params))
    return all(
        all(map(Tensor.is_contiguous, column))
        and all(map(eq, map(SHAPE, column), shapes))
        and all(map(eq, map(DEVICE, column), repeat(device)))
        for column in (params, grads, *columns)
    )


def torch_layout(param: Tensor, grad: Tensor, tensors: Sequence[Tensor]) -> list | None:
    """``param``, ``grad`` and the state ``tensors`` as torch's fused kernels take them:
    one dtype (the gradient's is the param's: the optimizer checks it), and contiguous or
    (as 1-D views in memory order) laid out alike; None otherwise, and for bfloat16 and
    float16: torch's kernels round the state before the param's update reads it, where
    adamkit's backends round each tensor once at the end (an Adagrad step of a bfloat16
    model differed by 0.8 % of a weight's norm), and where the gradient is not
    :func:`readable` (torch's kernels refuse one negated lazily)."""
    dtype = param.dtype
    if dtype in LOW_PRECISION or grad.is_sparse:  # sparse: the eager backend's sparse form
        return None
    if not readable(param, grad):
        return None
    for tensor in tensors:
        if tensor.dtype != dtype:
            return None
    if param.is_contiguous() and grad.is_contiguous():
        shape = param.shape
        for tensor in tensors:
            if not tensor.is_contiguous() or tensor.shape != shape:
                break
        else:
            return [param, grad, *tensors]
    stacked = stack(FusedForm(0, None), param, grad, tensors)
    return None if stacked is None else [flat(tensor, 0) for tensor in stacked]


def readable(param: Tensor, grad: Tensor) -> bool:
    """Whether a kernel can read ``grad`` where it lies: on the param's device, and its
    values not negated lazily (a view with the negative bit, whose memory holds the
    values' negatives)."""
    return not grad.is_neg() and grad.device == param.device


def stack(form: Any, param: Tensor, grad: Tensor, tensors: Sequence[Tensor]) -> list | None:
    """``param``, ``grad`` and the state ``tensors`` where the kernel can step them as they
    lie: alike in shape and in memory order (contiguous, or dense with the same strides),
    so that the kernel reads them as 1-D tensors in memory order; for ND-Adam's vectors
    (``form.width`` > 0) contiguous with the same rows (each state as (rows, its elements
    per row)). None otherwise (a state in another memory order or of another shape, a
    strided view): the param then steps as on the eager backend. The tensors are returned
    as they are; :func:`flat` views them as the kernel's graph takes them. A gradient that
    is not :func:`readable` steps as on the eager backend too."""
    if form is None or not readable(param, grad):
        return None
    every = [param, grad, *tensors]
    if form.width:
        rows = param.shape[:1]
        for tensor in every:
            if not tensor.is_contiguous() or tensor.dim() != param.dim():
                return None
            if tensor.shape[:1] != rows:
                return None
        return every
    shape = param.shape
    contiguous = True
    for tensor in every:
        if tensor.shape != shape:
            return None
        contiguous = contiguous and tensor.is_contiguous()
    if contiguous:
        return every
    dense = param.is_contiguous(memory_format=torch.channels_last) or param.is_contiguous(
        memory_format=torch.channels_last_3d
    )
    if not dense or any(tensor.stride() != param.stride() for tensor in every):
        return None
    return every


def flat(tensor: Tensor, width: int) -> Tensor:
    """A tensor of :func:`stack` as the kernel's graph takes it: its rows of ``width``
    elements, or (``width`` 0) its elements in memory order."""
    if width:
        return tensor.view(tensor.shape[0], -1)
    if tensor.is_contiguous():
        return tensor.view(-1)
    return tensor.as_strided((tensor.numel(),), (1,))
