"""A dataset of the user's own, by import path: `data.name: package.module:callable`.

The callable (given `root=data.root` if it takes a `root`) returns a mapping with `train` and `test`, and
optionally `val`, map-style datasets (`len` and `[i]`, as `torch.utils.data.Dataset`), `num_classes`, and
optionally `collate`. An example is `(input, label)`: the input a tensor or array, or a dict of them (a tokenised
text's `input_ids` and `attention_mask`, passed to the model as keyword arguments, `lth.inputs`); the label an
integer class. The input shape is read from the first training example.

lth reads every example once, in `data.workers` DataLoader processes, into memory, and from then on owns the
order exactly as for its built-in datasets (`lth.data`): the examples of step t are a function of (seed, t), so a
run killed mid-epoch resumes, and a level rewinds, onto the batches the uninterrupted run saw, on every rank.
Inputs of one shape are held as one array; dict inputs, and any inputs with a `collate`, are held as read
(`Records`), and each batch is their `collate` (called with the list of the batch's inputs, it returns the batch's
inputs: padding sequences to the batch's longest, as `transformers.DataCollatorWithPadding` does), or, without
one, their stack. What was read is the run's data identity (`lth.data.identity`: the sizes and a sha256 of every
example), and the callable's source is part of its run id (`lth.config.Experiment.code`): changing either is
noticed.

Without `val`, the validation split is carved from `train` as for any dataset (`lth.data.carve`, `data.val_size`,
by default a tenth); with one, it is that split, and `data.val_size` may only repeat its size.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lth.datasets import Arrays, DatasetSpec
from lth.datasource import MissingDataError, digest_tensor
from lth.inputs import Fields, Inputs
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


def _example(name: str, split: str, example, keys: tuple[str, ...] | None) -> tuple[Inputs, int]:
    """An example as lth holds it: its input (a tensor, or a dict of tensors with the first example's `keys`) and its
    label."""
    if isinstance(example, Mapping) or not isinstance(example, (tuple, list)) or len(example) != 2:
        raise MissingDataError(f"data.name: {name}'s {split} examples are {type(example).__name__}s, not (input, label) pairs of a "
                               "tensor, array or dict of them and a class")
    x, y = example
    try:
        if isinstance(x, Mapping):
            if keys is not None and tuple(sorted(x)) != keys:
                missing = sorted(set(keys) - set(x)) or sorted(set(x) - set(keys))
                raise MissingDataError(f"data.name: {name}'s {split} example has keys {sorted(x)}, the first example {list(keys)} "
                                       f"({missing[0]!r} differs)")
            return {key: torch.as_tensor(np.asarray(value)) for key, value in x.items()}, int(y)
        if keys:
            raise MissingDataError(f"data.name: {name}'s {split} example is a {type(x).__name__}, the first example a dict of {list(keys)}")
        return torch.as_tensor(np.asarray(x)), int(y)
    except (TypeError, ValueError) as err:
        raise MissingDataError(f"data.name: {name}'s {split} example: {type(err).__name__}: {err}") from None


def keys_of(x: Inputs) -> tuple[str, ...]:
    """A dict input's keys, sorted; () for a tensor."""
    return tuple(sorted(x)) if isinstance(x, Mapping) else ()


def stack(inputs: list[Inputs]) -> Inputs:
    """The collate of examples without a collate of their own: stacked, so their shapes must be equal."""
    if isinstance(inputs[0], Mapping):
        return {key: torch.stack([x[key] for x in inputs]) for key in inputs[0]}
    return torch.stack(inputs)


def held_as_records(made: Mapping) -> bool:
    """Whether a dataset's examples are kept as read (`Records`) rather than as one array: dict examples, or any
    examples with a collate of their own."""
    return "collate" in made or isinstance(made["train"][0][0], Mapping)


class Records:
    """Examples kept as they were read, for inputs that are not one array: dicts of tensors (token ids and their
    attention mask), or sequences of differing lengths. A batch is the dataset's `collate` of its examples (padding
    them to the batch's longest), or, without one, their stack. Indexed as the arrays of `lth.data.Split` are, so
    the order of step t is drawn exactly as for any dataset."""

    device = torch.device("cpu")  # batches are collated here; Lightning moves them to the training device

    def __init__(self, inputs: list[Inputs], collate: Callable[[list[Inputs]], Inputs]):
        self.inputs, self.collate = inputs, collate

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: slice | torch.Tensor) -> Records:
        return Records(self.inputs[index] if isinstance(index, slice) else [self.inputs[i] for i in index.tolist()], self.collate)

    def batch(self) -> Inputs:
        return self.collate(self.inputs)

    def digest(self, digest) -> None:
        """Add every example's fields (key, dtype, shape, bytes) to a hash (`lth.data.identity`)."""
        for x in self.inputs:
            for key, value in sorted(x.items()) if isinstance(x, Mapping) else (("", x),):
                digest_tensor(digest, key, value)


