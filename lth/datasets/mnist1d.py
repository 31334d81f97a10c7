"""MNIST-1D (Greydanus 2020): 4,000 training and 1,000 test sequences of 40 values, ten classes, generated from the
`mnist1d` package's templates with its default seed; small enough for a whole study on a laptop CPU (the quickstart's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lth.datasets.base import Arrays, DatasetSpec, register


def load(root: Path) -> Arrays:
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # make_dataset reseeds numpy's global generator
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    f32 = lambda a: a.astype(np.float32)[:, None]  # noqa: E731
    return f32(d["x"]), d["y"].astype(np.int64), f32(d["x_test"]), d["y_test"].astype(np.int64)


register("mnist1d", DatasetSpec(load, 10, (1, 40), 4000, 500))
