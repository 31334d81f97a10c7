"""What a dataset declares (`DatasetSpec`), the registry of them, and what the readers share."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from lth.datasource import MissingDataError
from lth.inputs import Shape

if TYPE_CHECKING:
    from lth import imagefolder

# x_train, y_train, x_test, y_test; inputs that are not one array are held as read (`lth.user_dataset.Records`)
Arrays = tuple[Any, np.ndarray, Any, np.ndarray]


@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[[Path], Arrays]
    num_classes: int
    input_shape: Shape  # of one example (`lth.inputs`)
    train_size: int  # before the validation split
    default_val_size: int
    augment: bool = False  # by default, the CIFAR augmentation: 4-pixel padded random crop and horizontal flip
    files: tuple[tuple[str, str, str], ...] = ()  # (url, md5, file name under root) for `lth data download`
    extract: bool = False
    folder: imagefolder.Folder | None = None  # image files (`data.name: imagefolder`), recorded in the run
    stream: Stream | None = None  # served from the files in DataLoader workers, not from memory
    fixed_val: bool = False  # the last `default_val_size` training examples are the validation split the data give
    records: bool = False  # examples kept as read, batched by their collate (`lth.user_dataset.Records`): one run at a time
    name: str = ""  # as `data.name` says it (set by `register`)


@dataclass(frozen=True)
class Stream:
    """How the image-folder stream path serves: square crops of `image_size`, decoded by `workers` processes;
    `cache` remembers that the files decoded (`lth.imagefolder.verify`)."""

    image_size: int
    workers: int
    cache: Path


DATASETS: dict[str, DatasetSpec] = {}


def register(name: str, spec: DatasetSpec) -> DatasetSpec:
    """Register `spec` under `name`, as lth's own datasets are and as a plugin's may be (`lth.plugins`)."""
    spec = replace(spec, name=name)
    if DATASETS.get(name, spec) != spec:
        raise ValueError(f"the dataset name {name!r} is taken")
    DATASETS[name] = spec
    return spec


def need(path: Path, name: str) -> Path:
    """`path`, which dataset `name` reads; if it is missing, one line saying how to fetch it."""
    if not path.exists():
        raise MissingDataError(f"dataset {name} not found at {path}; fetch it with: lth data download {name} --root {path.parent}")
    return path


def read_idx(path: Path, name: str) -> np.ndarray:
    """An IDX file (gzipped), the format of MNIST and of the datasets made in its image (Fashion-MNIST, KMNIST)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        dims = raw[3]
        shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    except (OSError, EOFError, zlib.error, ValueError, IndexError) as err:  # truncated, not gzip, or not an IDX file
        raise MissingDataError(f"{path} is damaged ({type(err).__name__}); fetch it again with: lth data download {name} "
                               f"--root {path.parent.parent}") from None


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_reader(folder: str, name: str) -> Callable[[Path], Arrays]:
    """The reader of a dataset in MNIST's four IDX files (`IDX_STEMS`, gzipped) under root/`folder`."""

    def load(root: Path) -> Arrays:
        where = need(root / folder, name)  # the folder first: its message names the root to download into
        x, y, x_test, y_test = (read_idx(need(where / f"{stem}.gz", name), name) for stem in IDX_STEMS)
        return x[:, None], y, x_test[:, None], y_test

    return load


def idx_files(base_url: str, folder: str, md5s: tuple[str, str, str, str]) -> tuple[tuple[str, str, str], ...]:
    """`DatasetSpec.files` of the four IDX files at `base_url`, with their published md5s in `IDX_STEMS`' order."""
    return tuple((f"{base_url}{stem}.gz", md5, f"{folder}/{stem}.gz") for stem, md5 in zip(IDX_STEMS, md5s))
