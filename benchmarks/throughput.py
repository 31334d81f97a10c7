"""Study throughput: how fast lth trains a whole lottery-ticket study, against the loops others write.

    python benchmarks/throughput.py --model resnet20                 # on a GPU: packs 4-32, fp32 and bf16
    python benchmarks/throughput.py --model lenet_300_100            # on a GPU: packs 16, 48, 96
    python benchmarks/throughput.py --model mnist1d_mlp --device cpu # lth's overhead on a CPU (README)
    python benchmarks/throughput.py --decode 512 --workers 2         # the image-folder stream's images/s per worker
    python benchmarks/throughput.py --devices 2 --model mnist1d_mlp  # 1 against 2 data-parallel ranks

A model's study is the experiment that `STUDIES` names (its batch, optimizer, learning rate, evaluation and
checkpoint cadence), with three seeds. Every configuration trains that model on synthetic data of its
dataset's shape, dtype and split sizes, for `--steps` steps per run:

  reference    a plain LightningModule over standard DataLoaders whose workers build each example in
               Python (CIFAR: the crop and flip), no masks, evaluating at the same cadence: the way most
               lottery-ticket code trains
  plain        a hand-written PyTorch loop over the same in-memory tensors doing exactly lth's work: the same
               steps, masking and evaluations (loss and accuracy on the validation split, the test split and the
               training subset of the generalisation gap), nothing else;
               lth's time over this one is its overhead
  lth          lth's own path (MaskedModule, TrainBatches, Lightning's loop and checkpoints at the
               experiment's cadence; on CUDA the compiled, captured step), masks 80% sparse
  lth-packK    K runs with their own inits, masks and data orders, packed into one network
  lth-packK-nomask   the largest pack with its masking step removed: what masks cost

A configuration's images/s counts all its runs' training images, timed from the end of `--warmup` steps
(compilation, CUDA-graph capture, DataLoader start) to the end of the last evaluation, with the device
synchronised at both ends; its evaluations and checkpoint writes fall inside. `train_share` is the part of
that time outside evaluations and lth's checkpoint writes (not measured for the reference). `study_hours` is the study's training images (every
seed, level and arm, Scratch-B's longer schedules included) over that throughput. Ratios are against the
reference measured in the same process; `--json FILE` writes every figure printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torchmetrics
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lth import config, pruning, threads  # noqa: E402
from lth import masks as M  # noqa: E402
from lth.arms import ARMS  # noqa: E402
from lth.data import DATASETS, DatasetSpec, load_split  # noqa: E402
from lth.imp import Run  # noqa: E402
from lth.models import MODELS  # noqa: E402
from lth.ranking import Weights  # noqa: E402
from lth.training import MemberCheckpoints, pack_modules, trainer  # noqa: E402

SPARSITY = 0.8

# The studies the issue that asked for this benchmark costs out: ResNet-20 on CIFAR-10 with the ticket and three
# controls over 16 levels of 160 epochs (Frankle et al. 2020); LeNet-300-100 with Frankle & Carbin's 50,000
# iterations per level; and the quickstart. Three seeds each.
STUDIES = {
    "resnet20": ("experiments/resnet20_cifar10.yaml", []),
    "lenet_300_100": ("experiments/lenet300_mnist.yaml", ["--arms=[ticket,reinit,random_prune]"]),
    "mnist1d_mlp": ("experiments/quickstart.yaml", []),
}
SEEDS = "--seed=[0,1,2]"
# (device, ResNet-20?) → steps per run and pack sizes: an epoch of 50,000 images and packs to 32 for ResNet-20 on
# a GPU, 2,000 steps and packs to 96 for the small networks; on a CPU what runs in about a minute.
DEFAULTS = {
    ("cuda", True): (390, "4,8,16,32"), ("cuda", False): (2000, "16,48,96"),
    ("cpu", True): (20, "4"), ("cpu", False): (525, "16"),
}
TEST_SIZE = {"cifar10": 10_000, "mnist": 10_000, "mnist1d": 1_000}


@dataclass
class Study:
    cfgs: list[config.Experiment]
    steps: int  # training steps of every seed, level and arm
    images: int

    @classmethod
    def of(cls, model: str) -> Study:
        path, args = STUDIES[model]
        cfgs = config.load_seeds(path, [*args, SEEDS])
        steps = sum(study_steps(Run.open(cfg, progress=False)) for cfg in cfgs)
        return cls(cfgs, steps, steps * cfgs[0].data.batch_size)

    def describe(self) -> dict:
        cfg = self.cfgs[0]
        return {
            "experiment": STUDIES[cfg.model.name][0], "seeds": len(self.cfgs), "arms": len(cfg.arms), "levels": cfg.prune.levels,
            "steps": self.steps, "images": self.images,
        }


def study_steps(run: Run) -> int:
    """The steps one seed of a study trains: the dense network, then at each level every arm, from the rewind
    step or, for arms with their own schedule (Scratch-B), from step 0 for that schedule. Scratch-B's length
    depends on its masks' MACs; here the masks prune the init's magnitudes, not the trained weights', which
    changes which layers lose weights a little and the cap (`scratch_b.max_factor`) binds from level 4 anyway."""
    module = run.build_module(run.cfg.seed)
    weights = {n: w.detach() for n, w in module.weights().items()}
    masks = M.ones_like(weights)
    fractions = pruning.layer_fractions(run.cfg.prune, module.model, module.prunable)
    steps = run.steps.total_steps
    for level in range(1, run.cfg.prune.levels + 1):
        masks = run.prune(weights, masks, fractions)
        for arm in run.arms():
            if arm.from_rewind_point:
                steps += run.steps.total_steps - run.steps.rewind_step
            else:
                steps += arm.own_steps(run.level_context(level, arm, module.model, masks))[0].total_steps
    return steps


def synthetic(name: str) -> DatasetSpec:
    """Random data of dataset `name`'s shapes, dtype (uint8 images, MNIST-1D's floats) and sizes, so that an
    epoch, and an evaluation cadence in epochs, is as long as the study's."""
    spec = DATASETS[name]

    def load(root):
        g = np.random.default_rng(0)
        n, test = spec.train_size, TEST_SIZE[name]
        if len(spec.input_shape) == 3:
            draw = lambda count: g.integers(0, 256, (count, *spec.input_shape), dtype=np.uint8)  # noqa: E731
        else:
            draw = lambda count: g.standard_normal((count, *spec.input_shape), dtype=np.float32)  # noqa: E731
        return draw(n), g.integers(0, spec.num_classes, n), draw(test), g.integers(0, spec.num_classes, test)

    return DatasetSpec(load, spec.num_classes, spec.input_shape, spec.train_size, spec.default_val_size, spec.augment)


