"""Self-checks of the float64 SWATS and ND-Adam references (tests/reference/swats.py, ndadam.py)
against ALGORITHMS.md §17a, §18b and §24b. Every check compares two independently computed
quantities: a closed form, a hand-written recurrence, or another reference (adam)."""

from __future__ import annotations

import numpy as np
import pytest

from reference import adam, ndadam, swats

SHAPES = [(3, 4), (5,), ()]


def group_script(steps: int = 30, shapes=SHAPES, seed: int = 0):
    rng = np.random.default_rng(seed)
    theta0 = [rng.normal(size=s) for s in shapes]
    grads = [
        [rng.normal(size=s) * 10.0 ** rng.integers(-2, 2) for s in shapes] for _ in range(steps)
    ]
    return theta0, grads


def column(history, i, key="param"):
    """Param i's value of `key` over the steps of a swats() history."""
    return np.stack([h[i][key] for h in history])


def last(history, key):
    return float(history[-1][0][key])


def flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


# Random gradients around a fixed mean, β2 = 0.9: with this seed and tolerance the group switches
# in the middle of 300 steps (at step 101; test_swats_random_gradients_switch_mid_run).
RANDOM_SEED, RANDOM_STEPS, RANDOM_TOL = 4, 300, 3e-5
RANDOM_HYPER = {"lr": 1e-2, "betas": (0.9, 0.9), "switch_tolerance": RANDOM_TOL}


def random_script(shapes=((3, 4), (5,))):
    rng = np.random.default_rng(RANDOM_SEED)
    theta0 = [rng.normal(size=s) for s in shapes]
    grads = [[rng.normal(size=s) for s in shapes] for _ in range(RANDOM_STEPS)]
    return theta0, grads


# ---------------------------------------------------------------------------------------------
# SWATS
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps_mode", ["efficient", "paper"])
@pytest.mark.parametrize(
    "decay",
    [
        {},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "weight_decay_mode": "decoupled_lr"},
        {"weight_decay": 0.1, "weight_decay_mode": "decoupled_schedule", "maximize": True},
    ],
)
def test_swats_before_switch_is_adam(eps_mode, decay):
    """With switch_tolerance = 0 the test |Λ̂ - γ| < 0 never passes: SWATS is Adam throughout."""
    theta0, grads = group_script(40)
    etas = np.linspace(1.0, 0.2, len(grads))
    kw = {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-3, "eps_mode": eps_mode, **decay}
    history = swats(theta0, grads, lr_multipliers=etas, switch_tolerance=0.0, **kw)
    for i, theta in enumerate(theta0):
        expected = adam(theta, [g[i] for g in grads], lr_multipliers=etas, **kw)
        for h, e in zip(history, expected, strict=True):
            for key in ("param", "exp_avg", "exp_avg_sq"):
                np.testing.assert_allclose(h[i][key], e[key], rtol=1e-12, atol=1e-300)
            assert h[i]["sgd_lr"] == 0 and h[i]["switch_step"] == 0


def test_swats_sgd_lr_average_is_ema_of_projection_lr():
    """§17a, §24b: γ_k from the group's Adam step p = θ_k - θ_{k-1} and its gradient g satisfies
    proj_p(-γ g) = p, and "sgd_lr_average" is λ_k = β2 λ_{k-1} + (1-β2) γ_k, for every Q = p·g ≠ 0
    (§24b states it for p·g < 0; the algebra needs only p·g ≠ 0)."""
    theta0, grads = group_script(40)
    beta2, wd = 0.95, 0.05
    history = swats(
        theta0, grads, lr=0.01, betas=(0.9, beta2), weight_decay=wd, switch_tolerance=0.0
    )
    previous = theta0
    ema = 0.0
    for k, h in enumerate(history, start=1):
        current = [r["param"] for r in h]
        p = flat(current) - flat(previous)
        g = flat(grads[k - 1]) + wd * flat(previous)  # L2 gradient the step used
        assert p @ g != 0  # random gradients: mostly < 0, sometimes > 0 (then γ < 0)
        gamma = (p @ p) / -(p @ g)
        projection = ((-gamma * g) @ p / (p @ p)) * p
        np.testing.assert_allclose(projection, p, rtol=1e-12)
        ema = beta2 * ema + (1 - beta2) * gamma
        for r in h:
            assert float(r["sgd_lr_average"]) == pytest.approx(ema, rel=1e-9)
        previous = current


