"""Self-checks of the float64 references in tests/reference/ against ALGORITHMS.md §24b closed forms
and identities between forms. Every check compares two independently computed quantities."""

from __future__ import annotations

import numpy as np
import pytest

from reference import adagrad, adam, adamax, adamw, amsgrad, nadam, rmsprop, sgd

ALL = [sgd, adagrad, rmsprop, adam, adamw, amsgrad, adamax, nadam]


def script(steps: int = 30, shape: tuple[int, ...] = (2, 3), seed: int = 0):
    rng = np.random.default_rng(seed)
    theta0 = rng.normal(size=shape)
    grads = [rng.normal(size=shape) * 10.0 ** rng.integers(-3, 3) for _ in range(steps)]
    return theta0, grads


def params(history):
    return np.stack([h["param"] for h in history])


def test_adam_paper_step_one():
    theta0, grads = script(1)
    lr, eps = 0.1, 1e-3
    for betas in [(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)]:
        got = adam(theta0, grads, lr=lr, betas=betas, eps=eps)[0]["param"]
        g = grads[0]
        np.testing.assert_allclose(got, theta0 - lr * g / (np.abs(g) + eps), rtol=1e-12)


def test_adam_efficient_step_one():
    theta0, grads = script(1)
    lr, eps = 0.1, 1e-3
    for betas in [(0.9, 0.999), (0.5, 0.9)]:
        got = adam(theta0, grads, lr=lr, betas=betas, eps=eps, eps_mode="efficient")[0]["param"]
        g = grads[0]
        expected = theta0 - lr * g / (np.abs(g) + eps / np.sqrt(1 - betas[1]))
        np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "options",
    [{}, {"amsgrad": True}, {"amsgrad": True, "amsgrad_max": "corrected"}, {"weight_decay": 0.1}],
)
def test_adam_eps_modes_agree_without_eps(options):
    theta0, grads = script(40)
    paper = adam(theta0, grads, lr=0.01, eps=0.0, **options)
    efficient = adam(theta0, grads, lr=0.01, eps=0.0, eps_mode="efficient", **options)
    np.testing.assert_allclose(params(paper), params(efficient), rtol=1e-12)
    # and with eps they must differ (ε_eff = ε̂/sqrt(1 - β2^t) in the efficient form)
    paper = adam(theta0, grads, lr=0.01, eps=1e-1, **options)
    efficient = adam(theta0, grads, lr=0.01, eps=1e-1, eps_mode="efficient", **options)
    assert not np.allclose(params(paper), params(efficient), rtol=1e-6)


def test_amsgrad_corrected_max_is_monotone_and_raw_is_max_of_raw_ema():
    theta0, grads = script(40)
    raw = amsgrad(theta0, grads, betas=(0.9, 0.99))
    corrected = amsgrad(theta0, grads, betas=(0.9, 0.99), amsgrad_max="corrected")
    running = np.zeros_like(theta0)
    for t, (r, c) in enumerate(zip(raw, corrected, strict=True), start=1):
        running = np.maximum(running, r["exp_avg_sq"])
        np.testing.assert_array_equal(r["max_exp_avg_sq"], running)
        assert np.all(c["max_exp_avg_sq"] >= r["exp_avg_sq"] / (1 - 0.99**t))


def test_adamw_zero_gradient_shrinks_geometrically():
    theta0, grads = script(25)
    zeros = [np.zeros_like(g) for g in grads]
    lr, wd = 0.05, 0.3
    for t, h in enumerate(adamw(theta0, zeros, lr=lr, weight_decay=wd), start=1):
        np.testing.assert_allclose(h["param"], theta0 * (1 - lr * wd) ** t, rtol=1e-12)


def test_decoupled_schedule_scales_decay_by_multiplier_only():
    theta0, grads = script(10)
    zeros = [np.zeros_like(g) for g in grads]
    etas = np.linspace(1.0, 0.1, len(grads))
    lr, wd = 0.05, 0.3
    history = adam(
        theta0,
        zeros,
        lr=lr,
        weight_decay=wd,
        weight_decay_mode="decoupled_schedule",
        lr_multipliers=etas,
    )
    for t, h in enumerate(history, start=1):
        np.testing.assert_allclose(h["param"], theta0 * np.prod(1 - etas[:t] * wd), rtol=1e-12)


def test_adam_l2_zero_gradient_step_is_normalised():
    theta0, _ = script(1)
    lr, wd, eps = 0.05, 0.3, 1e-8
    got = adam(theta0, [np.zeros_like(theta0)], lr=lr, weight_decay=wd, eps=eps)[0]["param"]
    g = wd * theta0
    np.testing.assert_allclose(got, theta0 - lr * g / (np.abs(g) + eps), rtol=1e-12)