class Timer(L.Callback):
    """From the end of the warm-up steps to the end of training (after its last evaluation), and the time spent
    in evaluations and the checkpoint writes that follow them, inside that window."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.evaluating, self._since = warmup, None, None, 0.0, None
        self.evaluations = 0

    @staticmethod
    def now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = self.now()

    def on_validation_start(self, trainer, pl_module):
        self.evaluations += 1
        if self.start is not None:
            self._since = self.now()

    def on_validation_end(self, trainer, pl_module):  # after lth's SaveLast, which comes first in the callbacks
        if self._since is not None:
            self.evaluating += self.now() - self._since
            self._since = None

    def on_train_end(self, trainer, pl_module):
        self.end = self.now()


# -- the reference: a plain Lightning loop over DataLoaders --------------------------------------------------------


class Examples(torch.utils.data.Dataset):
    """Each example built in a DataLoader worker, as torchvision's transforms would: for CIFAR RandomCrop(32,
    padding=4), RandomHorizontalFlip, ToTensor and Normalize; for the others ToTensor and Normalize."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, scale: float, augment: bool):
        # On the host whatever device the cached split was moved to by an earlier configuration: workers read it.
        self.x, self.y, self.mean, self.std = x.cpu().numpy(), y.cpu().numpy(), mean[0].cpu(), std[0].cpu()
        self.scale, self.augment = scale, augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        example = self.x[i]
        if self.augment:
            padded = np.pad(example, ((0, 0), (4, 4), (4, 4)))
            r, c = np.random.randint(0, 9, 2)
            example = padded[:, r : r + 32, c : c + 32]
            if np.random.rand() < 0.5:
                example = example[:, :, ::-1]
        return (torch.from_numpy(example.astype(np.float32) / self.scale) - self.mean) / self.std, int(self.y[i])


