"""Datasets as LightningDataModules, read into memory by their readers (`lth.datasets`, one file each); image folders
too large for memory stream from their files instead (`lth.imagefolder`).

Why no torchvision and no `DataLoader`: these datasets fit in memory as uint8 tensors, so a batch is one
indexing operation, and the augmentation (seeded per epoch) runs on whole batches on the GPU. A
`DataLoader` with per-sample transforms in worker processes cannot feed a GPU training a ResNet-20 at
tens of thousands of images a second (see the README's performance section). It also makes the data
order and augmentation of any step a pure function of (seed, global step), which is what lets a level
resume mid-epoch after a kill, and rewind to step k, with exactly the batches the dense run saw.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import lightning as L
import numpy as np
import torch

from lth import imagefolder, user_dataset
from lth.datasets import DATASETS, Arrays, DatasetSpec, Stream
from lth.datasource import MissingDataError, seeded_generator
from lth.inputs import Inputs
from lth.threads import cpus
from lth.user_dataset import Records

FOLDER = "imagefolder"  # image files in class folders, of any dataset (`lth.imagefolder`)


def names() -> list[str]:
    return sorted((*DATASETS, FOLDER))


def downloadable() -> list[str]:
    """The registered datasets `lth data download` fetches: those with published files (not generated ones)."""
    return [name for name, spec in DATASETS.items() if spec.files]


def download(name: str, root: Path) -> None:
    """Fetch a dataset's standard files into `root`, checking each file's md5 before it is kept."""
    spec = DATASETS[name]
    if not spec.files:
        raise ValueError(f"dataset {name} is generated locally and needs no download")
    made = [p for p in (root, *{(root / relative).parent for _, _, relative in spec.files}) if not p.exists()]
    for url, md5, relative in spec.files:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            partial = Path(tmp.name)
            try:
                print(f"fetching {url}", file=sys.stderr)
                with urllib.request.urlopen(url, timeout=60) as response:
                    shutil.copyfileobj(response, tmp)
            except BaseException as err:
                partial.unlink()
                for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):  # leave no empty folder behind
                    if folder.exists() and not any(folder.iterdir()):
                        folder.rmdir()
                if isinstance(err, (urllib.error.URLError, TimeoutError)):
                    raise OSError(f"cannot fetch {url} ({getattr(err, 'reason', err)}): is there a network here? Fetch the files where there is "
                                  f"one (a login node) with this command, or copy them into {target.parent}") from None
                raise
        digest = hashlib.md5(partial.read_bytes()).hexdigest()
        if digest != md5:
            partial.unlink()
            raise ValueError(f"{url}: md5 {digest} does not match the published {md5}; nothing was kept")
        partial.replace(target)
        if spec.extract:
            with tarfile.open(target) as archive:
                archive.extractall(root, filter="data")


def dataset(d) -> DatasetSpec:
    """The dataset a `DataConfig` names: a registered one, one of the user's own by import path (`lth.user_dataset`),
    or the image folder at `d.root` (listed, not decoded)."""
    if user_dataset.is_import_path(d.name):
        return user_dataset.spec(d.name, d.root, cpus() if d.workers is None else d.workers)
    if d.name != FOLDER:
        return DATASETS[d.name]
    return _folder_dataset(d.root, d.cache, d.cache_bytes, d.image_size, d.workers or cpus())


@functools.lru_cache(maxsize=8)
def _folder_dataset(root: str, cache: str | None, cache_bytes: int, image_size: int, workers: int) -> DatasetSpec:
    cache_dir = Path(cache) if cache else imagefolder.default_cache()
    imagefolder.check_cache(Path(root), cache_dir)
    folder = imagefolder.scan(Path(root), cache_dir)
    n = len(folder.files["train"])
    # A tenth of the training set for early stopping, as CIFAR's 5,000 of 50,000; at most ImageNet's own 50,000.
    val_size = min(50_000, max(1, n // 10))
    classes = len(folder.classes)
    size = imagefolder.decoded_bytes(folder)
    if size <= cache_bytes:
        w, h = folder.first_size
        load = functools.partial(_cached_arrays, folder, cache_dir, workers)
        return DatasetSpec(load, classes, (3, h, w), n, val_size, augment=True, folder=folder, name=FOLDER)
    if folder.archive:
        raise MissingDataError(f"data.root: decoded, the images of the archive {root} take {size / 1e9:.3g} GB, more than data.cache_bytes "
                               f"({cache_bytes / 1e9:.3g} GB), and an archive can only be read whole: extract it (tar -xf {root} -C DIR) "
                               "and set data.root to DIR")
    return DatasetSpec(None, classes, (3, image_size, image_size), n, val_size, augment=True, folder=folder, stream=Stream(image_size, workers, cache_dir),
                       name=FOLDER)


def _cached_arrays(folder, cache: Path, workers: int, root: Path) -> Arrays:
    return imagefolder.load_cached(folder, cache, workers)


SPLIT_SEED = 0  # the same validation examples for every seed and arm of a study


def carve(examples: int, val_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, validation) indices of a training set: a permutation seeded by its size alone."""
    perm = torch.randperm(examples, generator=seeded_generator(SPLIT_SEED, examples))
    return perm[val_size:], perm[:val_size]


