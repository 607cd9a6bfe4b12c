"""adamkit inside the rest of PyTorch (TESTING.md A7, A10, F2): every torch LR scheduler,
autocast in bfloat16 with GradScaler on the CPU, torch.compile, and PyTorch Lightning's
Trainer (where the optional ``lightning`` extra is installed)."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch.optim import lr_scheduler

import adamkit

from registry import OPTIM_DB

RECORDS = [pytest.param(info, id=info.name) for info in OPTIM_DB]
STEPS = 30


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


def cycles_momentum(optimizer) -> bool:
    group = optimizer.param_groups[0]
    return "betas" in group or "momentum" in group


SCHEDULERS = {
    "StepLR": lambda o: lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
    "MultiStepLR": lambda o: lr_scheduler.MultiStepLR(o, milestones=[5, 15], gamma=0.5),
    "ConstantLR": lambda o: lr_scheduler.ConstantLR(o, factor=0.5, total_iters=10),
    "LinearLR": lambda o: lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=10),
    "ExponentialLR": lambda o: lr_scheduler.ExponentialLR(o, gamma=0.95),
    "PolynomialLR": lambda o: lr_scheduler.PolynomialLR(o, total_iters=STEPS, power=2.0),
    "CosineAnnealingLR": lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=STEPS),
    "CosineAnnealingWarmRestarts": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 7),
    "CyclicLR": lambda o: lr_scheduler.CyclicLR(
        o,
        base_lr=o.param_groups[0]["lr"] / 4,
        max_lr=o.param_groups[0]["lr"],
        step_size_up=5,
        cycle_momentum=cycles_momentum(o),
        base_momentum=0.8,
        max_momentum=0.9,
    ),
    "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(
        o, max_lr=o.param_groups[0]["lr"], total_steps=STEPS, cycle_momentum=cycles_momentum(o)
    ),
    "ReduceLROnPlateau": lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=2),
    "LambdaLR": lambda o: lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1 + 0.1 * t)),
    "MultiplicativeLR": lambda o: lr_scheduler.MultiplicativeLR(o, lambda t: 0.97),
    "SequentialLR": lambda o: lr_scheduler.SequentialLR(
        o,
        [
            lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=5),
            lr_scheduler.ExponentialLR(o, 0.9),
        ],
        milestones=[5],
    ),
    "ChainedScheduler": lambda o: lr_scheduler.ChainedScheduler(
        [lr_scheduler.ConstantLR(o, factor=0.5, total_iters=5), lr_scheduler.ExponentialLR(o, 0.95)]
    ),
}


def test_every_torch_scheduler_is_covered():
    """ "All of torch's LR schedulers" stays true: a scheduler a new torch adds fails here."""
    public = {
        name
        for name, value in vars(lr_scheduler).items()
        if inspect.isclass(value)
        and not name.startswith("_")
        and name not in ("LRScheduler", "Optimizer")
        and (issubclass(value, lr_scheduler.LRScheduler) or name == "ReduceLROnPlateau")
    }
    assert public == set(SCHEDULERS)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("info", RECORDS)
def test_trains_with_every_torch_scheduler(info, name):
    """A7: 30 steps of ``optimizer.step(); scheduler.step()``: the loss goes down, no warning
    (neither torch's step-order warning nor "optimizer.step() has been overridden"), and the
    lr each step reads is the group's, which the scheduler set."""
    params, loss = problem()
    optimizer = info.cls(params, **info.sweep[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler = SCHEDULERS[name](optimizer)
        first = loss().item()
        for _ in range(STEPS):
            optimizer.zero_grad()
            value = loss()
            value.backward()
            optimizer.step()
            scheduler.step(value.item()) if name == "ReduceLROnPlateau" else scheduler.step()
    assert loss().item() < first


@pytest.mark.parametrize("cls", [adamkit.Adam, adamkit.SGD, adamkit.SWATS])
def test_the_lr_a_scheduler_sets_is_the_lr_used(cls):
    """A7: the run under ExponentialLR equals, bit for bit, a run whose group lr is set by
    hand to the same numbers before each step."""
    kwargs = {"lr": 0.05, "momentum": 0.9} if cls is adamkit.SGD else {"lr": 0.05}
    runs = []
    for by_hand in (False, True):
        params, loss = problem()
        optimizer = cls(params, **kwargs)
        scheduler = None if by_hand else lr_scheduler.ExponentialLR(optimizer, 0.9)
        for t in range(10):
            if by_hand:
                optimizer.param_groups[0]["lr"] = 0.05 * 0.9**t
            optimizer.zero_grad()
            loss().backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        runs.append([p.detach().clone() for p in params])
    for scheduled, manual in zip(*runs, strict=True):
        assert torch.equal(scheduled, manual)


@pytest.mark.parametrize("info", RECORDS)
def test_a_tensor_lr_is_not_aliased_by_a_scheduler(info):
    """A7 (torch issues #126854, #162359): a scheduler writes a tensor lr in place, so the
    group keeps the user's tensor (identity, dtype, shape), while ``initial_lr`` is a copy
    that keeps the base value."""
    params, loss = problem()
    lr = torch.tensor(0.01)
    optimizer = info.cls(params, lr=lr)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(5):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        scheduler.step()
    group = optimizer.param_groups[0]
    assert group["lr"] is lr and lr.dtype == torch.float32 and lr.shape == ()
    assert lr.item() == pytest.approx(0.01 * 0.5**5)
    assert group["initial_lr"] is not lr and float(group["initial_lr"]) == pytest.approx(0.01)


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


AMP = ["Adam", "AdamW", "SGD", "SWATS", "NDAdam", "NAdam"]


@pytest.mark.parametrize("info", [r for r in RECORDS if r.values[0].name in AMP])
def test_autocast_bfloat16_with_grad_scaler(info):
    """F2 on the CPU: training under ``torch.autocast("cpu", bfloat16)`` with
    ``torch.amp.GradScaler("cpu")`` equals the same training without the scaler bit for bit
    (the scale is a power of two: scaling and unscaling are exact); an inf in a gradient at
    step 5 skips that step (params, state and step count as they were) and halves the scale;
    with an explicit ``scaler.unscale_`` first the result is the same."""
    batches = data(10)
    results = []
    for mode in ("plain", "scaler", "unscale"):
        model = mlp()
        optimizer = info.cls(model.parameters(), lr=1e-2)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if mode != "plain" else None
        for t, (x, y) in enumerate(batches):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.mse_loss(model(x).float(), y)
            if scaler is None:
                if t == 5:
                    continue  # the step the scaler skips
                loss.backward()
                optimizer.step()
                continue
            scaler.scale(loss).backward()
            if t == 5:
                model[0].weight.grad[0, 0] = float("inf")
                before = [p.detach().clone() for p in model.parameters()]
                state = {
                    k: v.clone()
                    for k, v in optimizer.state[model[0].weight].items()
                    if isinstance(v, torch.Tensor)
                }
                scale = scaler.get_scale()
            if mode == "unscale":
                scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
            if t == 5:
                assert all(
                    torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True)
                )
                for name, value in state.items():
                    assert torch.equal(optimizer.state[model[0].weight][name], value), name
                assert scaler.get_scale() == scale / 2
        results.append([p.detach().clone() for p in model.parameters()])
    for plain, scaled, unscaled in zip(*results, strict=True):
        assert torch.equal(scaled, plain) and torch.equal(unscaled, plain)


@pytest.mark.parametrize("cls", [adamkit.Adam, adamkit.SGD, adamkit.NDAdam])
def test_compiled_training(cls):
    """A10: a ``torch.compile``d model stepped by the optimizer, and a compiled function
    that runs forward, backward and ``optimizer.step()``, both train as eager training does
    (float32 tolerance: the compiled forward and backward may round differently)."""
    kwargs = {"lr": 1e-2, "momentum": 0.9} if cls is adamkit.SGD else {"lr": 1e-2}
    batches = data(10)
    results = []
    for mode in ("eager", "compiled model", "compiled step"):
        torch._dynamo.reset()
        model = mlp()
        optimizer = cls(model.parameters(), **kwargs)
        forward = torch.compile(model) if mode == "compiled model" else model

        def train_step(x, y, forward=forward, optimizer=optimizer):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(forward(x), y).backward()
            optimizer.step()

        step = torch.compile(train_step) if mode == "compiled step" else train_step
        for x, y in batches:
            step(x, y)
        results.append([p.detach().clone() for p in model.parameters()])
    for eager, *compiled in zip(*results, strict=True):
        for other in compiled:
            torch.testing.assert_close(other, eager, rtol=1e-5, atol=1e-6)


def test_lightning_trainer_steps_optimizer_and_scheduler():
    """PyTorch Lightning (the optional ``lightning`` extra): ``configure_optimizers``
    returning an adamkit optimizer and a per-step scheduler; after 20 steps of ``Trainer``
    the params equal those of a hand-written loop with the same batches, bit for bit."""
    lightning = pytest.importorskip("lightning")
    batches = data(20)

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = mlp()

        def training_step(self, batch, index):
            x, y = batch
            return torch.nn.functional.mse_loss(self.model(x), y)

        def configure_optimizers(self):
            optimizer = adamkit.AdamW(self.parameters(), lr=1e-2)
            scheduler = lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }

    module = Module()
    trainer = lightning.Trainer(
        max_steps=20,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))

    model = mlp()
    optimizer = adamkit.AdamW(model.parameters(), lr=1e-2)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    for trained, expected in zip(module.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(trained.detach(), expected.detach())