def plain_optimizer(t: config.TrainConfig, parameters) -> torch.optim.Optimizer:
    """The study's optimizer as the reference and plain loops build it: torch's defaults, no LR schedule."""
    if t.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.Adam(parameters, lr=t.lr, weight_decay=t.weight_decay)


class Reference(L.LightningModule):
    def __init__(self, cfg: config.Experiment, spec: DatasetSpec):
        super().__init__()
        self.cfg = cfg
        self.model = MODELS[cfg.model.name](spec.input_shape, spec.num_classes)
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(spec.num_classes, average="micro")
        self.test_acc = torchmetrics.classification.MulticlassAccuracy(spec.num_classes, average="micro")
        self.val_loss = torchmetrics.MeanMetric()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        logits = self.model(x)
        if dataloader_idx == 0:
            self.val_loss.update(F.cross_entropy(logits, y, reduction="none"))
            self.val_acc.update(logits, y)
        else:
            self.test_acc.update(logits, y)

    def on_validation_epoch_end(self):
        for metric in (self.val_loss, self.val_acc, self.test_acc):
            self.log(type(metric).__name__, metric.compute())
            metric.reset()

    def configure_optimizers(self):
        return plain_optimizer(self.cfg.train, self.model.parameters())


def reference(run: Run, steps: int, warmup: int, workers: int, device: str) -> Timer:
    split = load_split(DATASETS[run.cfg.data.name], "unused", run.steps.val_size)
    a, spec = split.arrays, DATASETS[run.cfg.data.name]
    loader = lambda s, shuffle, batch, augment: torch.utils.data.DataLoader(  # noqa: E731
        Examples(a[f"x_{s}"], a[f"y_{s}"], split.mean, split.std, split.scale, augment), batch_size=batch, shuffle=shuffle,
        drop_last=shuffle, num_workers=workers, pin_memory=device == "cuda", persistent_workers=workers > 0,
    )
    timer = Timer(warmup)
    L.Trainer(
        accelerator=device, devices=1, max_steps=steps, val_check_interval=run.steps.eval_every, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, precision=run.cfg.train.precision, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    ).fit(
        Reference(run.cfg, spec), loader("train", True, run.cfg.data.batch_size, run.cfg.data.augment),
        [loader("val", False, 1000, False), loader("test", False, 1000, False)],
    )
    return timer


# -- plain: lth's work, written as one loop -------------------------------------------------------------------------


