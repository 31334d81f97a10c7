"""CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test colour images, 32×32, ten classes. The dataset of
Conv-2/4/6, VGG-19 and ResNet-20 in Frankle & Carbin (2019) and Frankle et al. (2020). Read from the pickled batches
of its Python distribution, under root/cifar-10-batches-py."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from lth.datasets.base import Arrays, DatasetSpec, need, register


def read_batches(paths: list[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3, 32, 32] uint8 and labels of CIFAR's pickled batches (each row 1,024 red, green, then blue values)."""
    xs, ys = [], []
    for path in paths:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def load(root: Path) -> Arrays:
    folder = need(root / "cifar-10-batches-py", "cifar10")
    train = [need(folder / f"data_batch_{i}", "cifar10") for i in range(1, 6)]
    return (*read_batches(train, b"labels"), *read_batches([need(folder / "test_batch", "cifar10")], b"labels"))


register("cifar10", DatasetSpec(
    load, 10, (3, 32, 32), 50000, 5000, augment=True, extract=True,
    files=(("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-python.tar.gz"),),
))
