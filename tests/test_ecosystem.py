"""adamkit in the rest of PyTorch, past what test_amp checks (TESTING.md A7, A10, F2): every
torch LR scheduler against torch.optim and by hand, tensor lrs under every scheduler,
GradScaler with a scale that grows and backs off and with gradient clipping, a compiled step
that must not recompile, and PyTorch Lightning (mixed precision, clipping, ReduceLROnPlateau,
resuming from its checkpoint; the optional ``lightning`` extra)."""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler

import adamkit

from registry import OPTIM_DB

STEPS = 30
BY_NAME = {info.name: info for info in OPTIM_DB}
Build = Callable[[torch.optim.Optimizer, float], Any]


def problem(seed: int = 0):
    """Least squares ‖W x + b − y‖² on a fixed batch, W with unit-norm rows (ND-Adam's
    weight vectors)."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, 4, generator=generator)
    weight /= weight.norm(dim=1, keepdim=True)
    bias = torch.randn(3, generator=generator)
    x, y = torch.randn(16, 4, generator=generator), torch.randn(16, 3, generator=generator)
    params = [weight.requires_grad_(), bias.requires_grad_()]

    def loss() -> torch.Tensor:
        return ((x @ params[0].t() + params[1] - y) ** 2).mean()

    return params, loss


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    adamkit.normalize_vectors_([model[0].weight, model[2].weight])
    return model


def data(steps: int):
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(32, 8, generator=generator), torch.randn(32, 2, generator=generator))
        for _ in range(steps)
    ]


def cycles_momentum(optimizer: torch.optim.Optimizer) -> bool:
    group = optimizer.param_groups[0]
    return "betas" in group or "momentum" in group


# Every scheduler from a base lr given as a float, so that no scheduler holds the user's tensor
# lr through its own arguments (OneCycleLR's max_lr, CyclicLR's max_lr). Each changes the lr
# within STEPS steps (checked), or a comparison would not see the lr at all.
SCHEDULERS: dict[str, Build] = {
    "StepLR": lambda o, lr: lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
    "MultiStepLR": lambda o, lr: lr_scheduler.MultiStepLR(o, milestones=[4, 15], gamma=0.5),
    "ConstantLR": lambda o, lr: lr_scheduler.ConstantLR(o, factor=0.5, total_iters=10),
    "LinearLR": lambda o, lr: lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=10),
    "ExponentialLR": lambda o, lr: lr_scheduler.ExponentialLR(o, gamma=0.9),
    "PolynomialLR": lambda o, lr: lr_scheduler.PolynomialLR(o, total_iters=STEPS, power=2.0),
    "CosineAnnealingLR": lambda o, lr: lr_scheduler.CosineAnnealingLR(o, T_max=STEPS),
    "CosineAnnealingWarmRestarts": lambda o, lr: lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=7, T_mult=2
    ),
    "CyclicLR": lambda o, lr: lr_scheduler.CyclicLR(
        o,
        base_lr=lr / 4,
        max_lr=lr,
        step_size_up=5,
        cycle_momentum=cycles_momentum(o),
        base_momentum=0.8,
        max_momentum=0.9,
    ),
    "OneCycleLR": lambda o, lr: lr_scheduler.OneCycleLR(
        o, max_lr=lr, total_steps=STEPS, cycle_momentum=cycles_momentum(o)
    ),
    # a 10 % improvement every other step or the lr halves: it does halve on these problems
    "ReduceLROnPlateau": lambda o, lr: lr_scheduler.ReduceLROnPlateau(
        o, factor=0.5, patience=1, threshold=0.1
    ),
    "LambdaLR": lambda o, lr: lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1 + 0.1 * t)),
    "MultiplicativeLR": lambda o, lr: lr_scheduler.MultiplicativeLR(o, lambda t: 0.95),
    "SequentialLR": lambda o, lr: lr_scheduler.SequentialLR(
        o,
        [
            lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=5),
            lr_scheduler.ExponentialLR(o, 0.9),
        ],
        milestones=[5],
    ),
    "ChainedScheduler": lambda o, lr: lr_scheduler.ChainedScheduler(
        [lr_scheduler.ConstantLR(o, factor=0.5, total_iters=5), lr_scheduler.ExponentialLR(o, 0.95)]
    ),
}
NAMES = sorted(SCHEDULERS)
WITH_TORCH = [info for info in OPTIM_DB if info.torch_kwargs(info.sweep[0]) is not None]
# the bitwise replay: the two simplest (as the brief of A7 asks) and those torch.optim lacks
REPLAYED = ["SGD", "Adam", "SGDW", "SWATS", "NDAdam"]


def test_every_torch_scheduler_is_built_here():
    """The scheduler tests of this file cover all of torch.optim.lr_scheduler's public
    schedulers: one that a new torch adds fails here until it is added to SCHEDULERS."""
    public = {
        name
        for name, value in vars(lr_scheduler).items()
        if inspect.isclass(value)
        and not name.startswith("_")
        and value.__module__ == lr_scheduler.__name__
        and (issubclass(value, lr_scheduler.LRScheduler) or name == "ReduceLROnPlateau")
        and value is not lr_scheduler.LRScheduler
    }
    assert public == set(SCHEDULERS)


def hyperparameters(group: dict[str, Any]) -> dict[str, Any]:
    """Everything in a param group but its params, copied."""
    return {key: copy.deepcopy(value) for key, value in group.items() if key != "params"}


def train(
    optimizer: torch.optim.Optimizer,
    params: list[torch.Tensor],
    loss: Callable[[], torch.Tensor],
    name: str | None,
    by_hand: list[dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """STEPS steps of ``optimizer.step(); scheduler.step()`` under scheduler ``name`` (none
    for None), or with every hyperparameter of the group set by hand from ``by_hand`` before
    each step. Returns the group's hyperparameters each step read, and the final params."""
    lr = float(optimizer.param_groups[0]["lr"])
    scheduler = SCHEDULERS[name](optimizer, lr) if name else None
    seen = []
    for t in range(STEPS):
        if by_hand is not None:
            optimizer.param_groups[0].update(copy.deepcopy(by_hand[t]))
        seen.append(hyperparameters(optimizer.param_groups[0]))
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
        if name == "ReduceLROnPlateau":
            scheduler.step(value.item())
        elif scheduler is not None:
            scheduler.step()
    return seen, [p.detach().clone() for p in params]