def constant_script(steps: int, shapes=((2, 3), (4,))):
    """θ_0 random; g_k = g for all k with every |g_i| = 1 (random signs)."""
    rng = np.random.default_rng(7)
    theta0 = [rng.normal(size=s) for s in shapes]
    g = [rng.choice([-1.0, 1.0], size=s) for s in shapes]
    return theta0, g, [[x.copy() for x in g] for _ in range(steps)]


def constant_gradient_sgd_lr(lr, eta, beta2, eps, eps_mode):
    """Λ at the switch (step 2) for a constant gradient with |g_i| = 1, derived by hand (§17a).

    m_k = (1-β1^k) g and a_k = (1-β2^k) g² = 1-β2^k, so with α = lr·η the Adam step is
    p_k = -α s_k g, s_k = sqrt(1-β2^k)/(sqrt(1-β2^k) + ε) ("efficient"), s_k = 1/(1 + ε) ("paper").
    Over the n entries of the unit P = α² s_k² n, Q = -α s_k n, so γ_k = α s_k.
    λ_1 = (1-β2) γ_1 (no switch: k > 1 is required); λ_2 = β2(1-β2) γ_1 + (1-β2) γ_2, hence
    Λ̂_2 = λ_2/(1-β2²) = (β2 γ_1 + γ_2)/(1 + β2) and |Λ̂_2 - γ_2| = β2 |γ_1 - γ_2|/(1 + β2): zero
    in the paper form, O(α ε) in the efficient form, below the tolerance either way. So the
    switch happens at step 2 with Λ = α (β2 s_1 + s_2)/(1 + β2) (= α/(1 + ε) in the paper form).
    """
    alpha = lr * eta
    if eps_mode == "paper":
        s1 = s2 = 1 / (1 + eps)
    else:
        r1, r2 = np.sqrt(1 - beta2), np.sqrt(1 - beta2**2)
        s1, s2 = r1 / (r1 + eps), r2 / (r2 + eps)
    return alpha * (beta2 * s1 + s2) / (1 + beta2), alpha * s1, alpha * s2


@pytest.mark.parametrize("eps_mode", ["efficient", "paper"])
@pytest.mark.parametrize(
    ("eps", "tolerance"),
    # the defaults; then a large ε that separates the forms, with a tolerance the O(αε)
    # disagreement of the efficient form passes
    [(1e-9, 1e-9), (0.1, 1.0)],
)
def test_swats_constant_gradient_switches_at_step_two(eps_mode, eps, tolerance):
    """Constant gradient with |g_i| = 1: switch at step 2, Λ from constant_gradient_sgd_lr; then
    (SGD phase, v_2 = 0) v_k = β1 v_{k-1} + g = g(1-β1^{k-2})/(1-β1), so
    θ_k = θ_{k-1} - (1-β1) Λ (η_k/η_2) v_k = θ_{k-1} - Λ (η_k/η_2)(1-β1^{k-2}) g."""
    lr, beta1, beta2 = 0.01, 0.8, 0.999
    theta0, g, grads = constant_script(12)
    etas = np.concatenate([[0.5, 0.5], np.linspace(0.4, 1.3, 10)])
    history = swats(
        theta0,
        grads,
        lr=lr,
        betas=(beta1, beta2),
        eps=eps,
        eps_mode=eps_mode,
        switch_tolerance=tolerance,
        lr_multipliers=etas,
    )
    sgd_lr, gamma1, gamma2 = constant_gradient_sgd_lr(lr, 0.5, beta2, eps, eps_mode)
    assert [int(h[0]["switch_step"]) for h in history[:3]] == [0, 2, 2]
    assert float(history[0][0]["sgd_lr_average"]) == pytest.approx((1 - beta2) * gamma1, rel=1e-12)
    for i, theta in enumerate(theta0):
        np.testing.assert_allclose(history[0][i]["param"], theta - gamma1 * g[i], rtol=1e-12)
        np.testing.assert_allclose(
            history[1][i]["param"], theta - (gamma1 + gamma2) * g[i], rtol=1e-12
        )
        expected = history[1][i]["param"]
        for k in range(3, len(grads) + 1):
            h = history[k - 1][i]
            assert float(h["sgd_lr"]) == pytest.approx(sgd_lr, rel=1e-12)
            expected = expected - sgd_lr * (etas[k - 1] / 0.5) * (1 - beta1 ** (k - 2)) * g[i]
            np.testing.assert_allclose(h["param"], expected, rtol=1e-12)
            np.testing.assert_allclose(h["exp_avg"], (1 - beta1 ** (k - 2)) * g[i], rtol=1e-12)
            # Adam's second moment is frozen at a_2 = 1 - β2²
            np.testing.assert_allclose(h["exp_avg_sq"], np.full_like(g[i], 1 - beta2**2))
        np.testing.assert_array_equal(history[1][i]["exp_avg"], np.zeros_like(g[i]))