def plain(run: Run, steps: int, warmup: int, device: str) -> Timer:
    split = load_split(DATASETS[run.cfg.data.name], "unused", run.steps.val_size).to(torch.device(device))
    a = split.arrays
    module = run.build_module(run.cfg.seed).to(device)
    model, t = module.model, run.cfg.train
    weights = list(module.weights().values())
    keep = [m.to(w) for w, m in zip(weights, sparse_masks(module).values())]
    with torch.no_grad():
        torch._foreach_mul_(weights, keep)
    optimizer = plain_optimizer(t, model.parameters())
    autocast = torch.autocast(device, torch.bfloat16, enabled=t.precision == "bf16-mixed")
    generator = torch.Generator().manual_seed(0)
    x_train, y_train, b = a["x_train"], a["y_train"], run.cfg.data.batch_size
    timer = Timer(warmup)
    step = 0
    while step < steps:
        order = torch.randperm(len(x_train), generator=generator).to(device)
        for i in range(len(x_train) // b):
            index = order[i * b : (i + 1) * b]
            x, y = split.normalise(x_train[index]), y_train[index]
            with autocast:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                torch._foreach_mul_(weights, keep)
            step += 1
            if step == warmup:
                timer.start = timer.now()
            if step % run.steps.eval_every == 0:  # as Lightning's loop: on the cadence only
                timer.on_validation_start(None, None)
                model.eval()
                with torch.no_grad(), autocast:
                    subset = len(a["x_test"])  # lth's generalisation-gap subset of the training split
                    for xs, ys in ((a["x_val"], a["y_val"]), (a["x_test"], a["y_test"]), (x_train[:subset], y_train[:subset])):
                        total, correct, n = 0.0, 0, 0
                        for j in range(0, len(xs), 1000):
                            xe, ye = split.normalise(xs[j : j + 1000]), ys[j : j + 1000]
                            logits = model(xe)
                            total += F.cross_entropy(logits.float(), ye, reduction="sum").item()
                            correct += int((logits.argmax(1) == ye).sum())
                            n += len(ye)
                model.train()
                timer.on_validation_end(None, None)
            if step == steps:
                break
    timer.end = timer.now()
    return timer


# -- lth's path --------------------------------------------------------------------------------------------------


def sparse_masks(module) -> M.Masks:
    weights = {n: w.detach().cpu() for n, w in module.weights().items()}
    return Weights().keep({n: w.abs() for n, w in weights.items()}, M.ones_like(weights), {n: SPARSITY for n in weights}, "global")


def lth_path(runs: list[Run], warmup: int, masked: bool) -> Timer:
    members = []
    for run in runs:
        module = run.build_module(run.cfg.seed)
        masks = sparse_masks(module)
        module.set_masks(masks)
        members.append(run.as_member(0, ARMS["ticket"], module, masks, None, 0, run.dir.arm(0, "ticket"), run.dir.rewind, run.cfg.seed))
    run = runs[0]
    module = pack_modules([m.module for m in members], run.training().build)
    if not masked:
        module._mask_step = lambda: None
    timer = Timer(warmup)
    fit = trainer(run.steps, MemberCheckpoints(members), [timer], run.cfg.train, progress=False)
    fit.fit(module, datamodule=run.data([m.data_order for m in members]))
    return timer


def peak_memory_mb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def spin(seconds: float) -> None:
    """The competing load of `--busy`: one process keeping one core busy, for at most `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def measure(model: str, precision: str, steps: int, warmup: int, packs: list[int], workers: int, deterministic: bool, device: str, tmp: Path,
            busy: bool = False, measured=lambda rows: None) -> dict:
    """Every configuration's figures; `measured(rows)` after each, so that a run stopped at a time cap keeps them."""
    study = Study.of(model)
    cfg0 = study.cfgs[0]
    synthetic_name = f"synthetic_{cfg0.data.name}"
    DATASETS[synthetic_name] = synthetic(cfg0.data.name)

    def runs(k: int, name: str) -> list[Run]:
        """K seeds of the study's experiment on the synthetic data, with its own evaluation and checkpoint
        cadence, trained for `steps` steps from a rewind point of 0 with no LR milestones."""
        path, study_args = STUDIES[model]
        args = [
            *study_args, f"--data.name={synthetic_name}", "--data.root=unused", f"--train.duration={steps}it", "--train.milestones=[]",
            "--prune.rewind=0", f"--train.precision={precision}", f"--train.deterministic={str(deterministic).lower()}",
            f"--out_dir={tmp / name}", f"--pack={k}",
        ]
        return [Run.open(config.load(path, [*args, f"--seed={seed}"]), progress=False) for seed in range(k)]

    eval_every = runs(1, "probe")[0].steps.eval_every

    rows = []

    def row(name: str, k: int, timer: Timer, timed_evaluations: bool) -> None:
        seconds = timer.end - timer.start
        rate = (steps - warmup) * cfg0.data.batch_size * k / seconds
        rows.append({
            "config": name, "runs": k, "evaluations": timer.evaluations, "images_per_s": rate, "study_hours": study.images / rate / 3600,
            "train_share": 1 - timer.evaluating / seconds if timed_evaluations else None, "peak_memory_mb": peak_memory_mb(device),
        })
        print(f"  {name:<18} {rate:>12,.0f} images/s", flush=True)
        measured(rows)

    def timed(name: str, k: int, timed_evaluations: bool, count: int, train, *args) -> None:
        """`count` threads: lth's policy for lth and the plain loop doing its work, torch's default (every CPU) for the reference."""
        torch.set_num_threads(count)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        row(name, k, train(*args), timed_evaluations)
        rows[-1]["threads"] = count

    policy = lambda run: threads.choose(run.step_macs, threads.cpus(), workers=0).count  # noqa: E731
    timed("reference", 1, False, os.cpu_count() or 1, reference, runs(1, "reference")[0], steps, warmup, workers, device)
    timed("plain", 1, True, policy(runs(1, "plain")[0]), plain, runs(1, "plain")[0], steps, warmup, device)
    timed("lth", 1, True, policy(runs(1, "lth")[0]), lth_path, runs(1, "lth"), warmup, True)
    for k in packs:
        timed(f"lth-pack{k}", k, True, policy(runs(k, f"pack{k}")[0]), lth_path, runs(k, f"pack{k}"), warmup, True)
    if packs:
        k = packs[-1]
        timed(f"lth-pack{k}-nomask", k, True, policy(runs(k, f"pack{k}-nomask")[0]), lth_path, runs(k, f"pack{k}-nomask"), warmup, False)
    base = rows[0]["images_per_s"]
    for r in rows:
        r["ratio"] = r["images_per_s"] / base
    by = {r["config"]: r for r in rows}
    result = {
        "model": model, "device": device, "precision": precision, "busy": busy, "steps": steps, "warmup": warmup, "eval_every": eval_every,
        "batch_size": cfg0.data.batch_size, "study": study.describe(), "rows": rows,
        "overhead": by["plain"]["images_per_s"] / by["lth"]["images_per_s"],
    }
    if packs:
        result["mask_cost"] = 1 - by[f"lth-pack{packs[-1]}"]["images_per_s"] / by[f"lth-pack{packs[-1]}-nomask"]["images_per_s"]
    return result


def render(result: dict) -> str:
    s = result["study"]
    lines = [
        f"\n{result['model']}, precision {result['precision']}, batch {result['batch_size']}, {result['steps']:,} steps per run "
        f"({result['warmup']} untimed), evaluation every {result['eval_every']} steps" + (", beside one competing busy process" if result["busy"] else ""),
        f"study: {s['experiment']}, {s['seeds']} seeds × {s['arms']} arms × {s['levels']} levels: {s['steps']:,} steps, {s['images']:,} images",
        f"| configuration | runs | images/s (all runs) | × reference | study hours on this {'GPU' if result['device'] == 'cuda' else 'CPU'} "
        "| time in training steps | peak device memory (MB) | threads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        share = "" if r["train_share"] is None else f"{r['train_share']:.1%}"
        memory = "" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:,.0f}"
        lines.append(f"| {r['config']} | {r['runs']} | {r['images_per_s']:,.0f} | {r['ratio']:.2f} | {r['study_hours']:,.3g} | {share} | {memory} "
                     f"| {r['threads']} |")
    lines.append(f"lth takes {result['overhead']:.2f}× the plain loop's time for the same steps, masking and evaluations (1 run)")
    if "mask_cost" in result:
        lines.append(f"masks cost {result['mask_cost']:.1%} of the largest pack's throughput")
    return "\n".join(lines)


def slowdowns(results: list[dict]) -> str:
    """Per configuration, its time beside the competing process over its quiet time."""
    quiet = {(r["precision"], row["config"]): row for r in results if not r["busy"] for row in r["rows"]}
    lines = ["\n| precision | configuration | threads | images/s quiet | images/s busy | time busy ÷ quiet |", "|---|---|---|---|---|---|"]
    for r in (r for r in results if r["busy"]):
        for row in r["rows"]:
            q = quiet[r["precision"], row["config"]]
            row["slowdown"] = q["images_per_s"] / row["images_per_s"]
            lines.append(f"| {r['precision']} | {row['config']} | {row['threads']} | {q['images_per_s']:,.0f} | {row['images_per_s']:,.0f} "
                         f"| {row['slowdown']:.2f} |")
    return "\n".join(lines)


def decode(images: int, workers: int, tmp: Path) -> list[dict]:
    """The image-folder stream's training pipeline (decode, RandomResizedCrop 224, flip; `lth.imagefolder`) through
    its DataLoader at 1 to `workers` worker processes, on `images` synthetic JPEGs of ImageNet's typical size
    (500×375, quality 90: smooth colour fields with grain, about ImageNet's bytes per image)."""
    from PIL import Image

    from lth.imagefolder import Images, Loader, StepBatches

    g = np.random.default_rng(0)
    folder = tmp / "train" / "n00000000"
    folder.mkdir(parents=True)
    for i in range(images):
        field = np.asarray(Image.fromarray(g.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC), np.int16)
        grain = g.integers(-24, 25, field.shape)
        Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.JPEG", quality=90)
    files = [(f"train/n00000000/{i:05d}.JPEG", 0) for i in range(images)]
    size = sum((tmp / f).stat().st_size for f, _ in files) / images
    rows = []
    for w in range(1, workers + 1):
        loader = Loader(Images(tmp, files, 224), batch_sampler=StepBatches(images, 16, [0], True, lambda: 0), num_workers=w, prefetch_factor=4)
        batches = iter(loader)
        next(batches)  # the workers' start
        started = time.perf_counter()
        count = sum(len(y) for _, y in batches)
        rate = count / (time.perf_counter() - started)
        rows.append({"workers": w, "images_per_s": rate, "images_per_s_per_worker": rate / w, "jpeg_kb": size / 1e3})
        print(f"decode + RandomResizedCrop 224 + flip, {w} worker{'s' if w > 1 else ''}: {rate:,.0f} images/s ({rate / w:,.0f} per worker; "
              f"JPEGs of {size / 1e3:.0f} kB)", flush=True)
    return rows


def scaling(model: str, devices: int, steps: int, tmp: Path) -> list[dict]:
    """lth's training on 1 and on `devices` data-parallel ranks (`lth.distributed`, Lightning's DDP), each an
    `lth run` child process of the model's study (its batch and optimizer; one seed, the dense level, `steps` steps,
    synthetic data): images/s from the run's own training time (`wall_seconds`: the fit, not the start-up)."""
    path, _ = STUDIES[model]
    batch = config.load_seeds(path, [SEEDS])[0].data.batch_size
    rows = []
    for n in (1, devices):
        args = [sys.executable, "-m", "lth.cli", "run", path, f"--model={model}", "--data.name=synthetic", "--data.augment=false", "--seed=0",
                "--arms=[ticket]", "--prune.levels=0", "--prune.rewind=0", "--train.milestones=[]", f"--train.duration={steps}it",
                f"--train.eval_every={steps}it", f"--train.checkpoint_every={steps}it", f"--train.devices={n}", f"--out_dir={tmp / str(n)}"]
        # A bound: ranks that wait for each other for ever (a collective one of them skipped) fail here, not hang.
        subprocess.run(args, check=True, capture_output=True, env={**os.environ, "WANDB_MODE": "disabled"}, timeout=600)
        (results,) = (tmp / str(n)).glob("*/*/results.jsonl")
        rate = steps * batch / json.loads(results.read_text().splitlines()[0])["wall_seconds"]
        rows.append({"devices": n, "images_per_s": rate, "speedup": rate / rows[0]["images_per_s"] if rows else 1.0})
        rows[-1]["efficiency"] = rows[-1]["speedup"] / n
        print(f"{model}, {n} rank{'s' if n > 1 else ''}: {rate:,.0f} images/s, {rows[-1]['speedup']:.2f}× one, scaling efficiency "
              f"{rows[-1]['efficiency']:.0%}", flush=True)
    if not torch.cuda.is_available():
        print("(on a CPU the ranks share the same cores: this shows DDP's overhead, not its scaling)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(STUDIES), default="resnet20", help="the study to cost out")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if cuda else "cpu")
    parser.add_argument("--precision", default=None, help="comma-separated train.precision values (default: 32,bf16-mixed on CUDA, 32 on a CPU)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: DEFAULTS)")
    parser.add_argument("--packs", default=None, help="comma-separated pack sizes K (default: DEFAULTS)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="the reference's DataLoader workers")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps at the start of each configuration (default: 20 on CUDA, 3 on a CPU)")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True, help="lth's train.deterministic")
    parser.add_argument("--busy", action="store_true", help="measure every configuration again beside one competing busy process it starts")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--decode", type=int, metavar="IMAGES", help="instead, time the image-folder stream's decoding of this many "
                        "ImageNet-sized JPEGs at 1 to --workers worker processes")
    parser.add_argument("--devices", type=int, metavar="N", help="instead, lth's images/s on 1 and on N data-parallel ranks (--model's study, "
                        "--steps steps, synthetic data) and the scaling efficiency")
    args = parser.parse_args(argv)
    if args.devices:
        if args.devices < 2:
            parser.error("--devices: compare one rank with at least 2")
        with tempfile.TemporaryDirectory() as tmp:
            rows = scaling(args.model, args.devices, args.steps or 200, Path(tmp))
        if args.json:
            args.json.write_text(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(), "model": args.model, "scaling": rows}, indent=2))
        return 0
    if args.decode:
        with tempfile.TemporaryDirectory() as tmp:
            rows = decode(args.decode, args.workers, Path(tmp))
        if args.json:
            args.json.write_text(json.dumps({"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "decode": rows}, indent=2))
        return 0
    on_cuda = args.device == "cuda"
    if on_cuda and not cuda:
        parser.error("--device cuda: no CUDA device here")
    default_steps, default_packs = DEFAULTS[args.device, args.model == "resnet20"]
    steps = args.steps or default_steps
    warmup = args.warmup if args.warmup is not None else 20 if on_cuda else 3
    precisions = (args.precision or ("32,bf16-mixed" if on_cuda else "32")).split(",")
    packs = [int(k) for k in (default_packs if args.packs is None else args.packs).split(",") if k]
    if steps <= warmup:
        parser.error(f"--steps {steps} must be more than --warmup {warmup}")
    bad = [p for p in precisions if p not in config.PRECISIONS]
    if bad:
        parser.error(f"--precision {bad[0]}: choose from {', '.join(config.PRECISIONS)}")
    if any(k < 1 for k in packs):
        parser.error("--packs: pack sizes are at least 1")

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    device = torch.cuda.get_device_name() if on_cuda else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"{args.model}: torch {torch.__version__}, {device}", flush=True)
    results = []

    def save(partial: list[dict] | None = None) -> None:
        """The JSON so far: a configuration's figures as soon as it is measured (the GPU script caps each part)."""
        if args.json:
            unfinished = [{"precision": precision, "busy": busy, "rows": partial, "unfinished": True}] if partial else []
            args.json.write_text(json.dumps({"device": device, "torch": torch.__version__, "deterministic": args.deterministic,
                                             "results": results + unfinished}, indent=2))

    for precision, busy in itertools.product(precisions, (False, True) if args.busy else (False,)):
        competitor = multiprocessing.get_context("spawn").Process(target=spin, args=(3600,)) if busy else None
        if competitor:
            competitor.start()
        try:
            with tempfile.TemporaryDirectory() as tmp:  # the runs' checkpoints
                results.append(measure(args.model, precision, steps, warmup, packs, args.workers, args.deterministic, args.device, Path(tmp), busy,
                                       lambda rows: save([dict(row) for row in rows])))
        finally:
            if competitor:
                competitor.terminate()
                competitor.join()
        print(render(results[-1]), flush=True)
    if args.busy:
        print(slowdowns(results), flush=True)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
