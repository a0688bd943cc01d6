"""The lecture's pseudo-code, transcribed to NumPy, as an independent oracle.

Each ``lecture_*`` function below is a slide's snippet with only the loop
plumbing added (``gradient`` is passed in, the iterates are recorded).  optimlab
must reproduce them with the matching options, on an ill-conditioned quadratic
and on Rosenbrock's function, in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimlab

# -- problems ------------------------------------------------------------------

A = np.diag([1.0, 10.0])  # condition number 10: the oscillation the lecture's momentum slide shows


def quadratic_grad(w: np.ndarray) -> np.ndarray:
    return A @ w


def rosenbrock_grad(w: np.ndarray) -> np.ndarray:
    x, y = w
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


PROBLEMS = {
    "quadratic": (quadratic_grad, np.array([2.0, 1.5])),
    "rosenbrock": (rosenbrock_grad, np.array([-1.2, 1.0])),
}
N_ITER = 150

# -- the slides, transcribed ---------------------------------------------------


def lecture_sgd(gradient, w, lr):  # slide 3
    path = []
    for _ in range(N_ITER):
        dw = gradient(w)
        w = w - lr * dw
        path.append(w)
    return path


def lecture_momentum(gradient, w, lr, beta):  # slide 3, the formula: v carries the lr
    v, path = np.zeros_like(w), []
    for _ in range(N_ITER):
        v = beta * v - lr * gradient(w)
        w = w + v
        path.append(w)
    return path


def lecture_momentum_code(gradient, w, lr, beta):  # slide 3, the code: lr applied to v
    v, path = np.zeros_like(w), []
    for _ in range(N_ITER):
        dw = gradient(w)
        v = beta * v - dw
        w = w + lr * v
        path.append(w)
    return path


def lecture_nesterov(gradient, w, lr, beta):  # slide 4: the gradient at the look-ahead point
    v, path, ahead = np.zeros_like(w), [], []
    for _ in range(N_ITER):
        v = beta * v - lr * gradient(w + beta * v)
        w = w + v
        path.append(w)
        ahead.append(w + beta * v)
    return path, ahead


def lecture_adagrad(gradient, w, lr, eps):  # slide 7
    dw_squared, path = 0, []
    for _ in range(N_ITER):
        dw = gradient(w)
        dw_squared += dw * dw
        w = w - lr * dw / np.sqrt(dw_squared + eps)
        path.append(w)
    return path


def lecture_rmsprop(gradient, w, lr, dr, eps):  # slide 8
    dw_squared, path = 0, []
    for _ in range(N_ITER):
        dw = gradient(w)
        dw_squared = dr * dw_squared + (1 - dr) * dw * dw
        w = w - lr * dw / np.sqrt(dw_squared + eps)
        path.append(w)
    return path


def lecture_adam_uncorrected(gradient, w, lr, beta1, beta2, eps):  # slide 9
    first_moment, second_moment, path = 0, 0, []
    for _ in range(N_ITER):
        dw = gradient(w)
        first_moment = beta1 * first_moment + (1 - beta1) * dw
        second_moment = beta2 * second_moment + (1 - beta2) * dw * dw
        w = w - lr * first_moment / (np.sqrt(second_moment) + eps)
        path.append(w)
    return path


def lecture_adam(gradient, w, lr, beta1, beta2, eps):  # slide 10
    first_moment, second_moment, path = 0, 0, []
    for i in range(N_ITER):
        dw = gradient(w)
        first_moment = beta1 * first_moment + (1 - beta1) * dw
        second_moment = beta2 * second_moment + (1 - beta2) * dw * dw
        first = first_moment / (1 - beta1 ** (i + 1))
        second = second_moment / (1 - beta2 ** (i + 1))
        w = w - lr * first / (np.sqrt(second) + eps)
        path.append(w)
    return path


# -- running optimlab on the same problem -------------------------------------


def optimlab_path(make, gradient, w0, lr_at=None, closure=False):
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = make([w])
    path = []

    def set_grad():
        w.grad = torch.from_numpy(gradient(w.detach().numpy().copy()))
        return 0.0

    for i in range(N_ITER):
        if lr_at is not None:
            opt.param_groups[0]["lr"] = lr_at(i)
        if closure:
            opt.step(set_grad)
        else:
            set_grad()
            opt.step()
        path.append(w.detach().numpy().copy())
    return path, opt


def assert_paths_close(ours, oracle, rtol):
    ours, oracle = np.array(ours), np.array(oracle)
    assert np.all(np.isfinite(oracle))
    np.testing.assert_allclose(ours, oracle, rtol=rtol, atol=rtol)


# (oracle, its kwargs, the optimlab constructor that should reproduce it)
SNIPPETS = [
    ("sgd", lecture_sgd, dict(lr=0.002), lambda p: optimlab.SGD(p, lr=0.002, fused=False)),
    (
        "momentum (formula)",
        lecture_momentum,
        dict(lr=0.001, beta=0.9),
        lambda p: optimlab.SGD(p, lr=0.001, momentum=0.9, momentum_form="lecture", fused=False),
    ),
    (
        "momentum (code)",
        lecture_momentum_code,
        dict(lr=0.001, beta=0.9),
        lambda p: optimlab.SGD(p, lr=0.001, momentum=0.9, momentum_form="lecture", fused=False),
    ),
    (
        "momentum (torch form)",
        lecture_momentum,
        dict(lr=0.001, beta=0.9),
        lambda p: optimlab.SGD(p, lr=0.001, momentum=0.9, fused=False),
    ),
    (
        "adagrad",
        lecture_adagrad,
        dict(lr=0.1, eps=1e-8),
        lambda p: optimlab.Adagrad(p, lr=0.1, eps=1e-8, eps_inside_sqrt=True, fused=False),
    ),
    (
        "rmsprop",
        lecture_rmsprop,
        dict(lr=0.01, dr=0.9, eps=1e-8),
        lambda p: optimlab.RMSprop(
            p, lr=0.01, alpha=0.9, eps=1e-8, eps_inside_sqrt=True, fused=False
        ),
    ),
    (
        "adam without bias correction",
        lecture_adam_uncorrected,
        dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8),
        lambda p: optimlab.Adam(p, lr=0.01, bias_correction=False, fused=False),
    ),
    (
        "adam",
        lecture_adam,
        dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8),
        lambda p: optimlab.Adam(p, lr=0.01, fused=False),
    ),
]


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s[0])
def test_optimlab_reproduces_the_slides(snippet, problem):
    _, oracle, kwargs, make = snippet
    gradient, w0 = PROBLEMS[problem]
    expected = oracle(gradient, w0, **kwargs)
    got, _ = optimlab_path(make, gradient, w0)
    # same math, different rounding order: float64 agreement to ~1e-9 after 150 steps
    assert_paths_close(got, expected, rtol=1e-9)


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("form", ["lecture", "torch"])
def test_nesterov_lookahead_is_slide_4(problem, form):
    """The look-ahead form evaluates the gradient at w + beta * v, through the closure."""
    gradient, w0 = PROBLEMS[problem]
    expected, _ = lecture_nesterov(gradient, w0, lr=0.001, beta=0.9)

    def make(p):
        return optimlab.SGD(
            p, lr=0.001, momentum=0.9, nesterov=True, momentum_form=form,
            nesterov_form="lookahead", fused=False,
        )  # fmt: skip

    got, _ = optimlab_path(make, gradient, w0, closure=True)
    assert_paths_close(got, expected, rtol=1e-9)


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("form", ["lecture", "torch"])
def test_reformulated_nesterov_tracks_the_lookahead_point(problem, form):
    """The usual reformulation (Sutskever et al. 2013) stores the look-ahead point
    w + beta * v as its parameters: the same algorithm, shifted by one half-step."""
    gradient, w0 = PROBLEMS[problem]
    _, lookahead_points = lecture_nesterov(gradient, w0, lr=0.001, beta=0.9)

    def make(p):
        return optimlab.SGD(
            p, lr=0.001, momentum=0.9, nesterov=True, momentum_form=form, fused=False
        )

    got, _ = optimlab_path(make, gradient, w0)
    assert_paths_close(got, lookahead_points, rtol=1e-9)


def test_lookahead_without_closure_is_an_error():
    w = torch.zeros(2, requires_grad=True)
    w.grad = torch.ones(2)
    opt = optimlab.SGD([w], lr=0.1, momentum=0.9, nesterov=True, nesterov_form="lookahead")
    with pytest.raises(RuntimeError, match="needs a closure"):
        opt.step()


# -- the two momentum forms: same under a constant lr, different once it changes --


def torch_form_momentum_oracle(gradient, w, lrs, mu):
    b, path = None, []
    for lr in lrs:
        g = gradient(w)
        b = g if b is None else mu * b + g
        w = w - lr * b
        path.append(w)
    return path


def lecture_form_momentum_oracle(gradient, w, lrs, beta):
    v, path = np.zeros_like(w), []
    for lr in lrs:
        v = beta * v - lr * gradient(w)
        w = w + v
        path.append(w)
    return path


def test_momentum_forms_agree_under_a_constant_learning_rate():
    gradient, w0 = PROBLEMS["quadratic"]
    torch_form, _ = optimlab_path(lambda p: optimlab.SGD(p, lr=0.01, momentum=0.9), gradient, w0)
    lecture_form, _ = optimlab_path(
        lambda p: optimlab.SGD(p, lr=0.01, momentum=0.9, momentum_form="lecture"), gradient, w0
    )
    assert_paths_close(lecture_form, torch_form, rtol=1e-12)


def test_momentum_forms_differ_once_the_learning_rate_changes():
    """torch's buffer applies the *new* lr to all past gradients; the lecture's
    velocity keeps each gradient's own lr.  Each matches its own oracle."""
    gradient, w0 = PROBLEMS["quadratic"]
    lrs = [0.02 if i < 20 else 0.002 for i in range(N_ITER)]  # a step decay at t=20

    def lr_at(i):
        return lrs[i]

    torch_form, _ = optimlab_path(
        lambda p: optimlab.SGD(p, lr=0.02, momentum=0.9), gradient, w0, lr_at=lr_at
    )
    lecture_form, _ = optimlab_path(
        lambda p: optimlab.SGD(p, lr=0.02, momentum=0.9, momentum_form="lecture"),
        gradient, w0, lr_at=lr_at,
    )  # fmt: skip
    assert_paths_close(torch_form, torch_form_momentum_oracle(gradient, w0, lrs, 0.9), 1e-12)
    assert_paths_close(lecture_form, lecture_form_momentum_oracle(gradient, w0, lrs, 0.9), 1e-12)
    # identical before the change, clearly apart right after it
    np.testing.assert_allclose(torch_form[19], lecture_form[19], rtol=1e-12)
    gap = np.abs(np.array(torch_form[20]) - np.array(lecture_form[20])).max()
    assert gap > 1e-3, gap