def _tensor(array: np.ndarray) -> torch.Tensor:
    """An array as a tensor sharing its memory, copied only where the reader's array is read-only (`np.frombuffer` of
    a file's bytes): torch.from_numpy warns of those at every run, though lth never writes into its data."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class Split:
    """A dataset in memory: a seeded train/validation split carved from the training set, the test set
    untouched, and the per-channel statistics of the training split (OpenLTH normalises CIFAR with ImageNet's).
    Inputs stay uint8 (or the dataset's own float), on the device that trains: 150 MB for CIFAR-10."""

    def __init__(self, spec: DatasetSpec, root: str, val_size: int):
        x, y, x_test, y_test = spec.load(Path(root))
        self.identity = identity(spec, root, (x, y, x_test, y_test), content=spec.folder is None)
        # Labels as int64, whatever a reader gives (MNIST's IDX files hold uint8): eager cross-entropy takes uint8 on a
        # CPU, but torch.compile's tracing of the CUDA step refuses it (found on the first GPU run of LeNet-300-100).
        y = _tensor(y).long()
        n = len(x)
        if spec.fixed_val:  # the data's own validation split: the last examples (`lth.user_dataset`)
            train, val = torch.arange(n - val_size), torch.arange(n - val_size, n)
        else:
            train, val = carve(n, val_size)
        self.records = isinstance(x, Records)
        if not self.records:
            x, x_test = (_tensor(a) for a in (x, x_test))
            self.scale = 255.0 if x.dtype == torch.uint8 else 1.0
            dims = [d for d in range(x.dim()) if d != 1]
            x_train = x[train].float() / self.scale
            self.mean = x_train.mean(dims, keepdim=True)[0]
            self.std = x_train.std(dims, keepdim=True)[0]
        self.device = torch.device("cpu")
        self.arrays = {
            "x_train": x[train], "y_train": y[train], "x_val": x[val], "y_val": y[val],
            "x_test": x_test, "y_test": _tensor(y_test).long(),
        }

    def to(self, device: torch.device) -> Split:
        """On `device`: all of it, or, for `Records`, the labels (their batches are collated on the host)."""
        if self.device != device:
            self.arrays = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.arrays.items()}
            if not self.records:
                self.mean, self.std = self.mean.to(device), self.std.to(device)
            self.device = device
        return self

    def normalise(self, x: torch.Tensor | Records) -> Inputs:
        """Inputs in torch's default float dtype (float32 unless a caller chose float64, as tests do); `Records`, as
        their collate batches them."""
        if isinstance(x, Records):
            return x.batch()
        return ((x.float() / self.scale - self.mean) / self.std).to(torch.get_default_dtype())


def identity(spec: DatasetSpec, root: str, arrays: Arrays, content: bool = True) -> dict[str, int | str]:
    """What the loaded data are, recorded with a run (`dataset.json`) and compared when it continues: the sizes of the
    splits as loaded and a sha256 of every array's dtype, shape and bytes (all of them: in-memory datasets are read
    whole anyway, and hashing them took 0.05 s for MNIST and 0.10 s for arrays of CIFAR-10's size on a 2-core CPU). Where they live is not part of it: the
    same files elsewhere continue the same run. Data that disagree with what the dataset declares stop the run here,
    before any training: a 6,000-example copy of MNIST would otherwise train "1ep" as 55 of its epochs under the full
    dataset's run id. `content`: False for an image folder, which its files identify (`DataModule.identity`)."""
    x, y, x_test, y_test = arrays
    where = f"data.root: {root} ({spec.name})"
    if len(x) != spec.train_size:
        raise MissingDataError(f"{where} holds {len(x):,} training examples where the dataset has {spec.train_size:,}; point data.root at "
                               "the whole dataset (or register a dataset of its own size)")
    for name, inputs, labels in (("training", x, y), ("test", x_test, y_test)):
        if len(labels) != len(inputs) or not len(inputs):
            raise MissingDataError(f"{where}: its {name} split has {len(inputs):,} inputs and {len(labels):,} labels")
        if not isinstance(inputs, Records) and tuple(inputs.shape[1:]) != tuple(spec.input_shape):
            raise MissingDataError(f"{where}: its {name} inputs have shape {tuple(inputs.shape[1:])}, the dataset's are {tuple(spec.input_shape)}")
        if labels.min() < 0 or labels.max() >= spec.num_classes:
            raise MissingDataError(f"{where}: its {name} labels span [{labels.min()}, {labels.max()}], outside [0, {spec.num_classes})")
    if not content:
        return {"train_size": len(x), "test_size": len(x_test)}
    digest = hashlib.sha256()
    for array in arrays:
        if isinstance(array, Records):
            array.digest(digest)
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}:{array.shape}:".encode())
        digest.update(array.data)
    return {"train_size": len(x), "test_size": len(x_test), "sha256": digest.hexdigest()}