def lrs(seen: list[dict[str, Any]]) -> list[float]:
    return [float(group["lr"]) for group in seen]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("info", WITH_TORCH, ids=lambda info: info.name)
def test_scheduled_training_equals_torch_optim(info, name):
    """A7: the lr (and β1 or momentum, which OneCycleLR and CyclicLR cycle) that a torch
    scheduler sets is the one the step uses: 30 steps under the scheduler equal torch.optim's
    counterpart under the same scheduler, whose step reads the group as it is at that step.
    Float32 tolerance (test_parity bounds the per-step difference to torch at 1e-6 relative);
    an lr one step early or late, or a missed β1, moves the params by orders of magnitude
    more (the schedulers change the lr by 5 to 100 % from one step to the next)."""
    runs = []
    for cls, kwargs in ((info.cls, info.sweep[0]), (info.torch_cls, info.torch_kwargs({}))):
        params, loss = problem()
        runs.append(train(cls(params, **kwargs), params, loss, name))
    (ours_seen, ours), (torch_seen, theirs) = runs
    assert len(set(lrs(ours_seen))) > 1, "the scheduler never changed the lr"
    assert lrs(ours_seen) == lrs(torch_seen)
    for mine, expected in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("info", [BY_NAME[name] for name in REPLAYED], ids=REPLAYED)