@pytest.mark.parametrize(
    "decay",
    [
        {},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "weight_decay_mode": "decoupled_lr", "maximize": True},
        {"weight_decay": 0.1, "weight_decay_mode": "decoupled_schedule"},
    ],
)
def test_swats_after_switch_is_sgd_momentum(decay):
    """After the switch: v_k = β1 v_{k-1} + g_k (g after maximize and L2), decay as _common.decay,
    θ_k = θ_{k-1} - (1-β1) Λ (η_k/η_s) v_k; "exp_avg" = (1-β1) v, "exp_avg_sq" frozen."""
    theta0, grads = group_script(30)
    lr, beta1, wd = 0.01, 0.85, decay.get("weight_decay", 0.0)
    mode = decay.get("weight_decay_mode", "l2")
    sign = -1.0 if decay.get("maximize") else 1.0
    etas = np.linspace(1.0, 0.3, len(grads))
    # any positive Λ̂ passes a tolerance of 1e3: the switch is at step 2
    history = swats(
        theta0,
        grads,
        lr=lr,
        betas=(beta1, 0.99),
        switch_tolerance=1e3,
        lr_multipliers=etas,
        **decay,
    )
    s = 2
    assert all(int(r["switch_step"]) == s for h in history[s - 1 :] for r in h)
    sgd_lr = float(history[s - 1][0]["sgd_lr"])
    assert sgd_lr == pytest.approx(float(history[s - 1][0]["sgd_lr_average"]) / (1 - 0.99**2))
    for i in range(len(theta0)):
        theta = history[s - 1][i]["param"]
        v = np.zeros_like(theta)
        frozen = history[s - 1][i]["exp_avg_sq"]
        for k in range(s + 1, len(grads) + 1):
            eta = etas[k - 1]
            g = sign * grads[k - 1][i]
            if mode == "l2":
                g = g + wd * theta
            elif mode == "decoupled_lr":
                theta = theta * (1 - lr * eta * wd)
            else:
                theta = theta * (1 - eta * wd)
            v = beta1 * v + g
            theta = theta - (1 - beta1) * sgd_lr * (eta / etas[s - 1]) * v
            h = history[k - 1][i]
            np.testing.assert_allclose(h["param"], theta, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(h["exp_avg"], (1 - beta1) * v, rtol=1e-12, atol=1e-15)
            np.testing.assert_array_equal(h["exp_avg_sq"], frozen)
            assert float(h["sgd_lr"]) == sgd_lr


def test_swats_random_gradients_switch_mid_run():
    """Random gradients, β2 = 0.9: the switch step equals the first k > 1 at which the EMA of
    γ_k, recomputed here from the recorded Adam steps p = θ_k - θ_{k-1}, passes the test."""
    theta0, grads = random_script()
    beta2 = RANDOM_HYPER["betas"][1]
    history = swats(theta0, grads, **RANDOM_HYPER)
    switch = int(last(history, "switch_step"))
    print(f"SWATS random-gradient run (seed {RANDOM_SEED}): switched at step {switch}")
    assert 75 <= switch <= 225, f"switched at step {switch} of {RANDOM_STEPS}"
    ema, previous, expected = 0.0, flat(theta0), None
    for k in range(1, RANDOM_STEPS + 1):
        current = flat([r["param"] for r in history[k - 1]])
        p, g = current - previous, flat(grads[k - 1])
        previous = current
        gamma = (p @ p) / -(p @ g)
        ema = beta2 * ema + (1 - beta2) * gamma
        corrected = ema / (1 - beta2**k)
        if k > 1 and abs(corrected - gamma) < RANDOM_TOL and corrected > 0:
            expected = k
            break
    assert expected == switch, f"reference switched at {switch}, recomputed {expected}"
    assert last(history, "sgd_lr") == pytest.approx(corrected, rel=1e-9)
    assert [int(h[0]["switch_step"]) for h in history] == [0] * (switch - 1) + [switch] * (
        RANDOM_STEPS - switch + 1
    ), f"switch_step record inconsistent with the switch at step {switch}"


def test_swats_zero_gradient_step_leaves_ema_and_does_not_switch():
    """g = 0 makes Q = p·g = 0: λ is left unchanged and no switch test happens, even with a
    tolerance every Λ̂ > 0 passes. At step 1 also p = 0 (m = 0), so θ does not move."""
    theta0, grads = group_script(6)
    zeros = [np.zeros_like(g) for g in grads[0]]
    script = [zeros, grads[1], grads[2], zeros, zeros, grads[3]]
    history = swats(theta0, script, lr=0.01, betas=(0.9, 0.9), switch_tolerance=1e3)
    averages = [float(h[0]["sgd_lr_average"]) for h in history]
    assert averages[0] == 0.0 and averages[1] > 0.0
    for i, theta in enumerate(theta0):
        np.testing.assert_array_equal(history[0][i]["param"], theta)
    # step 2 is the first with Q ≠ 0 and k > 1: with this tolerance the switch happens there
    assert [int(h[0]["switch_step"]) for h in history] == [0, 2, 2, 2, 2, 2]
    history = swats(theta0, script, lr=0.01, betas=(0.9, 0.9), switch_tolerance=0.0)
    averages = [float(h[0]["sgd_lr_average"]) for h in history]
    assert averages[3] == averages[4] == averages[2] and averages[5] != averages[4]
    for i in range(len(theta0)):  # but the Adam steps at 4, 5 still moved θ (m ≠ 0)
        assert not np.array_equal(history[3][i]["param"], history[2][i]["param"])


def test_swats_never_switches_to_a_negative_lr():
    """g_1 = g, g_2 = -0.1 g (|g_i| = 1), β1 = 0.9: m_2 = (0.09 - 0.01) g = 0.08 g still points
    along g, so p_2 ∝ -g and Q_2 = p_2·g_2 > 0, γ_2 < 0 and Λ̂_2 = (β2 γ_1 + γ_2)/(1+β2) < 0
    (γ_1 ≈ α, γ_2 ≈ -5.9α). A tolerance of 1e3 passes |Λ̂_2 - γ_2|, but the Λ̂ > 0 guard
    forbids the switch."""
    theta0, g, _ = constant_script(0)
    script = [g, [-0.1 * x for x in g]]
    history = swats(theta0, script, lr=0.01, betas=(0.9, 0.999), switch_tolerance=1e3)
    assert float(history[1][0]["sgd_lr_average"]) < 0
    assert [int(h[0]["switch_step"]) for h in history] == [0, 0]
    assert float(history[1][0]["sgd_lr"]) == 0.0


def test_swats_tensor_granularity_single_param_is_group():
    theta0, grads = random_script(shapes=((3, 4),))
    by_group = swats(theta0, grads, **RANDOM_HYPER)
    by_tensor = swats(theta0, grads, granularity="tensor", **RANDOM_HYPER)
    assert 0 < last(by_group, "switch_step") < RANDOM_STEPS
    for a, b in zip(by_group, by_tensor, strict=True):
        assert a[0].keys() == b[0].keys()
        for key in a[0]:
            np.testing.assert_array_equal(a[0][key], b[0][key])


def test_swats_tensor_granularity_is_each_param_alone():
    """granularity="tensor": every param switches on its own, as if it were a one-param group."""
    theta0, grads = random_script()
    together = swats(theta0, grads, granularity="tensor", **RANDOM_HYPER)
    steps = set()
    for i, theta in enumerate(theta0):
        alone = swats([theta], [[g[i]] for g in grads], **RANDOM_HYPER)
        for a, b in zip(together, alone, strict=True):
            for key in a[i]:
                np.testing.assert_array_equal(a[i][key], b[0][key])
        steps.add(last(alone, "switch_step"))
    assert len(steps) == len(theta0) and 0 not in steps, steps  # distinct, both switched


def test_swats_switch_independent_of_param_order():
    theta0, grads = random_script(shapes=((3, 4), (5,), (2, 2)))
    forward = swats(theta0, grads, **RANDOM_HYPER)
    order = [2, 0, 1]
    shuffled = swats(
        [theta0[j] for j in order], [[g[j] for j in order] for g in grads], **RANDOM_HYPER
    )
    switch = last(forward, "switch_step")
    assert 0 < switch < RANDOM_STEPS
    assert last(shuffled, "switch_step") == switch
    for a, b in zip(forward, shuffled, strict=True):
        for position, j in enumerate(order):
            np.testing.assert_allclose(b[position]["param"], a[j]["param"], rtol=1e-9)
            assert b[position]["sgd_lr"] == pytest.approx(float(a[j]["sgd_lr"]), rel=1e-12)


def test_swats_maximize_is_minimizing_negated_gradients():
    theta0, grads = random_script()
    up = swats(theta0, grads, maximize=True, weight_decay=0.01, **RANDOM_HYPER)
    down = swats(theta0, [[-g for g in step] for step in grads], weight_decay=0.01, **RANDOM_HYPER)
    assert last(up, "switch_step") == last(down, "switch_step") > 0
    for i in range(len(theta0)):
        np.testing.assert_allclose(column(up, i), column(down, i), rtol=1e-12)


def test_swats_records_and_inputs():
    theta0, grads = group_script(4)
    before = [t.copy() for t in theta0]
    history = swats(theta0, grads)
    for a, b in zip(theta0, before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [[r["step"] for r in h] for h in history] == [[k] * 3 for k in (1, 2, 3, 4)]
    keys = {"step", "param", "exp_avg", "exp_avg_sq", "sgd_lr_average", "sgd_lr", "switch_step"}
    for h in history:
        for r, theta in zip(h, theta0, strict=True):
            assert set(r) == keys
            assert r["param"].dtype == np.float64 and r["param"].shape == theta.shape
            assert r["exp_avg"].shape == r["exp_avg_sq"].shape == theta.shape
            for key in ("sgd_lr_average", "sgd_lr", "switch_step"):
                assert isinstance(r[key], np.ndarray) and r[key].shape == (), key
    assert swats(theta0, []) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"granularity": "global"},
        {"granularity": "per_tensor"},
        {"eps_mode": "nope"},
        {"weight_decay_mode": "nope"},
        {"lr_multipliers": [1.0]},
    ],
)
def test_swats_rejects_bad_options(bad):
    theta0, grads = group_script(3)
    with pytest.raises(ValueError):
        swats(theta0, grads, **bad)


