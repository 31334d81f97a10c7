"""`data.name: imagefolder`: a dataset of image files in class folders, the layout of ImageNet after its standard
preparation and of most researchers' own data:

    ROOT/train/<class>/*.jpg      the training set; the validation split for early stopping is carved from it
    ROOT/val/<class>/*.jpg        (or ROOT/test/) the held-out set, lth's test split

ROOT may also be a tar archive of that layout (`../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz`). Classes are
the sorted folder names of train/; the run records the mapping (`dataset.json`).

Two ways to serve it, chosen by size:
- **cache**: when the decoded training and test sets fit in `data.cache_bytes` (CIFAR-sized images), every file is
  decoded once into uint8 arrays under `data.cache` (never under the data root, which may be read-only), keyed by
  the files' names, sizes and modification times; from then on the dataset is an in-memory one like MNIST or
  CIFAR-10 (`lth.data.Split`): whole-batch augmentation on the training device, statistics measured on the split.
- **stream**: otherwise (ImageNet: 1.28 M JPEGs), a map-style dataset decoded in `data.workers` DataLoader worker
  processes with the standard ImageNet transforms (`Images`), pinned memory and prefetching.

Both keep lth's promise that the examples and augmentation draws of step t are a function of (seed, t): the
stream's batch sampler (`StepBatches`) draws each epoch's order from the same seeded generator as the cache's
`lth.data.TrainBatches`, so both paths train on the same examples at every step, and hands every example a seed
of its own for its crop and flip, so a worker computes the same crop whichever worker it is and however many
there are. The two paths differ in their transforms only: the cache applies the CIFAR augmentation (padded
crop and flip, He et al. 2016) at the images' own size, the stream ImageNet's (`RandomResizedCrop` and flip for
training; resize and centre crop for evaluation) at `data.image_size`, normalised with ImageNet's mean and std.

Every file is decoded once before any training, in either path: a corrupt, truncated or unreadable file, an
empty class folder, a class missing from one split and a root without images each stop the run with one line
naming the file or folder (`MissingDataError`, exit 2). The stream path records that its files decoded, so the
check costs one pass over the data per dataset version, not per run.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from lth.datasource import MissingDataError, seeded_generator
from lth.files import atomic_write

SUFFIXES = frozenset((".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp"))
HELD_OUT = ("val", "test")  # the held-out folder's names, in order of preference
LAYOUT = "expected train/<class>/* and val/<class>/* (or test/<class>/*)"
# The ImageNet statistics, for the stream path (torchvision's; measured on ImageNet's training set). The cache
# path measures its own on the training split: OpenLTH normalising CIFAR with these is a pitfall.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Evaluation resizes the shorter side to image_size / EVAL_CROP (256 for 224) and takes the centre crop (He et al. 2016, §3.4).
EVAL_CROP = 224 / 256


@dataclass(frozen=True, eq=False)  # hashed by identity: `lth.data.load_split` caches on it, and its lists are long
class Folder:
    """The files of an image-folder dataset, listed, not yet decoded."""

    root: Path
    classes: tuple[str, ...]
    files: dict[str, list[tuple[str, int]]]  # "train" / "test" -> (name relative to root, label), sorted by name
    stamp: str  # names, sizes and modification times: the cache's key
    first_size: tuple[int, int]  # (width, height) of the first training image

    @property
    def archive(self) -> bool:
        return self.root.is_file()

    def describe(self) -> dict:
        """What the run records of its dataset (`dataset.json`): a run resumed on other files is refused."""
        names = hashlib.sha256("\n".join(f"{n}\t{c}" for s in ("train", "test") for n, c in self.files[s]).encode()).hexdigest()
        return {"classes": list(self.classes), "train": len(self.files["train"]), "test": len(self.files["test"]), "files_sha256": names}


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lth"


def scan(root: Path, cache: Path) -> Folder:
    """List the dataset, checking its layout; one `MissingDataError` line names what is wrong."""
    if not root.exists():
        raise MissingDataError(f"data.root: {root} does not exist ({LAYOUT})")
    entries = _archive_entries(root, cache) if root.is_file() else _folder_entries(root)
    splits: dict[str, dict[str, list[tuple[str, int, int]]]] = {}
    for split in ("train", *HELD_OUT):
        classes = {c: files for (s, c), files in entries.items() if s == split}
        if classes:
            splits[split] = classes
    if "train" not in splits:
        raise MissingDataError(f"data.root: {root} has no train/ folder of class folders ({LAYOUT})")
    held_out = next((s for s in HELD_OUT if s in splits), None)
    if held_out is None:
        raise MissingDataError(f"data.root: {root} has neither val/ nor test/ ({LAYOUT})")
    classes = sorted(splits["train"])
    for a, b in (("train", held_out), (held_out, "train")):
        if missing := sorted(set(splits[a]) - set(splits[b])):
            raise MissingDataError(f"data.root: class folder {missing[0]} is in {root / a} but not in {root / b}")
    for split in ("train", held_out):
        for c in classes:
            if not splits[split][c]:
                raise MissingDataError(f"data.root: {root / split / c} is a class folder with no images ({', '.join(sorted(SUFFIXES))})")
    files = {name: [(f, label) for label, c in enumerate(classes) for f, _, _ in sorted(splits[split][c])]
             for name, split in (("train", "train"), ("test", held_out))}
    digest = hashlib.sha256()
    for split in ("train", held_out):
        for c in classes:
            for entry in sorted(splits[split][c]):
                digest.update(repr(entry).encode())
    first = files["train"][0][0]
    try:
        with _open(root, first) as image:
            size = image.size
    except (OSError, ValueError) as err:
        raise MissingDataError(f"data.root: {root / first if not root.is_file() else f'{root}:{first}'} is not a readable image ({err})") from None
    return Folder(root, tuple(classes), files, digest.hexdigest(), size)


def _folder_entries(root: Path) -> dict[tuple[str, str], list[tuple[str, int, int]]]:
    entries: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    for split in ("train", *HELD_OUT):
        folder = root / split
        if not folder.is_dir():
            continue
        for c in (d for d in os.scandir(folder) if d.is_dir() and not d.name.startswith(".")):
            listed = entries.setdefault((split, c.name), [])
            for f in os.scandir(c.path):
                if f.is_file() and Path(f.name).suffix.lower() in SUFFIXES:
                    st = f.stat()
                    listed.append((f"{split}/{c.name}/{f.name}", st.st_size, st.st_mtime_ns))
    return entries


def _archive_entries(root: Path, cache: Path) -> dict[tuple[str, str], list[tuple[str, int, int]]]:
    """An archive's members, listed once per archive version (2 s for CIFAR-10's 60,000) and remembered."""
    st = root.stat()
    memo = cache / "listings" / f"{hashlib.sha256(repr((str(root.resolve()), st.st_size, st.st_mtime_ns)).encode()).hexdigest()[:24]}.json"
    if memo.exists():
        return {tuple(k.split("/", 1)): [tuple(e) for e in v] for k, v in json.loads(memo.read_text()).items()}
    try:
        with tarfile.open(root) as archive:
            members = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise MissingDataError(f"data.root: {root} is neither a folder nor a readable tar archive ({err})") from None
    entries: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    for m in members:
        parts = m.name.split("/")
        if m.isdir() and len(parts) == 2:
            entries.setdefault((parts[0], parts[1]), [])
        elif m.isfile() and len(parts) == 3 and Path(parts[2]).suffix.lower() in SUFFIXES:
            entries.setdefault((parts[0], parts[1]), []).append((m.name, m.size, int(m.mtime)))
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(memo, json.dumps({"/".join(k): v for k, v in entries.items()}).encode())
    except OSError:
        pass  # listing again next time costs seconds; a read-only cache is not worth stopping for
    return entries


def _open(root: Path, name: str) -> Image.Image:
    if root.is_file():
        with tarfile.open(root) as archive:  # read up to the member only: finding it by name lists the whole archive
            member = next(m for m in archive if m.name == name)
            return Image.open(io.BytesIO(archive.extractfile(member).read()))
    return Image.open(root / name)


def decoded_bytes(folder: Folder) -> int:
    """The cache's size, estimated from the first image (the cache requires every image to share its size)."""
    w, h = folder.first_size
    return 3 * w * h * (len(folder.files["train"]) + len(folder.files["test"]))


