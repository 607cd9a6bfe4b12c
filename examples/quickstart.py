"""adamkit in one screen: each optimizer trains a small MLP next to its torch.optim twin.

Run with ``make compare``. Prints, per optimizer, the final training loss of adamkit and of
torch.optim (where torch has the algorithm) and the largest parameter difference between
the two runs, then a few of the paper forms torch does not offer.
"""

from __future__ import annotations

import math

import torch

import adamkit

STEPS = 300


def problem() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.linspace(-math.pi, math.pi, 256).unsqueeze(1)
    y = torch.sin(2 * x) + 0.05 * torch.randn(x.shape, generator=generator)
    return x, y


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))


def train(optimizer_class, *, setup=None, **kwargs):
    """Train a fresh model; ``setup(net, optimizer)`` may prepare the weights and return an
    LR scheduler. Returns the final loss, the params and the optimizer."""
    x, y = problem()
    net = model()
    optimizer = optimizer_class(net.parameters(), **kwargs) if setup is None else None
    scheduler = None
    if setup is not None:
        optimizer, scheduler = setup(net, optimizer_class, kwargs)
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    with torch.no_grad():
        final = torch.nn.functional.mse_loss(net(x), y).item()
    return final, [p.detach() for p in net.parameters()], optimizer


def unit_vectors(net, optimizer_class, kwargs):
    """ND-Adam starts from unit-norm weight vectors."""
    adamkit.normalize_vectors_(net)
    return optimizer_class(net.parameters(), **kwargs), None


def warm_restarts(net, optimizer_class, kwargs):
    """AdamWR: paper-form AdamW, cosine annealing restarted after 50, 100 steps, and the
    weight decay normalized per period (256 points, full batch)."""
    optimizer = optimizer_class(adamkit.weight_decay_groups(net, 0.05), **kwargs)
    scheduler = adamkit.schedules.WarmRestarts(
        optimizer, T_0=50, T_mult=2, batch_size=256, dataset_size=256
    )
    return optimizer, scheduler


PAIRS = [
    ("SGD(momentum=0.9, nesterov)", dict(lr=0.05, momentum=0.9, nesterov=True), "SGD"),
    ("Adagrad", dict(lr=0.1), "Adagrad"),
    ("RMSprop(centered)", dict(lr=1e-2, centered=True), "RMSprop"),
    ("Adam", dict(lr=1e-2), "Adam"),
    ("AdamW", dict(lr=1e-2, weight_decay=1e-2), "AdamW"),
    ("Adam(amsgrad)", dict(lr=1e-2, amsgrad=True), "Adam"),
    ("Adamax", dict(lr=2e-2), "Adamax"),
    ("NAdam", dict(lr=1e-2), "NAdam"),
]

PAPER_FORMS = [
    ("SGD, EMA momentum", adamkit.SGD, dict(lr=0.5, momentum=0.9, momentum_form="ema")),
    (
        "SGD, Sutskever momentum",
        adamkit.SGD,
        dict(lr=0.05, momentum=0.9, momentum_form="sutskever"),
    ),
    ("Adam, efficient eps", adamkit.Adam, dict(lr=1e-2, eps_mode="efficient")),
    ("AMSGrad, Reddi Alg. 2", adamkit.AMSGrad, dict(lr=1e-2, bias_correction=False, eps=1e-12)),
    (
        "AdamW, paper decay",
        adamkit.AdamW,
        dict(lr=1e-2, weight_decay=1e-4, weight_decay_mode="decoupled_schedule"),
    ),
    ("Adamax, paper (no eps)", adamkit.Adamax, dict(lr=2e-2, eps_mode="none")),
    ("NAdam, constant mu", adamkit.NAdam, dict(lr=1e-2, mu_schedule="constant")),
    ("RMSprop, eps in sqrt", adamkit.RMSprop, dict(lr=1e-2, eps_in_sqrt=True)),
]

GENERALIZATION = [
    ("SGDW", adamkit.SGDW, dict(lr=0.05), None),
    ("SWATS", adamkit.SWATS, dict(lr=1e-2, switch_tolerance=2e-3), None),
    ("ND-Adam", adamkit.NDAdam, dict(lr=1e-2), unit_vectors),
    (
        "AdamWR (restarts, norm. decay)",
        adamkit.AdamW,
        dict(lr=1e-2, weight_decay_mode="decoupled_schedule"),
        warm_restarts,
    ),
]


def main() -> None:
    print(f"{STEPS} full-batch steps of a 1-32-1 MLP on sin(2x); adamkit next to torch.optim\n")
    print(f"{'optimizer':30} {'adamkit loss':>13} {'torch loss':>11} {'max |Δθ|':>10}")
    for label, kwargs, name in PAIRS:
        ours_loss, ours, _ = train(getattr(adamkit, name), **kwargs)
        torch_loss, theirs, _ = train(getattr(torch.optim, name), **kwargs, foreach=False)
        difference = max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True))
        print(f"{label:30} {ours_loss:13.6f} {torch_loss:11.6f} {difference:10.2e}")
    print("\nPaper forms torch.optim does not have:")
    for label, cls, kwargs in PAPER_FORMS:
        loss, _, _ = train(cls, **kwargs)
        print(f"{label:30} {loss:13.6f}")
    print("\nClosing the generalization gap (torch.optim has none of these):")
    for label, cls, kwargs, setup in GENERALIZATION:
        loss, _, optimizer = train(cls, setup=setup, **kwargs)
        note = ""
        if isinstance(optimizer, adamkit.SWATS):
            point = optimizer.switch_point(optimizer.param_groups[0]["params"][0])
            note = f"  switched to SGD at step {point.step}, lr {point.sgd_lr:.3g}" if point else ""
        print(f"{label:30} {loss:13.6f}{note}")


if __name__ == "__main__":
    main()