@functools.lru_cache(maxsize=4)
def spec(name: str, root: str, workers: int) -> DatasetSpec:
    """What lth needs to know before reading every example: the classes, the first example's shape, the sizes."""
    made = splits(name, root)
    if "collate" in made and not callable(made["collate"]):
        raise MissingDataError(f"data.name: {name}'s collate is a {type(made['collate']).__name__}, not a function of a list of inputs")
    x, _ = _example(name, "train", made["train"][0], None)
    if held_as_records(made):
        collate = made.get("collate", stack)
        try:
            batch = collate([x])
        except Exception as err:  # noqa: BLE001 - the user's collate may fail in any way; one line, theirs to read
            raise MissingDataError(f"data.name: {name}'s collate failed on the first example ({type(err).__name__}: {err})") from None
        shape = Fields.of(batch) if isinstance(batch, Mapping) else tuple(batch.shape[1:])
    else:
        shape = tuple(x.shape)
    val = len(made["val"]) if "val" in made else 0
    train = len(made["train"]) + val
    load = functools.partial(_read, name, workers)
    return DatasetSpec(load, made["num_classes"], shape, train, val or max(1, len(made["train"]) // 10), fixed_val=bool(val),
                       records=held_as_records(made), name=name)


def _read(name: str, workers: int, root: Path) -> Arrays:
    """Every example of every split, read in `workers` processes in index order (train then val): as arrays, or as
    `Records` (`held_as_records`)."""
    made = splits(name, str(root))
    records = held_as_records(made)
    keys = keys_of(_example(name, "train", made["train"][0], None)[0])
    out = []
    for split in ("train", "val", "test"):
        if split not in made:
            out.append(None)
            continue
        # In the workers: each batch of examples checked, and stacked unless they are kept as read (one tensor per
        # batch crosses from a worker, not one per example).
        read = functools.partial(_examples, name, split, keys, stacked=not records)
        loader = DataLoader(made[split], batch_size=256, num_workers=workers, collate_fn=read, shuffle=False)
        try:
            batches = list(loader)
        except MissingDataError as err:  # from a worker, wrapped in its traceback: its own line is the last
            raise MissingDataError(str(err).strip().splitlines()[-1].removeprefix(f"{MissingDataError.__module__}.MissingDataError: ")) from None
        inputs = [_tensors(x) for xs, _ in batches for x in xs] if records else [xs for xs, _ in batches]
        if "collate" not in made:  # stacked, in training: every example's shape must be the first's
            first = _shapes(inputs[0], records)
            if odd := next((s for s in (_shapes(x, records) for x in inputs) if s != first), None):
                raise MissingDataError(_differ(name, split, odd, first))
        labels = np.concatenate([y for _, y in batches])
        out.append((Records(inputs, made.get("collate", stack)) if records else torch.cat(inputs).numpy(), labels))
    (x, y), val, (x_test, y_test) = out
    if val is not None:
        x = Records(x.inputs + val[0].inputs, x.collate) if records else np.concatenate([x, val[0]])
        y = np.concatenate([y, val[1]])
    return x, y, x_test, y_test


def _examples(name: str, split: str, keys: tuple[str, ...], examples: list, stacked: bool) -> tuple[list[Inputs] | torch.Tensor, np.ndarray]:
    pairs = [_example(name, split, e, keys or None) for e in examples]
    inputs, labels = [x for x, _ in pairs], np.array([y for _, y in pairs], dtype=np.int64)
    if not stacked:
        # As arrays, which cross from a worker pickled: a tensor crosses as a shared-memory file, one descriptor each,
        # and the 19,000 of a 9,514-sentence corpus ran out of them; the worker's queue dropped the batch it could not
        # send, and the reader waited for it for ever.
        return [{k: v.numpy() for k, v in x.items()} if isinstance(x, Mapping) else x.numpy() for x in inputs], labels
    first = tuple(inputs[0].shape)
    if odd := next((tuple(x.shape) for x in inputs if x.shape != first), None):
        raise MissingDataError(_differ(name, split, odd, first))
    return torch.stack(inputs), labels


def _tensors(x) -> Inputs:
    return {k: torch.from_numpy(v) for k, v in x.items()} if isinstance(x, Mapping) else torch.from_numpy(x)


def _shapes(x: Inputs | torch.Tensor, one: bool):
    """An example's shapes (`one`), or those of the examples of a stacked batch."""
    if isinstance(x, Mapping):
        return {key: tuple(value.shape) for key, value in x.items()}
    return tuple(x.shape if one else x.shape[1:])


def _differ(name: str, split: str, odd, first) -> str:
    return (f"data.name: {name}'s {split} examples differ in shape: {odd} against {first} (a batch of the model's inputs needs them equal; "
            "a dataset of sequences gives a collate that pads them)")