# -- decoding, once, before training ---------------------------------------------------------------------


def _decode(source: str | bytes, keep: bool) -> tuple[tuple[int, int], np.ndarray | None] | str:
    """(width, height) and, with `keep`, the RGB pixels [3, H, W]; or why the file does not decode."""
    try:
        with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as image:
            rgb = image.convert("RGB")  # decodes the whole file: a truncated JPEG fails here, not mid-training
    except (OSError, ValueError, SyntaxError) as err:
        return str(err) or type(err).__name__
    return rgb.size, np.asarray(rgb).transpose(2, 0, 1).copy() if keep else None


def _sources(folder: Folder, names: list[str]) -> Iterator[str | bytes]:
    if not folder.archive:
        yield from (str(folder.root / n) for n in names)
        return
    wanted = set(names)
    found = {}
    with tarfile.open(folder.root) as archive:  # one sequential pass: a compressed archive has no random access
        for m in archive:
            if m.name in wanted:
                found[m.name] = archive.extractfile(m).read()
    yield from (found[n] for n in names)


def _decode_all(folder: Folder, workers: int, keep: bool) -> dict[str, np.ndarray] | None:
    """Decode every file (in `workers` processes); with `keep`, the uint8 arrays of both splits."""
    names = [n for s in ("train", "test") for n, _ in folder.files[s]]
    w, h = folder.first_size
    x = np.empty((len(names), 3, h, w), np.uint8) if keep else None
    where = lambda n: f"{folder.root}:{n}" if folder.archive else str(folder.root / n)  # noqa: E731
    with concurrent.futures.ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("fork")) as pool:
        decoded = pool.map(_decode, _sources(folder, names), [keep] * len(names), chunksize=256)
        for i, (name, result) in enumerate(zip(names, decoded)):
            if isinstance(result, str):
                raise MissingDataError(f"data.root: {where(name)} is not a readable image ({result})")
            size, pixels = result
            if keep:
                if size != (w, h):
                    raise MissingDataError(f"data.root: {where(name)} is {size[0]}×{size[1]}, not {w}×{h} like {where(names[0])}; "
                                           "images of several sizes are served from the files: --data.cache_bytes=0")
                x[i] = pixels
    if not keep:
        return None
    n = len(folder.files["train"])
    label = lambda s: np.array([c for _, c in folder.files[s]], np.int64)  # noqa: E731
    return {"x_train": x[:n], "y_train": label("train"), "x_test": x[n:], "y_test": label("test")}