@functools.lru_cache(maxsize=4)
def load_split(spec: DatasetSpec, root: str, val_size: int) -> Split:
    """Read once per process: every level, arm and pack of a run trains on the same arrays."""
    return Split(spec, root, val_size)


class TrainBatches:
    """The training stream of a pack of K runs: run k's epoch e is a permutation seeded by (seed_k, e), cut
    into equal batches, with its own seeded crops and flips. A batch is x [B, K·C, ...] (the runs side by
    side in the channel dimension, as packed models take them) and y [B, K].

    Iteration starts at the trainer's current global step, so a run restored at step k mid-epoch (a resume
    after a kill, or a rewind) sees exactly the batches the uninterrupted run saw from step k on. All of it
    runs on the data's device as whole-batch tensor operations: no per-sample Python, no worker processes.
    """

    def __init__(self, x, y, batch_size: int, seeds: list[int], augment: bool, normalise, global_step: Callable[[], int], share: tuple[int, int] = (0, 1)):
        self.x, self.y, self.batch_size, self.seeds = x, y, batch_size, seeds
        self.augment, self.normalise, self.global_step = augment, normalise, global_step
        self.share = share  # (rank, ranks): this rank trains on its slice of every run's batch (`lth.distributed`)

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    # Lightning treats loaders with these methods as resumable mid-epoch; this one needs no state of its own.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def _epoch(self, seed: int, epoch: int) -> tuple[torch.Tensor, ...]:
        g = seeded_generator(seed, epoch)
        n = len(self.x)
        order = torch.randperm(n, generator=g)
        if not self.augment:
            return (order,)
        return order, torch.randint(0, 9, (n, 2), generator=g), torch.rand(n, generator=g) < 0.5

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = divmod(self.global_step(), len(self))
        # Drawn on the CPU from the seeded generator, so the stream is the same on every device.
        draws = [torch.stack(d).to(self.x.device) for d in zip(*(self._epoch(s, epoch) for s in self.seeds))]
        order, k, b = draws[0], len(self.seeds), self.batch_size
        rank, ranks = self.share
        mine = slice(rank * b // ranks, (rank + 1) * b // ranks)
        for i in range(start, len(self)):
            index = order[:, i * b : (i + 1) * b][:, mine]  # [K, B / ranks]
            x = self.x[index.flatten()]
            if self.augment:
                offsets, flips = draws[1][torch.arange(k, device=index.device)[:, None], index], draws[2].gather(1, index)
                x = crop_and_flip(x, offsets.flatten(0, 1), flips.flatten())
            x = self.normalise(x)
            if isinstance(x, torch.Tensor):  # dict inputs train one run at a time (`lth.network.Network.pack`)
                x = x.view(k, -1, *x.shape[1:]).transpose(0, 1).flatten(1, 2)
            yield x, self.y[index].T


def crop_and_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """The standard CIFAR augmentation (He et al. 2016, §4.2): pad 4 pixels with zeros, take a random
    32×32 crop, flip horizontally with probability 1/2; for a whole batch at once, on its device."""
    n, c, h, w = x.shape
    arange = lambda size: torch.arange(size, device=x.device)  # noqa: E731
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    rows = (offsets[:, 0, None] + arange(h))[:, None, :, None]
    cols = offsets[:, 1, None] + arange(w)
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]
    return padded[arange(n)[:, None, None, None], arange(c)[None, :, None, None], rows, cols]