def test_swats_rejects_bad_shapes():
    theta0, grads = group_script(3)
    with pytest.raises(ValueError):
        swats(theta0[0], [g[0] for g in grads])  # one array is not a group
    with pytest.raises(ValueError):
        swats([], [])
    with pytest.raises(ValueError):
        swats(theta0, [g[:2] for g in grads])
    with pytest.raises(ValueError):
        swats(theta0, [[g[1], g[0], g[2]] for g in grads])
    with pytest.raises(TypeError):
        swats(theta0, grads, not_a_hyperparameter=1.0)


# ---------------------------------------------------------------------------------------------
# ND-Adam
# ---------------------------------------------------------------------------------------------


def unit_vectors(shape, axes, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=shape)
    return w / np.sqrt(np.sum(w * w, axis=axes, keepdims=True))


def nd_script(shape=(4, 3, 2, 2), axes=(1, 2, 3), steps=30, seed=0):
    rng = np.random.default_rng(seed + 1)
    return unit_vectors(shape, axes, seed), [rng.normal(size=shape) for _ in range(steps)]


@pytest.mark.parametrize(
    ("shape", "vec_axes", "axes"),
    [
        ((4, 3, 2, 2), None, (1, 2, 3)),
        ((5, 3), None, (1,)),
        ((5, 3), (0,), (0,)),
        ((4, 3, 2), (-1, 0), (0, 2)),
        ((6,), (0,), (0,)),
    ],
)
@pytest.mark.parametrize("eps_mode", ["efficient", "paper"])
def test_ndadam_unit_norm_tangent_gradient_and_moments(shape, vec_axes, axes, eps_mode):
    """Every vector keeps norm 1; the g the step used, recovered from the recorded m as
    (m_t - β1 m_{t-1})/(1-β1), is ḡ - (ḡ·w) w, tangent to w_{t-1}; v_t = β2 v_{t-1} + (1-β2)||g||²
    with the keepdims shape."""
    w, grads = nd_script(shape, axes)
    b1, b2 = 0.9, 0.99
    etas = np.linspace(1.0, 0.5, len(grads))
    history = ndadam(
        w, grads, lr=0.05, betas=(b1, b2), eps_mode=eps_mode, vec_axes=vec_axes, lr_multipliers=etas
    )
    v_shape = tuple(1 if d in axes else n for d, n in enumerate(shape))
    m_prev, v_prev, w_prev = np.zeros(shape), np.zeros(v_shape), w
    for h, g_raw in zip(history, grads, strict=True):
        norms = np.sqrt(np.sum(h["param"] ** 2, axis=axes))
        np.testing.assert_allclose(norms, 1.0, rtol=0, atol=1e-12)
        assert h["exp_avg"].shape == shape and h["exp_avg_sq"].shape == v_shape
        g = (h["exp_avg"] - b1 * m_prev) / (1 - b1)
        np.testing.assert_allclose(np.sum(g * w_prev, axis=axes), 0.0, atol=1e-12)
        tangent = g_raw - np.sum(g_raw * w_prev, axis=axes, keepdims=True) * w_prev
        np.testing.assert_allclose(g, tangent, rtol=1e-9, atol=1e-12)
        v = b2 * v_prev + (1 - b2) * np.sum(tangent**2, axis=axes, keepdims=True)
        np.testing.assert_allclose(h["exp_avg_sq"], v, rtol=1e-12)
        m_prev, v_prev, w_prev = h["exp_avg"], h["exp_avg_sq"], h["param"]
    assert not np.allclose(history[-1]["param"], w)