def _entry(folder: Folder, cache: Path, kind: str) -> Path:
    """The cache's folder for this version of the files: their decoded arrays, or the record that they decode."""
    return cache / "imagefolder" / f"{folder.stamp[:24]}-{kind}"


def check_cache(root: Path, cache: Path) -> None:
    """The cache is never written under the data root (which CI and many clusters mount read-only)."""
    if root.is_dir() and cache.resolve().is_relative_to(root.resolve()):
        raise MissingDataError(f"data.cache: {cache} lies under data.root {root}; the cache is never written beside the data")


def load_cached(folder: Folder, cache: Path, workers: int) -> tuple[np.ndarray, ...]:
    """The decoded arrays (x_train, y_train, x_test, y_test), from the cache or decoded now and cached."""
    entry = _entry(folder, cache, "arrays")
    names = ("x_train", "y_train", "x_test", "y_test")
    if not (entry / "done").exists():
        arrays = _decode_all(folder, workers, keep=True)
        _publish(entry, {f"{k}.npy": arrays[k] for k in names} | {"meta.json": folder.describe()})
    return tuple(np.load(entry / f"{k}.npy") for k in names)


def verify(folder: Folder, cache: Path, workers: int) -> None:
    """Decode every file once per dataset version (the stream path's check), and remember that they decoded."""
    entry = _entry(folder, cache, "verified")
    if not (entry / "done").exists():
        _decode_all(folder, workers, keep=False)
        _publish(entry, {"meta.json": folder.describe()})


