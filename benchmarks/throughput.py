"""Training throughput of ResNet-20 on CIFAR-shaped data: a plain Lightning loop against lth's own path.

    python benchmarks/throughput.py                 # CUDA if present: 50,000 images per run, packs 4, 8, 16
    python benchmarks/throughput.py --images 2560   # smaller (the default on a CPU)

Every configuration trains ResNet-20 (lth.models) with batch 128, SGD with momentum 0.9 and weight decay 1e-4,
on synthetic uint8 images of CIFAR-10's shape with the CIFAR augmentation (4-pixel padded random crop,
horizontal flip) and per-channel normalisation:

  reference   a plain LightningModule over a standard DataLoader whose workers augment each sample in
              Python, no masks: the way most lottery-ticket code trains
  lth         lth's path (MaskedModule, data on the device, the compiled CUDA-graph step), masks 80% sparse
  lth-nomask  the same with the masking step removed, to measure what masks cost
  lth-packK   K runs, each with its own init, masks (80% sparse) and data order, packed into one network

Throughput is images per second over all runs of a configuration, timed from the end of the warm-up steps
(torch.compile, CUDA-graph capture, cuDNN autotuning, DataLoader start) to the last step, the GPU
synchronised at both ends.
Ratios are against the reference measured in the same process. `--json FILE` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lth import config  # noqa: E402
from lth import masks as M  # noqa: E402
from lth.arms import ARMS  # noqa: E402
from lth.data import DATASETS, DatasetSpec  # noqa: E402
from lth.imp import Run  # noqa: E402
from lth.methods import magnitude  # noqa: E402
from lth.models import MODELS  # noqa: E402
from lth.packing import MemberCheckpoints, pack_modules  # noqa: E402
from lth.training import Member, trainer  # noqa: E402

BATCH = 128
SPARSITY = 0.8


def synthetic_cifar(images: int, val: int = 1000) -> DatasetSpec:
    def load(root):
        g = np.random.default_rng(0)
        x = g.integers(0, 256, (images + val, 3, 32, 32), dtype=np.uint8)
        y = g.integers(0, 10, images + val)
        return x, y, x[:val], y[:val]

    return DatasetSpec(load, 10, (3, 32, 32), images + val, val, augment=True)


class Timer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = self._now()
        if trainer.global_step == trainer.max_steps:
            self.end = self._now()

    def seconds(self) -> float:
        return self.end - self.start


# -- (a) the reference: a plain Lightning loop over a DataLoader ---------------------------------------------


class AugmentedImages(torch.utils.data.Dataset):
    """Per-sample augmentation in the DataLoader's workers, as torchvision's RandomCrop(32, padding=4),
    RandomHorizontalFlip, ToTensor and Normalize do it."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self.mean = torch.tensor(x.mean((0, 2, 3)) / 255, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(x.std((0, 2, 3)) / 255, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        padded = np.pad(self.x[i], ((0, 0), (4, 4), (4, 4)))
        r, c = np.random.randint(0, 9, 2)
        image = padded[:, r : r + 32, c : c + 32]
        if np.random.rand() < 0.5:
            image = image[:, :, ::-1]
        return (torch.from_numpy(image.astype(np.float32) / 255) - self.mean) / self.std, int(self.y[i])


class Reference(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = MODELS["resnet20"]((3, 32, 32), 10)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def reference(spec: DatasetSpec, steps: int, warmup: int, workers: int) -> float:
    x, y, _, _ = spec.load(None)
    loader = torch.utils.data.DataLoader(
        AugmentedImages(x, y), batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
    )
    timer = Timer(warmup)
    L.Trainer(
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer],
    ).fit(Reference(), loader)
    return (steps - warmup) * BATCH, timer.seconds()


# -- (b, c) lth's path ------------------------------------------------------------------------------------------


