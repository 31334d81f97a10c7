"""A small learnable task for tests: labels are the argmax of a fixed random linear map of Gaussian inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lth.datasets.base import Arrays, DatasetSpec, register


def load(root: Path) -> Arrays:
    g = np.random.default_rng(1234)
    x = g.standard_normal((1280, 3, 8, 8)).astype(np.float32)
    y = (x.reshape(len(x), -1) @ g.standard_normal((192, 4))).argmax(1).astype(np.int64)
    return x[:1024], y[:1024], x[1024:], y[1024:]


register("synthetic", DatasetSpec(load, 4, (3, 8, 8), 1024, 256))
