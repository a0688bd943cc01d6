"""The report's playground runs optimlab's optimizers in JavaScript: its paths must be optimlab's.

Headless Chromium loads the playground page with a list of runs in the URL
(``#selftest=...``); the page writes the paths its JavaScript took into the DOM,
which ``--dump-dom`` prints.  Each path is compared with optimlab's own optimizer
stepping the same function with torch's autograd gradient, in float64.

Tolerance: 1e-9 relative (plus 1e-12 absolute) at every step.  The two sides
round differently — torch may fuse a multiply-add, JavaScript's ``**`` and
``Math.sqrt`` against torch's ``pow`` and ``sqrt``, an analytic gradient against
autograd's — by about 1e-16 per operation; over 150 steps of these
well-conditioned runs that stays below 1e-12, so 1e-9 leaves room without hiding
a wrong formula (a wrong update is off in the first digits within a few steps).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import urllib.parse

import numpy as np
import pytest
import torch

import optimlab
from optimlab.lab import playground
from optimlab.lab.problems import get

CHROMIUM = next(
    (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="the playground test runs the page in headless Chromium: apt-get install chromium",
)

STEPS = 150
RTOL, ATOL = 1e-9, 1e-12

# (function, start, the page's run spec, optimlab's class and keyword arguments)
CASES = [
    ("ill_conditioned", [-4.0, 1.5], dict(optimizer="sgd", lr=0.03), ("SGD", {})),
    ("ill_conditioned", [-4.0, 1.5], dict(optimizer="sgd", lr=0.01, momentum=0.9),
     ("SGD", dict(momentum=0.9))),
    ("ill_conditioned", [-4.0, 1.5],
     dict(optimizer="sgd", lr=0.01, momentum=0.9, momentum_form="lecture"),
     ("SGD", dict(momentum=0.9, momentum_form="lecture"))),
    ("rosenbrock", [-1.2, 1.0], dict(optimizer="sgd", lr=1e-3, momentum=0.9, nesterov=True),
     ("SGD", dict(momentum=0.9, nesterov=True))),
    ("rosenbrock", [-1.2, 1.0],
     dict(optimizer="sgd", lr=1e-3, momentum=0.9, nesterov=True, nesterov_form="lookahead"),
     ("SGD", dict(momentum=0.9, nesterov=True, nesterov_form="lookahead"))),
    ("rosenbrock", [-1.2, 1.0],
     dict(optimizer="sgd", lr=1e-3, momentum=0.9, nesterov=True, nesterov_form="lookahead",
          momentum_form="lecture"),
     ("SGD", dict(momentum=0.9, nesterov=True, nesterov_form="lookahead",
                  momentum_form="lecture"))),
    ("beale", [1.0, 1.5],
     dict(optimizer="sgd", lr=1e-3, momentum=0.9, nesterov=True, momentum_form="lecture"),
     ("SGD", dict(momentum=0.9, nesterov=True, momentum_form="lecture"))),
    ("saddle", [1.5, 1e-3], dict(optimizer="adagrad", lr=0.3), ("Adagrad", {})),
    ("saddle", [1.5, 1e-3], dict(optimizer="adagrad", lr=0.3, eps=1e-3, eps_inside=True),
     ("Adagrad", dict(eps=1e-3, eps_inside_sqrt=True))),
    ("rosenbrock", [-1.2, 1.0], dict(optimizer="rmsprop", lr=0.01), ("RMSprop", {})),
    ("ill_conditioned", [-4.0, 1.5],
     dict(optimizer="rmsprop", lr=0.01, alpha=0.9, eps=1e-4, eps_inside=True),
     ("RMSprop", dict(alpha=0.9, eps=1e-4, eps_inside_sqrt=True))),
    ("beale", [1.0, 1.5], dict(optimizer="adam", lr=0.05), ("Adam", {})),
    ("beale", [1.0, 1.5], dict(optimizer="adam", lr=0.05, bias_correction=False),
     ("Adam", dict(bias_correction=False))),
    ("rastrigin", [2.3, -1.4], dict(optimizer="adam", lr=0.03, beta1=0.8, beta2=0.99),
     ("Adam", dict(betas=(0.8, 0.99)))),
]  # fmt: skip


def _optimlab_path(function: str, start: list[float], cls: str, kwargs: dict) -> np.ndarray:
    f = get(function).function
    w = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = getattr(optimlab, cls)([w], **kwargs)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = f(w[0], w[1])
        loss.backward()
        return loss

    path = [w.detach().clone()]
    for _ in range(STEPS):
        optimizer.step(closure)
        path.append(w.detach().clone())
    return torch.stack(path).numpy()


def _page_paths(tmp_path, specs: list[dict]) -> list[np.ndarray]:
    page = tmp_path / "playground.html"
    page.write_text(playground.page(), encoding="utf-8")
    url = page.as_uri() + "#selftest=" + urllib.parse.quote(json.dumps(specs))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    found = re.search(r'<pre id="selftest-result">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no result in the page (chromium exit {done.returncode}): {done.stderr[-2000:]}"
    return [np.asarray(p, dtype=np.float64) for p in json.loads(html.unescape(found.group(1)))]


def test_the_pages_paths_are_optimlabs(tmp_path):
    specs = [
        {"function": fn, "start": start, "steps": STEPS, **spec} for fn, start, spec, _ in CASES
    ]
    paths = _page_paths(tmp_path, specs)
    assert len(paths) == len(CASES)
    for (fn, start, spec, (cls, kwargs)), js in zip(CASES, paths, strict=True):
        expected = _optimlab_path(fn, start, cls, {**kwargs, "lr": spec["lr"]})
        assert js.shape == expected.shape, (fn, spec)
        error = np.abs(js - expected) / (ATOL + RTOL * np.abs(expected))
        assert error.max() <= 1, (fn, spec, int(error.max(axis=1).argmax()), js[-1], expected[-1])
        assert np.abs(expected[-1] - expected[0]).max() > 1e-3, (fn, spec)  # it moved


def test_a_wrong_update_would_be_caught(tmp_path):
    """The comparison can fail: Adam without bias correction is far from Adam within steps."""
    spec = {"function": "beale", "start": [1.0, 1.5], "steps": STEPS, "optimizer": "adam",
            "lr": 0.05, "bias_correction": False}  # fmt: skip
    (js,) = _page_paths(tmp_path, [spec])
    expected = _optimlab_path("beale", [1.0, 1.5], "Adam", {"lr": 0.05})
    assert np.abs(js - expected)[:5].max() > 1e-3


def test_the_page_is_self_contained():
    text = playground.page()
    assert "http://" not in text and "https://" not in text
    assert "<script src" not in text
