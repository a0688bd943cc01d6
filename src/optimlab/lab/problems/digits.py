"""Logistic regression and a small MLP on scikit-learn's 8x8 digits (shipped with scikit-learn).

``sklearn.datasets.load_digits``: 1,797 images of 8x8 pixels, 10 classes (a
copy of the UCI "Optical Recognition of Handwritten Digits" test set).  A
fixed split (seed 0) holds out 360 images for validation; the 64 pixel values
are standardized with the training set's mean and standard deviation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import Tensor, nn

from .base import ClassificationTask, Problem, Task, split_indices

__all__ = ["Digits", "load", "problems"]

N_VAL = 360


@cache
def load() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x, y, x_val, y_val), standardized float32 features and int64 labels."""
    from sklearn.datasets import load_digits  # a lab-only dependency

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.int64)
    train, val = split_indices(len(y), N_VAL, seed=0)
    mean, std = (
        x[train].mean(0),
        x[train].std(0).clamp_min(1.0),
    )  # border pixels are (nearly) always 0
    x = (x - mean) / std
    return x[train], y[train], x[val], y[val]


@dataclass(frozen=True)
class Digits(Problem):
    hidden: int = 0  # 0: logistic regression
    has_accuracy: bool = True
    has_model: bool = True

    def make(self, seed: int, settings: Mapping[str, Any]) -> Task:
        hidden = int(settings.get("hidden", self.hidden))
        if hidden:
            model: nn.Module = nn.Sequential(
                nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10)
            )
        else:
            model = nn.Linear(64, 10)
        return ClassificationTask(model, *load(), int(settings["batch_size"]), seed)


def problems() -> list[Digits]:
    common = (
        "scikit-learn's handwritten digits: 1,437 training and 360 validation images of 8×8 "
        "pixels, standardized, 10 classes; "
    )
    return [
        Digits(
            name="digits_logreg",
            title="Digits: logistic regression",
            description=common
            + "a linear layer 64 → 10 with softmax cross-entropy (a convex problem). Loss in nats.",
            target=0.15,
            target_text="validation loss ≤ 0.15",
            lr_center=dict(sgd=1.0, momentum=0.1, adagrad=0.3, rmsprop=1e-2, adam=3e-2),
            settings={"batch_size": 32},
            step_ms=0.3,
        ),
        Digits(
            name="digits_mlp",
            title="Digits: MLP",
            description=common + "an MLP 64 → 128 → ReLU → 10 with cross-entropy. Loss in nats.",
            target=0.1,
            target_text="validation loss ≤ 0.1",
            lr_center=dict(sgd=0.5, momentum=5e-2, adagrad=3e-2, rmsprop=3e-3, adam=5e-3),
            settings={"batch_size": 32, "hidden": 128},
            hidden=128,
            step_ms=0.5,
        ),
    ]