# Evaluation batch: every member of a pack sees it, so a 16-packed ResNet-20's first activations for 1,000
# images are 16 × 1,000 × 16 × 32 × 32 floats (1 GB); larger would buy few launches for much memory.
EVAL_BATCH = 1000


class EvalBatches:
    """A split in batches; under data parallelism each rank evaluates every `ranks`-th example, and the metrics
    are summed over ranks (`lth.module.PerRunMean`)."""

    def __init__(self, x, y, batch_size: int, normalise, share: tuple[int, int] = (0, 1)):
        rank, ranks = share
        self.x, self.y, self.batch_size, self.normalise = x[rank::ranks], y[rank::ranks], batch_size, normalise

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.x), self.batch_size):
            yield self.normalise(self.x[i : i + self.batch_size]), self.y[i : i + self.batch_size]


class DataModule(L.LightningDataModule):
    """Any dataset for a pack of runs (one seed each; one run is a pack of one): in memory on the trainer's
    device, or streamed from image files (`lth.imagefolder`)."""

    def __init__(self, spec: DatasetSpec, root: str, batch_size: int, val_size: int, seeds: list[int], augment: bool | None = None):
        super().__init__()
        self.spec, self.root, self.batch_size, self.val_size, self.seeds = spec, root, batch_size, val_size, seeds
        self.augment = spec.augment if augment is None else augment

    def check(self) -> None:
        """Fail fast, before any training, if the files are missing or unreadable."""
        if self.spec.stream:
            imagefolder.verify(self.spec.folder, self.spec.stream.cache, self.spec.stream.workers)
        else:
            self.split()

    def identity(self) -> dict:
        """What the data are (`dataset.json`): an image folder's files (`lth.imagefolder.Folder.describe`; its decoded
        pixels would differ with the Pillow that decodes them), or the loaded arrays' sizes and digest (`identity`)."""
        return self.spec.folder.describe() if self.spec.folder else load_split(self.spec, str(self.root), self.val_size).identity

    def split(self) -> Split:
        split = load_split(self.spec, str(self.root), self.val_size)
        return split.to(self.trainer.strategy.root_device) if self.trainer is not None else split

    def _global_step(self) -> int:
        return self.trainer.global_step if self.trainer is not None else 0

    @property
    def share(self) -> tuple[int, int]:
        """(rank, ranks) of this process under data parallelism."""
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def _stream_splits(self) -> dict[str, list[tuple[str, int]]]:
        """The image files of each split, carved as `Split` carves the in-memory datasets: train, val, test, and
        the gap's training subset (the training split's first examples, as many as the test split's)."""
        files = self.spec.folder.files
        train, val = carve(len(files["train"]), self.val_size)
        splits = {"train": [files["train"][i] for i in train.tolist()], "val": [files["train"][i] for i in val.tolist()], "test": files["test"]}
        return splits | {"subset": splits["train"][: len(files["test"])]}

    def train_dataloader(self):
        if self.spec.stream:
            train = self._stream_splits()["train"]
            sampler = imagefolder.StepBatches(len(train), self.batch_size, self.seeds, self.augment, self._global_step, self.share)
            return self._stream(train, batch_sampler=sampler)
        split = self.split()
        a = split.arrays
        return TrainBatches(a["x_train"], a["y_train"], self.batch_size, self.seeds, self.augment, split.normalise, self._global_step, self.share)

    def val_dataloader(self):
        """The validation split, the test split and a fixed training subset, evaluated together at every evaluation:
        the early-stopping step is chosen on the first, the second is read off at that step (Frankle & Carbin 2019,
        §2), and the third, the training split's first examples, as many as the test split's, the same for every arm
        and level, measures how well the network fits what it trained on (the generalisation gap), without
        augmentation."""
        if self.spec.stream:
            splits, (rank, ranks) = self._stream_splits(), self.share
            return [self._stream(f, batch_size=self.batch_size, sampler=[(i, None) for i in range(rank, len(f), ranks)])
                    for f in (splits["val"], splits["test"], splits["subset"])]
        split = self.split()
        a = split.arrays
        n = len(a["x_test"])
        arrays = [(a["x_val"], a["y_val"]), (a["x_test"], a["y_test"]), (a["x_train"][:n], a["y_train"][:n])]
        return [EvalBatches(x, y, EVAL_BATCH, split.normalise, self.share) for x, y in arrays]

    def train_subset(self) -> int:
        """How many training examples the generalisation gap is measured on (`val_dataloader`)."""
        if self.spec.stream:
            return len(self._stream_splits()["subset"])
        a = self.split().arrays
        return min(len(a["x_test"]), len(a["x_train"]))

    def _stream(self, files, **batching) -> imagefolder.Loader:
        workers = self.spec.stream.workers
        return imagefolder.Loader(
            imagefolder.Images(self.spec.folder.root, files, self.spec.stream.image_size), **batching, num_workers=workers,
            pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """The stream's uint8 batches, normalised on the training device; a training batch of K runs' B examples
        each, run-major, laid out as packed models take it: x [B, K·C, H, W], y [B, K]."""
        if not self.spec.stream:
            return batch
        x, y = batch
        mean, std = (torch.tensor(v, device=x.device).view(1, -1, 1, 1) for v in (imagefolder.IMAGENET_MEAN, imagefolder.IMAGENET_STD))
        x = ((x.float() / 255 - mean) / std).to(torch.get_default_dtype())
        if self.trainer is None or self.trainer.training:
            k = len(self.seeds)
            x = x.view(k, -1, *x.shape[1:]).transpose(0, 1).flatten(1, 2)
            y = y.view(k, -1).T
        return x, y

    def first_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Steps 0 to n − 1's training batches of a pack of one, augmented as training augments them: x [B, C, ...],
        y [B] each (fewer than n if the data order is shorter)."""
        batches = itertools.islice(self.train_dataloader(), n)
        return [(x, y[:, 0]) for x, y in (self.on_after_batch_transfer(batch, 0) for batch in batches)]