# -- what the slides claim about each method ------------------------------------


def _steps_taken(make, grad_value, n):
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = make([w])
    sizes = []
    for _ in range(n):
        before = w.detach().clone()
        w.grad = torch.full((1,), grad_value, dtype=torch.float64)
        opt.step()
        sizes.append(abs((w.detach() - before).item()))
    return sizes


def test_adam_bias_correction_tames_the_first_step():
    """Slide 10: with zero-initialized moments the uncorrected first step is
    lr * (1 - beta1) / sqrt(1 - beta2) ~ 3.16 lr; corrected, it is ~ lr."""
    lr = 0.01
    for g in (1e-3, 1.0, 1e3):  # independent of the gradient's scale
        corrected = _steps_taken(lambda p: optimlab.Adam(p, lr=lr, eps=0.0), g, 1)[0]
        uncorrected = _steps_taken(
            lambda p: optimlab.Adam(p, lr=lr, eps=0.0, bias_correction=False), g, 1
        )[0]
        assert corrected == pytest.approx(lr, rel=1e-12)
        assert uncorrected == pytest.approx(lr * 0.1 / np.sqrt(0.001), rel=1e-12)


def test_adagrad_step_decays_to_zero_and_rmsprop_does_not():
    """Slides 7-8 under a constant gradient g: Adagrad's t-th step is lr / sqrt(t),
    RMSProp's tends to lr."""
    lr, n = 0.01, 2000
    adagrad = _steps_taken(lambda p: optimlab.Adagrad(p, lr=lr, eps=0.0), 0.5, n)
    rmsprop = _steps_taken(lambda p: optimlab.RMSprop(p, lr=lr, alpha=0.9, eps=0.0), 0.5, n)
    for t in (1, 10, 100, n):
        assert adagrad[t - 1] == pytest.approx(lr / np.sqrt(t), rel=1e-9)
        assert rmsprop[t - 1] == pytest.approx(lr / np.sqrt(1 - 0.9**t), rel=1e-9)
    assert adagrad[-1] < lr / 40 and rmsprop[-1] == pytest.approx(lr, rel=1e-9)


@pytest.mark.parametrize("name", ["Adagrad", "RMSprop"])
def test_eps_inside_the_root_matters_only_for_tiny_gradients(name):
    def step(g, inside):
        return _steps_taken(
            lambda p: getattr(optimlab, name)(p, lr=1.0, eps=1e-8, eps_inside_sqrt=inside), g, 1
        )[0]

    # large gradients: the same step up to eps / (2 * dw_squared) ~ 5e-7 either way
    assert step(1.0, True) == pytest.approx(step(1.0, False), rel=1e-6)
    # gradient ~ sqrt(eps): inside the root, eps dominates and the step shrinks
    assert step(1e-5, True) < 0.5 * step(1e-5, False)