def test_scheduled_training_equals_hyperparameters_set_by_hand(info, name):
    """A7: the run under a scheduler equals, bit for bit, a run of the same optimizer whose
    group hyperparameters (lr, initial_lr, betas or momentum, ...) are set by hand before each
    step to those the scheduler had set; and differs from the run given the same by hand but
    the lr, held at its first value: the step did read each step's lr."""
    params, loss = problem()
    seen, scheduled = train(info.cls(params, **info.sweep[0]), params, loss, name)
    assert len(set(lrs(seen))) > 1, "the scheduler never changed the lr"
    held = [{**hyper, "lr": seen[0]["lr"]} for hyper in seen]
    runs = []
    for by_hand in (seen, held):
        params, loss = problem()
        runs.append(train(info.cls(params, **info.sweep[0]), params, loss, None, by_hand))
    (replayed_seen, replayed), (_, constant) = runs
    assert lrs(replayed_seen) == lrs(seen)
    assert all(torch.equal(a, b) for a, b in zip(scheduled, replayed, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(scheduled, constant, strict=True))


def tensors_of(value: Any) -> list[torch.Tensor]:
    """The tensors in ``value``, a hyperparameter or a list of them (base_lrs)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_of(item)]
    return []


def scheduler_tensors(scheduler: Any, only: str | None = None) -> list[torch.Tensor]:
    """The tensors a scheduler and those it chains hold (``only`` the attribute named so,
    such as base_lrs)."""
    found = []
    for key, value in vars(scheduler).items():
        if key == "_schedulers":
            found += [t for child in value for t in scheduler_tensors(child, only)]
        elif key != "optimizer" and only in (None, key):
            found += tensors_of(value)
    return found


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("info", [BY_NAME["SGD"], BY_NAME["Adam"]], ids=["SGD", "Adam"])
def test_tensor_lr_under_every_scheduler(info, name, dtype):
    """A7 (torch issues #126854, #162359, #195984): with ``lr=torch.tensor(0.01)`` every
    scheduler writes the lr into the user's tensor: the group keeps that very tensor, of its
    shape and dtype, holding each step the lr a float-lr run's scheduler sets (to the dtype's
    rounding: float32 schedulers recompute from the rounded value, so they drift by a few
    ulps over 30 steps); no other group entry nor anything the scheduler holds (base_lrs,
    initial_lr) aliases it, and those keep their values; and the step uses the tensor's
    value of that step (bit for bit against a tensor lr filled by hand, the group's other
    hyperparameters set by hand to the scheduler's)."""
    lr = torch.tensor(0.01, dtype=dtype)
    params, loss = problem()
    optimizer = info.cls(params, lr=lr)
    scheduler = SCHEDULERS[name](optimizer, 0.01)
    base_lrs = [t.clone() for t in scheduler_tensors(scheduler, "base_lrs")]
    group = optimizer.param_groups[0]
    initial = {k: v.clone() for k, v in group.items() if isinstance(v, torch.Tensor) and k != "lr"}
    values, seen = [], []
    for _ in range(STEPS):
        assert group["lr"] is lr and lr.shape == () and lr.dtype == dtype
        values.append(lr.item())
        seen.append({k: v for k, v in hyperparameters(group).items() if k != "lr"})
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
        scheduler.step(value.item()) if name == "ReduceLROnPlateau" else scheduler.step()
    assert group["lr"] is lr and lr.shape == () and lr.dtype == dtype
    storage = lr.untyped_storage().data_ptr()
    others = [t for k, v in group.items() if k != "lr" for t in tensors_of(v)]
    for tensor in scheduler_tensors(scheduler) + others:
        assert tensor is not lr and tensor.untyped_storage().data_ptr() != storage
    after = scheduler_tensors(scheduler, "base_lrs")
    assert all(torch.equal(a, b) for a, b in zip(after, base_lrs, strict=True))
    for key, value in initial.items():
        assert torch.equal(group[key], value), key

    float_params, float_loss = problem()
    float_seen, _ = train(info.cls(float_params, lr=0.01), float_params, float_loss, name)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(values, lrs(float_seen), rtol=rtol, atol=rtol * 0.01)

    by_hand = torch.tensor(0.01, dtype=dtype)
    hand_params, hand_loss = problem()
    hand = info.cls(hand_params, lr=by_hand)
    for value, others in zip(values, seen, strict=True):
        by_hand.fill_(value)
        hand.param_groups[0].update(others)  # betas or momentum where cycled, initial_lr
        hand.zero_grad()
        hand_loss().backward()
        hand.step()
    assert all(torch.equal(a, b) for a, b in zip(params, hand_params, strict=True))

    # and as torch.optim steps with a tensor lr under the same scheduler (tolerance as in
    # test_scheduled_training_equals_torch_optim)
    theirs_lr = torch.tensor(0.01, dtype=dtype)
    theirs, theirs_loss = problem()
    torch_optimizer = info.torch_cls(theirs, **info.torch_kwargs({"lr": theirs_lr}))
    train(torch_optimizer, theirs, theirs_loss, name)
    for mine, expected in zip(params, theirs, strict=True):
        torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-6)


STEP_ORDER_WARNING = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"


@pytest.mark.parametrize("info", OPTIM_DB, ids=lambda info: info.name)
def test_scheduler_sees_the_optimizer_step(info):
    """A7: torch's scheduler counts our ``step``: in the right order nothing warns (neither
    the step-order warning nor "optimizer.step() has been overridden"), and in the wrong
    order torch's step-order warning does come, so the silence is not a blind spot."""
    for right_order in (True, False):
        params, loss = problem()
        optimizer = info.cls(params, **info.sweep[0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scheduler = lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
            for _ in range(3):
                optimizer.zero_grad()
                loss().backward()
                if right_order:
                    optimizer.step()
                    scheduler.step()
                else:
                    scheduler.step()
                    optimizer.step()
        messages = [str(w.message) for w in caught]
        if right_order:
            assert messages == []
        else:
            assert len(messages) == 1
            assert messages[0].startswith(STEP_ORDER_WARNING.replace("\\", ""))


# GradScaler ------------------------------------------------------------------------------

INF_AT = 5
CLIP = 0.5


def amp_run(info, mode: str):
    """10 steps of an MLP under autocast bf16 on the CPU. ``mode``: "plain" (no scaler; skips
    step INF_AT as the scaler does), "scaler", "clip" (no scaler, gradients clipped to norm
    CLIP; skips INF_AT), "unscale clip" (scaler.unscale_, clip, scaler.step). The scaler
    doubles its scale every 2 clean steps and the gradient of step INF_AT gets an inf.
    Returns the params, and for the scaled modes the snapshots around step INF_AT and the
    scale each step."""
    model = mlp()
    optimizer = info.cls(model.parameters(), lr=1e-2)
    scaled = mode in ("scaler", "unscale clip")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)
    scales, around = [], None
    for t, (x, y) in enumerate(data(10)):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        if not scaled:
            if t != INF_AT:
                loss.backward()
                if mode == "clip":
                    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
                optimizer.step()
            continue
        scales.append(scaler.get_scale())
        scaler.scale(loss).backward()
        if t == INF_AT:
            model[2].bias.grad[0] = float("inf")
            before = copy.deepcopy((list(model.parameters()), optimizer.state_dict()))
        if mode == "unscale clip":
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        scaler.step(optimizer)
        scaler.update()
        if t == INF_AT:
            around = before, copy.deepcopy((list(model.parameters()), optimizer.state_dict()))
    return [p.detach().clone() for p in model.parameters()], around, scales


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys() and a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index, state in a["state"].items():
        assert state.keys() == b["state"][index].keys()
        for name, value in state.items():
            other = b["state"][index][name]
            same = torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
            assert same, f"param {index}, {name}"


@pytest.mark.parametrize("info", OPTIM_DB, ids=lambda info: info.name)
def test_grad_scaler_with_a_changing_scale_and_clipping(info):
    """F2, autocast bf16 on the CPU, for every optimizer: with a scale that doubles every
    2 steps and halves at an inf (so the step must read the scale of its own step), the
    training equals the unscaled one bit for bit (every scale is a power of two: scaling and
    unscaling are exact, as no bf16 gradient here comes near overflow or underflow); the inf
    step changes no param and no state, the step count included, and halves the scale; and
    ``scaler.unscale_``, ``clip_grad_norm_``, ``scaler.step`` (the documented recipe for
    clipping) equals clipping unscaled gradients, bit for bit."""
    plain, _, _ = amp_run(info, "plain")
    clipped, _, _ = amp_run(info, "clip")
    assert not all(torch.equal(a, b) for a, b in zip(plain, clipped, strict=True))
    for mode, expected in (("scaler", plain), ("unscale clip", clipped)):
        params, ((before, before_state), (after, after_state)), scales = amp_run(info, mode)
        assert all(torch.equal(a, b) for a, b in zip(params, expected, strict=True)), mode
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True)), mode
        assert_same_state(before_state, after_state)
        assert scales[INF_AT + 1] == scales[INF_AT] / 2
        assert len(set(scales[: INF_AT + 1])) > 2  # it grew twice before the inf


