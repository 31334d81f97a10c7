"""CIFAR-100 (Krizhevsky 2009): CIFAR-10's images and sizes in 100 fine classes. Read from the pickled files of its
Python distribution, under root/cifar-100-python."""

from __future__ import annotations

from pathlib import Path

from lth.datasets.base import Arrays, DatasetSpec, need, register
from lth.datasets.cifar10 import read_batches


def load(root: Path) -> Arrays:
    folder = need(root / "cifar-100-python", "cifar100")
    return (*read_batches([need(folder / "train", "cifar100")], b"fine_labels"), *read_batches([need(folder / "test", "cifar100")], b"fine_labels"))


register("cifar100", DatasetSpec(
    load, 100, (3, 32, 32), 50000, 5000, augment=True, extract=True,
    files=(("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python.tar.gz"),),
))
