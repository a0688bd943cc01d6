"""A small 1-D CNN on MNIST-1D, generated locally (never downloaded).

MNIST-1D (S. Greydanus and D. Kobak, "Scaling down deep learning with
MNIST-1D", ICML 2024, https://arxiv.org/abs/2011.14439) draws 10 digit-like
1-D templates and applies random padding, translation, shear, scaling and
noise: 4,000 training and 1,000 held-out sequences of length 40.  We build it
with ``mnist1d.data.make_dataset(get_dataset_args())`` (seed 42, the package's
defaults), which computes it in about three seconds; ``get_dataset`` would
download a pickle instead, so it is never called.  The generated arrays are
cached under the user's cache directory (``$XDG_CACHE_HOME/optimlab``), written
atomically; a missing or damaged cache is simply rebuilt.

The model is the paper's ``ConvBase``: three Conv1d layers of 25 channels
(kernel 5, 3, 3, stride 2, ReLU) and a linear layer 125 → 10, about 5,000
weights.  The paper reports about 94 % held-out accuracy for it after 6,000
steps of Adam with batches of 100; the lab trains far fewer steps and reports
what it reaches.  The held-out set doubles as the validation set used to pick
the learning rate (there is no third split), so its accuracy is slightly
optimistic.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...checkpoint import atomic_write
from .base import ClassificationTask, Problem, Task

__all__ = ["ConvBase", "MNIST1D", "load", "problems"]


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "optimlab"


def _generate() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset  # a lab-only dependency

    data = make_dataset(get_dataset_args())
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


@cache
def load() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x, y, x_val, y_val): 4,000 + 1,000 sequences of length 40, float32, int64 labels."""
    from mnist1d.data import get_dataset_args

    args = json.dumps(get_dataset_args(as_dict=True), sort_keys=True, default=str)
    path = cache_dir() / f"mnist1d-{hashlib.sha256(args.encode()).hexdigest()[:12]}.npz"
    arrays = None
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError):  # absent or damaged: rebuild
        arrays = _generate()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: f.write(buffer.getvalue()))
        except OSError:
            pass  # a read-only home is no reason to fail; we regenerate next time
    return (
        torch.tensor(arrays["x"], dtype=torch.float32),
        torch.tensor(arrays["y"], dtype=torch.int64),
        torch.tensor(arrays["x_test"], dtype=torch.float32),
        torch.tensor(arrays["y_test"], dtype=torch.int64),
    )


class ConvBase(nn.Module):
    """The MNIST-1D paper's CNN: 3 x (Conv1d, stride 2, ReLU), then a linear classifier."""

    def __init__(self, channels: int = 25, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)  # 40 -> 19
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)  # -> 10
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)  # -> 5
        self.linear = nn.Linear(channels * 5, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x[:, None, :]))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.linear(x.flatten(1))


@dataclass(frozen=True)
class MNIST1D(Problem):
    has_accuracy: bool = True
    has_model: bool = True
    step_ms: float = 1.6
    published: tuple[float, str] | None = (
        0.94,
        "Greydanus & Kobak, “Scaling down deep learning with MNIST-1D” (arXiv:2011.14439, "
        "2020; ICML 2024): this CNN, Adam, 6,000 steps of batches of 100",
    )

    def make(self, seed: int, settings: Mapping[str, Any]) -> Task:
        model = ConvBase(int(settings["channels"]))
        return ClassificationTask(model, *load(), int(settings["batch_size"]), seed)


def problems() -> list[MNIST1D]:
    return [
        MNIST1D(
            name="mnist1d_cnn",
            title="MNIST-1D: 1-D CNN",
            description=(
                "MNIST-1D generated locally (4,000 training, 1,000 held-out sequences of "
                "length 40, 10 classes); the paper's ConvBase CNN (3 conv layers of 25 "
                "channels, ~5k weights), mini-batches of 64 (the full profile: 100, as the "
                "paper). Loss: cross-entropy in nats (ln 10 = 2.30 is a uniform guess)."
            ),
            target=0.9,
            target_text="validation loss ≤ 0.9",
            lr_center=dict(sgd=0.3, momentum=0.1, adagrad=5e-2, rmsprop=5e-3, adam=1e-2),
            settings={"batch_size": 64, "channels": 25},
        )
    ]