def _publish(entry: Path, files: dict[str, np.ndarray | dict]) -> None:
    """Write a cache entry whole or not at all: into a temporary folder, renamed into place; a process that
    lost the race to another uses the other's."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}~"))
    except OSError as err:
        raise MissingDataError(f"data.cache: cannot write the decoded images under {entry.parent} ({err.strerror}); "
                               "choose a writable folder with --data.cache=DIR") from None
    try:
        for name, value in files.items():
            if isinstance(value, dict):
                (tmp / name).write_text(json.dumps(value))
            else:
                np.save(tmp / name, value)
        (tmp / "done").touch()
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / "done").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the stream path -----------------------------------------------------------------------------------


def random_resized_crop(width: int, height: int, g: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a crop of random area and aspect ratio, as torchvision's `RandomResizedCrop.get_params`
    draws it (Szegedy et al. 2015, "Going Deeper with Convolutions", §6): ten tries, then the centre crop of the
    whole image at the nearest allowed ratio; from `g`, so a crop is a function of the example's seed."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=g).item())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=g).item())
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return left, top, w, h
    in_ratio = width / height
    w, h = (width, round(width / ratio[0])) if in_ratio < ratio[0] else (round(height * ratio[1]), height) if in_ratio > ratio[1] else (width, height)
    return (width - w) // 2, (height - h) // 2, w, h


class Images(torch.utils.data.Dataset):
    """Decoded image files, one per item: `(index, seed)` for a training example (random resized crop and flip
    drawn from `seed`), `(index, None)` for evaluation (resize and centre crop). Items are uint8 [3, S, S]:
    normalisation runs on the training device, on whole batches (`lth.data.DataModule.on_after_batch_transfer`)."""

    def __init__(self, root: Path, files: list[tuple[str, int]], size: int):
        self.root, self.files, self.size = root, files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int | None]) -> tuple[torch.Tensor, int]:
        index, seed = item
        name, label = self.files[index]
        with Image.open(self.root / name) as image:
            image = image.convert("RGB")
        s = self.size
        if seed is None:
            side = round(s / EVAL_CROP)
            w, h = image.size
            scale = side / min(w, h)
            image = image.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)
            w, h = image.size
            image = image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        else:
            g = torch.Generator().manual_seed(seed)
            left, top, w, h = random_resized_crop(*image.size, g)
            image = image.resize((s, s), Image.BILINEAR, box=(left, top, left + w, top + h))
            if torch.rand(1, generator=g).item() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()), label


class StepBatches(torch.utils.data.Sampler):
    """The stream path's batch sampler for a pack of K runs: run k's epoch e is the permutation the cache path's
    `TrainBatches` draws for (seed_k, e), followed by one seed per example for its crop and flip. A batch is the
    K runs' B items, run-major; it starts at the trainer's global step, so a resume or a rewind replays exactly
    the batches of the uninterrupted run."""

    def __init__(self, examples: int, batch_size: int, seeds: list[int], augment: bool, global_step, share: tuple[int, int] = (0, 1)):
        self.examples, self.batch_size, self.seeds, self.augment, self.global_step = examples, batch_size, seeds, augment, global_step
        self.share = share  # (rank, ranks): this rank reads its slice of every run's batch

    def __len__(self) -> int:
        return self.examples // self.batch_size

    def epoch(self, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = seeded_generator(seed, epoch)
        order = torch.randperm(self.examples, generator=g)
        return order, torch.randint(0, 2**62, (self.examples,), generator=g) if self.augment else None

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        epoch, start = divmod(self.global_step(), len(self))
        draws = [self.epoch(s, epoch) for s in self.seeds]
        b, (rank, ranks) = self.batch_size, self.share
        for i in range(start, len(self)):
            batch = []
            for order, seeds in draws:
                index = order[i * b : (i + 1) * b][rank * b // ranks : (rank + 1) * b // ranks].tolist()
                batch += [(j, None if seeds is None else int(seeds[j])) for j in index]
            yield batch


class Loader(torch.utils.data.DataLoader):
    """A DataLoader Lightning may resume mid-epoch: where it resumes lives in the trainer's global step."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