@pytest.mark.parametrize("eps_mode", ["efficient", "paper"])
def test_ndadam_step_one_closed_form(eps_mode):
    """Step 1, g = ḡ - (ḡ·w)w ⊥ w: m = (1-β1)g, v = (1-β2)||g||², so w̄ = w - c g with
    c = α/(||g|| + ε) ("paper") or α/(||g|| + ε/sqrt(1-β2)) ("efficient"), and by Pythagoras
    ||w̄||² = 1 + c²||g||²: w_1 = (w - c g)/sqrt(1 + c²||g||²)."""
    axes = (1, 2, 3)
    w, grads = nd_script(axes=axes, steps=1)
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 0.05
    got = ndadam(w, grads, lr=lr, betas=(b1, b2), eps=eps, eps_mode=eps_mode)[0]["param"]
    g = grads[0] - np.sum(grads[0] * w, axis=axes, keepdims=True) * w
    norm = np.sqrt(np.sum(g * g, axis=axes, keepdims=True))
    c = lr / (norm + (eps if eps_mode == "paper" else eps / np.sqrt(1 - b2)))
    expected = (w - c * g) / np.sqrt(1 + c**2 * norm**2)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_ndadam_eps_modes_agree_without_eps():
    w, grads = nd_script()
    paper = ndadam(w, grads, lr=0.05, eps=0.0, eps_mode="paper")
    efficient = ndadam(w, grads, lr=0.05, eps=0.0)
    for a, b in zip(paper, efficient, strict=True):
        np.testing.assert_allclose(a["param"], b["param"], rtol=1e-12, atol=1e-14)
    paper = ndadam(w, grads, lr=0.05, eps=1e-1, eps_mode="paper")
    efficient = ndadam(w, grads, lr=0.05, eps=1e-1)
    assert not np.allclose(paper[-1]["param"], efficient[-1]["param"], rtol=1e-6)