def test_adamw_is_adam_with_decoupled_lr():
    theta0, grads = script(30)
    lr, wd = 0.01, 0.2
    etas = np.linspace(1.0, 0.2, len(grads))
    a = adamw(theta0, grads, lr=lr, weight_decay=wd, lr_multipliers=etas)
    b = adam(
        theta0, grads, lr=lr, weight_decay=wd, weight_decay_mode="decoupled_lr", lr_multipliers=etas
    )
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    default = adamw(theta0, grads, lr=lr)
    explicit = adam(theta0, grads, lr=lr, weight_decay=1e-2, weight_decay_mode="decoupled_lr")
    np.testing.assert_array_equal(params(default), params(explicit))
    assert not np.allclose(params(default), params(adam(theta0, grads, lr=lr)))


def test_adamax_step_one():
    theta0, grads = script(1)
    g = grads[0]
    lr, eps = 0.02, 1e-3
    paper = adamax(theta0, grads, lr=lr, eps=eps, eps_mode="none")[0]["param"]
    np.testing.assert_allclose(paper, theta0 - lr * np.sign(g), rtol=1e-12)
    torch_form = adamax(theta0, grads, lr=lr, eps=eps)[0]["param"]
    np.testing.assert_allclose(torch_form, theta0 - lr * g / (np.abs(g) + eps), rtol=1e-12)
    outside = adamax(theta0, grads, lr=lr, eps=eps, eps_mode="denominator")[0]["param"]
    np.testing.assert_allclose(outside, theta0 - lr * g / (np.abs(g) + eps), rtol=1e-12)


def test_adamax_exp_inf_is_weighted_max():
    theta0, grads = script(20)
    beta2 = 0.9
    history = adamax(theta0, grads, betas=(0.9, beta2), eps_mode="none")
    for t, h in enumerate(history, start=1):
        weighted = [beta2 ** (t - i) * np.abs(grads[i - 1]) for i in range(1, t + 1)]
        np.testing.assert_allclose(h["exp_inf"], np.max(weighted, axis=0), rtol=1e-12)


def test_nadam_dozat_step_one():
    theta0, grads = script(1)
    g = grads[0]
    lr, beta1, beta2, eps = 0.01, 0.9, 0.999, 1e-8
    mu1 = beta1 * (1 - 0.5 * 0.96**0.004)
    mu2 = beta1 * (1 - 0.5 * 0.96**0.008)
    h = nadam(theta0, grads, lr=lr, betas=(beta1, beta2), eps=eps)[0]
    factor = 1 + mu2 * (1 - beta1) / (1 - mu1 * mu2)
    np.testing.assert_allclose(h["param"], theta0 - lr * factor * g / (np.abs(g) + eps), rtol=1e-12)
    assert h["mu_product"] == pytest.approx(mu1, rel=1e-15)


