"""A dataset of the user's own, by import path: `data.name: package.module:callable`.

The callable (given `root=data.root` if it takes a `root`) returns a mapping with `train` and `test`, and
optionally `val`, map-style datasets (`len` and `[i]`, as `torch.utils.data.Dataset`), and `num_classes`. An
example is `(input, label)`: a tensor or array, and an integer class. The input shape is read from the first
training example.

lth reads every example once, in `data.workers` DataLoader processes, into memory, and from then on owns the
order exactly as for its built-in datasets (`lth.data`): the examples of step t are a function of (seed, t), so a
run killed mid-epoch resumes, and a level rewinds, onto the batches the uninterrupted run saw, on every rank. What
was read is the run's data identity (`lth.data.identity`: the sizes and a sha256 of every array), and the
callable's source is part of its run id (`lth.config.Experiment.code`): changing either is noticed.

Without `val`, the validation split is carved from `train` as for any dataset (`lth.data.carve`, `data.val_size`,
by default a tenth); with one, it is that split, and `data.val_size` may only repeat its size.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lth.datasets import Arrays, DatasetSpec
from lth.datasource import MissingDataError
from lth.registry import callable_at


def is_import_path(name: str) -> bool:
    return ":" in name


@functools.lru_cache(maxsize=4)
def splits(name: str, root: str) -> dict:
    """The callable's mapping, checked: one call per process (it may build or read something large)."""
    try:
        make = callable_at(name, "data.name")
    except ValueError as err:
        raise MissingDataError(str(err)) from None
    try:
        accepts = inspect.signature(make).parameters
    except (TypeError, ValueError):
        accepts = {}
    try:
        made = make(root=root) if "root" in accepts else make()
    except Exception as err:  # noqa: BLE001 - the user's code may fail in any way; one line, theirs to read
        raise MissingDataError(f"data.name: {name} failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(made, Mapping) or not {"train", "test", "num_classes"} <= set(made):
        raise MissingDataError(f"data.name: {name} returned {type(made).__name__ if not isinstance(made, Mapping) else sorted(made)}, not a mapping "
                               "with train, test (and optionally val) datasets and num_classes")
    classes = made["num_classes"]
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise MissingDataError(f"data.name: {name}'s num_classes is {classes!r}; an integer of 2 or more")
    for split in ("train", "val", "test"):
        if split in made and not (hasattr(made[split], "__len__") and hasattr(made[split], "__getitem__")):
            raise MissingDataError(f"data.name: {name}'s {split} is a {type(made[split]).__name__}, not a map-style dataset (len and [i])")
        if split in made and len(made[split]) == 0:
            raise MissingDataError(f"data.name: {name}'s {split} split is empty")
    return dict(made)


def _example(name: str, split: str, example) -> tuple[torch.Tensor, int]:
    if isinstance(example, Mapping) or not isinstance(example, (tuple, list)) or len(example) != 2:
        raise MissingDataError(f"data.name: {name}'s {split} examples are {type(example).__name__}s, not (input, label) pairs of a "
                               "tensor or array and a class (dict examples, such as token batches, are not read yet)")
    x, y = example
    try:
        return torch.as_tensor(np.asarray(x)), int(y)
    except (TypeError, ValueError) as err:
        raise MissingDataError(f"data.name: {name}'s {split} example: {type(err).__name__}: {err}") from None


@functools.lru_cache(maxsize=4)
def spec(name: str, root: str, workers: int) -> DatasetSpec:
    """What lth needs to know before reading every example: the classes, the first example's shape, the sizes."""
    made = splits(name, root)
    x, _ = _example(name, "train", made["train"][0])
    val = len(made["val"]) if "val" in made else 0
    train = len(made["train"]) + val
    load = functools.partial(_read, name, workers)
    return DatasetSpec(load, made["num_classes"], tuple(x.shape), train, val or max(1, len(made["train"]) // 10), fixed_val=bool(val), name=name)


def _read(name: str, workers: int, root: Path) -> Arrays:
    """Every example of every split, read in `workers` processes in index order, as arrays (train then val)."""
    made = splits(name, str(root))
    out = []
    for split in ("train", "val", "test"):
        if split not in made:
            out.append(None)
            continue
        collate = functools.partial(_stack, name, split)
        loader = DataLoader(made[split], batch_size=256, num_workers=workers, collate_fn=collate, shuffle=False)
        try:
            batches = list(loader)
        except MissingDataError as err:  # from a worker, wrapped in its traceback: its own line is the last
            raise MissingDataError(str(err).strip().splitlines()[-1].removeprefix(f"{MissingDataError.__module__}.MissingDataError: ")) from None
        if shapes := sorted({tuple(x.shape[1:]) for x, _, _ in batches}, key=lambda shape: shape != tuple(batches[0][0].shape[1:]))[1:]:
            raise MissingDataError(f"data.name: {name}'s {split} examples differ in shape: {shapes[0]} against {tuple(batches[0][0].shape[1:])} "
                                   "(a batch of the model's inputs needs them equal)")
        out.append((torch.cat([x for x, _, _ in batches]).numpy(), np.concatenate([y for _, y, _ in batches])))
    (x, y), val, (x_test, y_test) = out
    if val is not None:
        x, y = np.concatenate([x, val[0]]), np.concatenate([y, val[1]])
    return x, y, x_test, y_test


def _stack(name: str, split: str, examples: list) -> tuple[torch.Tensor, np.ndarray, None]:
    pairs = [_example(name, split, e) for e in examples]
    first = pairs[0][0].shape
    for x, _ in pairs:
        if x.shape != first:
            raise MissingDataError(f"data.name: {name}'s {split} examples differ in shape: {tuple(x.shape)} against {tuple(first)} "
                                   "(a batch of the model's inputs needs them equal)")
    return torch.stack([x for x, _ in pairs]), np.array([y for _, y in pairs], dtype=np.int64), None