def lth_path(steps: int, warmup: int, pack: int, masked: bool, deterministic: bool, out: Path) -> tuple[int, float]:
    args = [
        "--model=resnet20", "--data.name=synthetic_cifar10", f"--data.batch_size={BATCH}", "--data.root=unused",
        "--train.lr=0.1", "--train.weight_decay=0.0001", f"--train.duration={steps}it", f"--train.eval_every={steps}it",
        f"--train.deterministic={str(deterministic).lower()}", f"--out_dir={out}",
    ]
    runs = [Run.open(config.load(None, args + [f"--seed={seed}"]), progress=False) for seed in range(pack)]
    members = []
    for run in runs:
        module = run.build_module(run.cfg.seed)
        weights = {n: w.detach() for n, w in module.weights().items()}
        masks = magnitude.prune(weights, M.ones_like(weights), {n: SPARSITY for n in weights}, "global")
        module.set_masks(masks)
        members.append(Member(run, 0, ARMS["ticket"], module, masks, None, 0))
    run = runs[0]
    module = pack_modules([m.module for m in members], lambda k: run.build_module(0, k))
    if not masked:
        module._mask_step = lambda: None
    timer = Timer(warmup)
    fit = trainer(run.schedule, MemberCheckpoints(members), [timer], run.cfg, progress=False)
    fit.fit(module, datamodule=run.data([m.run.cfg.seed for m in members]))
    return (steps - warmup) * BATCH * pack, timer.seconds()


def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000 if cuda else 2560, help="training images per run")
    parser.add_argument("--packs", default="4,8,16" if cuda else "2,4", help="pack sizes K to measure")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="reference DataLoader workers")
    parser.add_argument("--warmup", type=int, default=20 if cuda else 3, help="untimed steps at the start of each run")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True, help="lth's train.deterministic")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    steps = args.images // BATCH
    if steps <= args.warmup:
        parser.error(f"--images {args.images} gives {steps} steps of {BATCH}, not more than --warmup {args.warmup}")
    packs = [int(k) for k in args.packs.split(",")]

    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    DATASETS["synthetic_cifar10"] = spec = synthetic_cifar(args.images)
    device = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"ResNet-20, batch {BATCH}, {args.images:,} images per run, torch {torch.__version__}, {device}", flush=True)
    rows = []

    def measure(name: str, images_and_seconds: tuple[int, float], runs: int = 1) -> None:
        images, seconds = images_and_seconds
        rate = images / seconds
        rows.append({"config": name, "runs": runs, "images_per_s": rate, "epoch_s": 50_000 * runs / rate})
        print(f"  {name:<12} {rate:>10,.0f} images/s", flush=True)

    measure("reference", reference(spec, steps, args.warmup, args.workers))
    with tempfile.TemporaryDirectory() as tmp:
        measure("lth", lth_path(steps, args.warmup, 1, True, args.deterministic, Path(tmp) / "lth"))
        measure("lth-nomask", lth_path(steps, args.warmup, 1, False, args.deterministic, Path(tmp) / "nomask"))
        for k in packs:
            measure(f"lth-pack{k}", lth_path(steps, args.warmup, k, True, args.deterministic, Path(tmp) / f"pack{k}"), runs=k)

    base = rows[0]["images_per_s"]
    print("\n| configuration | runs | images/s (all runs) | s per epoch (50,000 images, every run) | × reference |\n|---|---|---|---|---|")
    for r in rows:
        r["ratio"] = r["images_per_s"] / base
        print(f"| {r['config']} | {r['runs']} | {r['images_per_s']:,.0f} | {r['epoch_s']:.2f} | {r['ratio']:.2f} |")
    nomask = next(r for r in rows if r["config"] == "lth-nomask")["images_per_s"]
    mask_cost = 1 - rows[1]["images_per_s"] / nomask
    print(f"\nmasks cost {mask_cost:.1%} of lth's single-run throughput")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "torch": torch.__version__, "images": args.images, "rows": rows, "mask_cost": mask_cost}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