def test_nadam_constant_matches_optax_formula():
    theta0, grads = script(30)
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-6
    etas = np.linspace(1.0, 0.3, len(grads))
    history = nadam(
        theta0, grads, lr=lr, betas=(b1, b2), eps=eps, mu_schedule="constant", lr_multipliers=etas
    )
    theta, m, v = theta0.copy(), np.zeros_like(theta0), np.zeros_like(theta0)
    for t, (g, eta, h) in enumerate(zip(grads, etas, history, strict=True), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        theta = theta - lr * eta * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(h["param"], theta, rtol=1e-12)
        assert h["mu_product"] == pytest.approx(b1**t, rel=1e-12)
    dozat = nadam(theta0, grads, lr=lr, betas=(b1, b2), eps=eps, lr_multipliers=etas)
    assert not np.allclose(params(dozat), params(history))


def test_sgd_ema_bias_corrected_is_lr_times_adam_first_moment():
    theta0, grads = script(30)
    lr, beta = 0.1, 0.8
    history = sgd(theta0, grads, lr=lr, momentum=beta, momentum_form="ema", bias_correction=True)
    adam_history = adam(theta0, grads, betas=(beta, 0.999))
    theta = theta0.copy()
    for t, (h, a) in enumerate(zip(history, adam_history, strict=True), start=1):
        m_t = (1 - beta) * sum(beta ** (t - i) * grads[i - 1] for i in range(1, t + 1))
        theta = theta - lr * m_t / (1 - beta**t)
        np.testing.assert_allclose(h["param"], theta, rtol=1e-12)
        np.testing.assert_allclose(h["momentum_buffer"], m_t, rtol=1e-12)
        np.testing.assert_allclose(h["momentum_buffer"], a["exp_avg"], rtol=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize(
    "algorithm, kw", [(sgd, {"lr": 0.05}), (rmsprop, {"lr": 0.01, "centered": True})]
)
def test_momentum_forms_agree_at_constant_lr_only(algorithm, kw, nesterov):
    """The lr inside the buffer (Sutskever; optax's and TensorFlow's RMSprop) is torch's
    heavy ball at a constant lr, its buffer lr times torch's; a schedule separates them."""
    theta0, grads = script(30)
    kw = {**kw, "momentum": 0.9, "nesterov": nesterov}
    heavy = algorithm(theta0, grads, **kw)
    sutskever = algorithm(theta0, grads, momentum_form="sutskever", **kw)
    np.testing.assert_allclose(params(heavy), params(sutskever), rtol=1e-12)
    for h, s in zip(heavy, sutskever, strict=True):
        expected = kw["lr"] * h["momentum_buffer"]
        np.testing.assert_allclose(s["momentum_buffer"], expected, rtol=1e-12)
    # a changing schedule separates them (§2a note, §12)
    etas = np.linspace(1.0, 0.1, len(grads))
    heavy = algorithm(theta0, grads, lr_multipliers=etas, **kw)
    sutskever = algorithm(theta0, grads, momentum_form="sutskever", lr_multipliers=etas, **kw)
    assert not np.allclose(params(heavy), params(sutskever), rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_rmsprop_momentum_first_step(nesterov):
    """b_1 = g/d; Nesterov steps along g/d + μ b_1 = (1 + μ) g/d."""
    theta0, grads = script(1)
    lr, mu = 0.01, 0.9
    plain = rmsprop(theta0, grads, lr=lr, momentum=mu, nesterov=nesterov)[0]
    g = grads[0]
    normalised = g / (np.sqrt(0.01 * g * g) + 1e-8)
    step = (1 + mu) * normalised if nesterov else normalised
    np.testing.assert_allclose(plain["param"], theta0 - lr * step, rtol=1e-12)


def test_heavy_ball_first_buffer_is_undampened_gradient():
    theta0, grads = script(3)
    history = sgd(theta0, grads, lr=0.1, momentum=0.9, dampening=0.5)
    np.testing.assert_array_equal(history[0]["momentum_buffer"], grads[0])
    np.testing.assert_allclose(
        history[1]["momentum_buffer"], 0.9 * grads[0] + 0.5 * grads[1], rtol=1e-12
    )


def test_adagrad_and_rmsprop_step_one():
    theta0, grads = script(1)
    g = grads[0]
    lr, eps, alpha = 0.1, 1e-3, 0.9
    got = adagrad(theta0, grads, lr=lr, eps=eps)[0]["param"]
    np.testing.assert_allclose(got, theta0 - lr * g / (np.abs(g) + eps), rtol=1e-12)
    got = rmsprop(theta0, grads, lr=lr, eps=eps, alpha=alpha)[0]["param"]
    expected = theta0 - lr * g / (np.sqrt(1 - alpha) * np.abs(g) + eps)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    got = rmsprop(theta0, grads, lr=lr, eps=eps, alpha=alpha, eps_in_sqrt=True)[0]["param"]
    expected = theta0 - lr * g / np.sqrt((1 - alpha) * g**2 + eps)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("optimizer", ALL)
def test_maximize_is_minimizing_negated_gradients(optimizer):
    theta0, grads = script(10)
    kw = {"lr": 0.01, "weight_decay": 0.1}
    if optimizer is sgd:
        kw["momentum"] = 0.9
    up = optimizer(theta0, grads, maximize=True, **kw)
    down = optimizer(theta0, [-g for g in grads], **kw)
    np.testing.assert_allclose(params(up), params(down), rtol=1e-12)


@pytest.mark.parametrize("optimizer", ALL)
def test_records_and_inputs(optimizer):
    theta0, grads = script(5)
    before = theta0.copy()
    history = optimizer(theta0, grads)
    np.testing.assert_array_equal(theta0, before)
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5]
    assert all(h["param"].dtype == np.float64 and h["param"].shape == (2, 3) for h in history)
    assert history[0]["param"] is not history[1]["param"]
    scalar = optimizer(np.array(1.5), [np.array(0.3), np.array(-0.2)])
    for h in scalar:
        for key, value in h.items():
            if key not in ("step", "mu_product"):
                assert isinstance(value, np.ndarray) and value.shape == (), key
    with pytest.raises(TypeError):
        optimizer(theta0, grads, not_a_hyperparameter=1.0)
    with pytest.raises(ValueError):
        optimizer(theta0, grads, weight_decay_mode="nope")


def test_state_names():
    theta0, grads = script(2)
    names = {
        "sgd": set(sgd(theta0, grads, momentum=0.9)[0]),
        "sgd0": set(sgd(theta0, grads)[0]),
        "adagrad": set(adagrad(theta0, grads)[0]),
        "rmsprop": set(rmsprop(theta0, grads, centered=True, momentum=0.9)[0]),
        "rmsprop0": set(rmsprop(theta0, grads)[0]),
        "adam": set(adam(theta0, grads)[0]),
        "amsgrad": set(amsgrad(theta0, grads)[0]),
        "adamax": set(adamax(theta0, grads)[0]),
        "nadam": set(nadam(theta0, grads)[0]),
    }
    base = {"step", "param"}
    assert names == {
        "sgd": base | {"momentum_buffer"},
        "sgd0": base,
        "adagrad": base | {"sum"},
        "rmsprop": base | {"square_avg", "grad_avg", "momentum_buffer"},
        "rmsprop0": base | {"square_avg"},
        "adam": base | {"exp_avg", "exp_avg_sq"},
        "amsgrad": base | {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
        "adamax": base | {"exp_avg", "exp_inf"},
        "nadam": base | {"exp_avg", "exp_avg_sq", "mu_product"},
    }