@pytest.mark.parametrize(
    ("shape", "vec_axes"), [((6,), None), ((), None), ((4, 3), ()), ((2, 3, 2), ())]
)
@pytest.mark.parametrize("eps_mode", ["efficient", "paper"])
@pytest.mark.parametrize(
    "decay",
    [
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "weight_decay_mode": "decoupled_lr", "maximize": True},
        {"weight_decay": 0.1, "weight_decay_mode": "decoupled_schedule"},
    ],
)
def test_ndadam_non_vectors_are_adam(shape, vec_axes, eps_mode, decay):
    rng = np.random.default_rng(3)
    theta0 = rng.normal(size=shape)
    grads = [rng.normal(size=shape) for _ in range(20)]
    etas = np.linspace(1.0, 0.1, len(grads))
    kw = {"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-4, "eps_mode": eps_mode, **decay}
    got = ndadam(theta0, grads, lr_multipliers=etas, vec_axes=vec_axes, **kw)
    expected = adam(theta0, grads, lr_multipliers=etas, **kw)
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys() == {"step", "param", "exp_avg", "exp_avg_sq"}
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_ndadam_vectors_ignore_weight_decay_and_maximize_negates():
    w, grads = nd_script()
    plain = ndadam(w, grads, lr=0.05)
    for mode in ("l2", "decoupled_lr", "decoupled_schedule"):
        decayed = ndadam(w, grads, lr=0.05, weight_decay=0.5, weight_decay_mode=mode)
        for a, b in zip(plain, decayed, strict=True):
            np.testing.assert_array_equal(a["param"], b["param"])
    up = ndadam(w, grads, lr=0.05, maximize=True)
    down = ndadam(w, [-g for g in grads], lr=0.05)
    for a, b in zip(up, down, strict=True):
        np.testing.assert_allclose(a["param"], b["param"], rtol=1e-12)
    assert not np.allclose(up[-1]["param"], plain[-1]["param"])


def test_ndadam_vec_axes_forms_agree():
    """Default axes for (4,3,2,2) are (1,2,3); negative and unsorted forms name the same axes."""
    w, grads = nd_script()
    default = ndadam(w, grads, lr=0.05)
    for vec_axes in [(1, 2, 3), (-3, -2, -1), (3, 1, 2)]:
        other = ndadam(w, grads, lr=0.05, vec_axes=vec_axes)
        for a, b in zip(default, other, strict=True):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    assert default[0]["exp_avg_sq"].shape == (4, 1, 1, 1)
    by_rows = ndadam(w, grads, lr=0.05, vec_axes=(0, 2))
    assert by_rows[0]["exp_avg_sq"].shape == (1, 3, 1, 2)


@pytest.mark.parametrize(
    "bad",
    [
        {"vec_axes": (4,)},
        {"vec_axes": (-5,)},
        {"vec_axes": (1, -3)},
        {"eps_mode": "nope"},
        {"weight_decay_mode": "nope"},
        {"lr_multipliers": [1.0]},
    ],
)
def test_ndadam_rejects_bad_options(bad):
    w, grads = nd_script(steps=3)
    with pytest.raises(ValueError):
        ndadam(w, grads, **bad)


def test_ndadam_records_and_inputs():
    w, grads = nd_script(steps=4)
    before = w.copy()
    history = ndadam(w, grads)
    np.testing.assert_array_equal(w, before)
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert all(h["param"].dtype == np.float64 for h in history)
    with pytest.raises(ValueError):
        ndadam(w, [g[:2] for g in grads])
    with pytest.raises(TypeError):
        ndadam(w, grads, not_a_hyperparameter=1.0)