# torch.compile ---------------------------------------------------------------------------


@pytest.fixture
def fresh_dynamo():
    """dynamo's caches emptied before and after, also after a failure."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda p, lr: torch.optim.Adam(p, lr=lr, foreach=False), id="torch.optim.Adam"
        ),
        pytest.param(
            lambda p, lr: adamkit.Adam(p, lr=lr),
            id="Adam",
        ),
        pytest.param(
            lambda p, lr: adamkit.SGD(p, lr=lr, momentum=0.9),
            id="SGD-momentum",
        ),
        pytest.param(
            lambda p, lr: adamkit.Adam(p, lr=lr, backend="fused"),
            id="Adam-fused",
        ),
    ],
)
def test_compiled_step_with_a_tensor_lr_does_not_recompile(make, fresh_dynamo):
    """A10: forward, backward and ``optimizer.step()`` compiled as one function, with a
    tensor lr that ExponentialLR changes every step: from the second call on nothing
    recompiles (``error_on_recompile``), and 10 steps equal eager training within float32
    tolerance (inductor may fuse and round the forward and backward differently).
    torch.optim.Adam is the control that the check holds where the step compiles; Adam and
    SGD with momentum are the two most used, the fused backend the one backend="auto" picks
    for models of 1 M elements and more."""
    results = []
    for compiled in (False, True):
        torch._dynamo.reset()
        model = mlp()
        optimizer = make(model.parameters(), torch.tensor(1e-2))
        scheduler = lr_scheduler.ExponentialLR(optimizer, 0.9)

        def train_step(x, y, model=model, optimizer=optimizer):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()

        step = torch.compile(train_step) if compiled else train_step
        batches = data(10)
        step(*batches[0])
        scheduler.step()
        with torch._dynamo.config.patch(error_on_recompile=True):
            for x, y in batches[1:]:
                step(x, y)
                scheduler.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


# PyTorch Lightning -----------------------------------------------------------------------

BATCHES = 10  # per epoch


def make_adamw(params):
    optimizer = adamkit.AdamW(params, lr=1e-2)
    return optimizer, lr_scheduler.OneCycleLR(optimizer, max_lr=2e-2, total_steps=2 * BATCHES)


def make_swats(params):
    optimizer = adamkit.SWATS(params, lr=1e-2, switch_tolerance=2e-3)  # to SGD at step 4
    return optimizer, lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.7)


def make_nadam(params):
    optimizer = adamkit.NAdam(params, lr=1e-2)
    # halves the lr at steps 9, 12, 15 and 19
    plateau = lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2, threshold=0.05)
    return optimizer, plateau


MAKERS = {"AdamW-OneCycleLR": make_adamw, "SWATS-StepLR": make_swats, "NAdam-Plateau": make_nadam}


def lightning_fit(make, root, precision="32-true", clip=None, resume=False):
    """Two epochs of BATCHES batches under Lightning's Trainer, the scheduler stepped per
    batch (ReduceLROnPlateau on the logged loss); with ``resume`` the first epoch is fitted,
    saved with ``trainer.save_checkpoint`` and resumed by a new module and Trainer. Lightning
    writes under ``root``."""
    lightning = pytest.importorskip("lightning")
    batches = data(BATCHES)

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = mlp()

        def training_step(self, batch, index):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.model(x).float(), y)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self):
            optimizer, scheduler = make(self.parameters())
            config = {"scheduler": scheduler, "interval": "step", "monitor": "loss"}
            return {"optimizer": optimizer, "lr_scheduler": config}

    def fit(epochs, checkpoint=None):
        module = Module()
        trainer = lightning.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            default_root_dir=root,
            precision=precision,
            gradient_clip_val=clip,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        loader = torch.utils.data.DataLoader(batches, batch_size=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's tips and deprecations
            trainer.fit(module, train_dataloaders=loader, ckpt_path=checkpoint)
        return module, trainer

    if not resume:
        module, trainer = fit(2)
    else:
        _, trainer = fit(1)
        path = f"{root}/resume.ckpt"
        trainer.save_checkpoint(path)
        module, trainer = fit(2, path)
    assert trainer.global_step == 2 * BATCHES
    return [p.detach().clone() for p in module.model.parameters()]


def hand_loop(make, autocast=False, clip=None):
    """The same two epochs, written out."""
    model = mlp()
    optimizer, scheduler = make(model.parameters())
    for _ in range(2):
        for x, y in data(BATCHES):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = torch.nn.functional.mse_loss(model(x).float(), y)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
                scheduler.step(loss.detach())
            else:
                scheduler.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("resume", [False, True], ids=["straight", "resumed"])
@pytest.mark.parametrize("name", MAKERS)
def test_lightning_trains_as_a_hand_written_loop(name, resume, tmp_path):
    """Lightning's Trainer with ``configure_optimizers`` returning an adamkit optimizer and a
    per-step scheduler (OneCycleLR cycling β1; StepLR over SWATS, which switches to SGD in
    the first epoch; ReduceLROnPlateau on the logged loss, which halves the lr in both
    epochs) ends, bit for bit, where a hand-written loop over the same batches does: one
    optimizer and one scheduler step per batch. Also when the second epoch resumes from
    Lightning's checkpoint, so that Lightning saved and restored both state dicts (SWATS'
    switch and Python floats, NAdam's mu_product, the schedulers')."""
    fitted = lightning_fit(MAKERS[name], tmp_path, resume=resume)
    expected = hand_loop(MAKERS[name])
    assert all(torch.equal(a, b) for a, b in zip(fitted, expected, strict=True))


@pytest.mark.parametrize(
    "clip",
    [
        None,
        1.0,
    ],
    ids=["no-clip", "clip"],
)
def test_lightning_bf16_mixed(clip, tmp_path):
    """Lightning's ``precision="bf16-mixed"`` on the CPU (and with ``gradient_clip_val``,
    clipping by norm) equals a hand-written loop under ``torch.autocast("cpu", bfloat16)``
    with ``clip_grad_norm_``, bit for bit."""
    fitted = lightning_fit(make_adamw, tmp_path, precision="bf16-mixed", clip=clip)
    expected = hand_loop(make_adamw, autocast=True, clip=clip)
    assert all(torch.equal(a, b) for a, b in zip(fitted, expected, strict=True))
