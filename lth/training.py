"""Training one pack: K members of equal `pack_key` in lockstep as one packed network, under Lightning's loop,
resuming from their own checkpoints, each writing its own checkpoints. What to train and how comes from the
driver (`lth.imp`, `lth.stability`) as values: the members and a `Training`."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import CheckpointIO

from lth import distributed
from lth.arms.base import Arm
from lth.config import TrainConfig
from lth.data import DataModule
from lth.masks import Masks
from lth.module import MaskedModule, Penalty
from lth.packing import pack_checkpoint, pack_state, unpack_checkpoint
from lth.preemption import interrupted, stopping
from lth.run_dir import FINAL, LAST, PREVIOUS, REWIND_CKPT, RunDir
from lth.steps import Steps
from lth.tracking import Tracker


@dataclass
class Member:
    """One (level, arm) of one run, ready to train: its freshly built module (weights and schedule set from its
    arm's `Start`), its masks, and the checkpoint it continues from (its own final.ckpt if it finished,
    last.ckpt if it was interrupted, start.ckpt, or None: the module at step 0)."""

    level: int
    arm: Arm
    module: MaskedModule
    masks: Masks
    resume: Path | None
    start_step: int
    dir: Path  # its checkpoints
    rewind: Path  # the rewind point: where a dense member saves it
    data_order: int  # the seed of its data order
    shared: tuple  # what members of a pack must share besides schedule and optimizer: the run's model and data settings
    optimizer_origin: str  # `Arm.optimizer_origin`
    narrow: bool = False  # trains the physically narrower network (`Arm.narrow`)
    tracker: Tracker | None = None
    # Trains in a pack of its own: a narrow network (its widths are its own masks'), or one a hook may end early
    # (`Schedule.may_end_early`: a pack ends as one).
    alone: bool = False

    def file(self, name: str) -> Path:
        return self.rewind if name == REWIND_CKPT else self.dir / name

    @property
    def finished(self) -> bool:
        return self.resume is not None and self.resume.name == FINAL

    def stopped_at(self) -> int | None:
        """The step it was stopped at earlier and now continues from (its last.ckpt), or None where it starts afresh."""
        return _step(self.resume) if self.resume is not None and self.resume.name in (LAST, PREVIOUS) else None


@dataclass(frozen=True)
class Training:
    """How packs train, from the driver."""

    build: Callable[[int, Steps, TrainConfig, Penalty | None], MaskedModule]  # K packed runs with their recipe (their state is then loaded)
    data: Callable[[list[int]], DataModule]  # the data for K runs, one data order each
    train: TrainConfig  # determinism and precision
    progress: bool


def resume_from(directory: Path, start: Path | None) -> Path | None:
    """Where a member in `directory` continues: its final.ckpt if it finished, its last.ckpt if it was stopped (or
    the one before, if a kill came between setting that aside and writing the new one), else `start` (its
    start.ckpt, or None: its module at step 0)."""
    return next((p for p in (directory / FINAL, directory / LAST, directory / PREVIOUS) if p.exists()), start)


def _step(checkpoint: Path | None) -> int:
    """The step a member resumes at; each checkpoint is read once however often its step is asked for (a member's
    pack key, its common step), and again only once rewritten."""
    if checkpoint is None:
        return 0
    written = checkpoint.stat()
    return _step_of(checkpoint, written.st_mtime_ns, written.st_size)


@functools.lru_cache(maxsize=1024)
def _step_of(checkpoint: Path, mtime_ns: int, size: int) -> int:
    return RunDir.load(checkpoint)["global_step"]


def pack_key(member: Member, step: bool = True) -> tuple:
    """Members with equal keys can train in lockstep as one pack: same network and data shapes, same schedule,
    optimizer settings and training penalty, at the same step, with optimizer states of the same origin (they
    share its scalars, such as Adam's step count); an arm whose hooks move its masks packs with itself alone."""
    module = member.module
    alone = id(member) if member.alone else None
    return (member.shared, module.steps, repr(module.train_cfg), repr(module.penalty), member.resume is None, _step(member.resume) if step else None,
            member.optimizer_origin, member.finished, alone, member.arm.name if member.arm.moves_masks else None)


def common_step(members: list[Member]) -> None:
    """Members that would pack together but for their step resume from one: a kill between two members' last.ckpt
    writes leaves those written a save ahead, and trained as packs apart they would round differently from the
    uninterrupted run. Each member ahead steps back to its previous.ckpt where that is the others' step."""
    groups: dict[tuple, list[Member]] = {}
    for member in members:
        if not member.finished and member.resume is not None:
            groups.setdefault(pack_key(member, step=False), []).append(member)
    for group in groups.values():
        steps = {id(m): _step(m.resume) for m in group}
        behind = min(steps.values())
        for m in group:
            previous = m.dir / PREVIOUS
            if steps[id(m)] > behind and m.resume != previous and previous.exists() and _step(previous) == behind:
                m.resume = previous


def packs(members: list[Member], size: int) -> list[list[Member]]:
    common_step(members)
    groups: dict[tuple, list[Member]] = {}
    for member in members:
        groups.setdefault(pack_key(member), []).append(member)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def pack_modules(modules: list[MaskedModule], build: Callable[[int, Steps, TrainConfig, Penalty | None], MaskedModule]) -> MaskedModule:
    """One module, built by `build`, training `modules` (equal schedules and recipes) from their weights and masks."""
    first = modules[0]
    packed = build(len(modules), first.steps, first.train_cfg, first.penalty)
    packed.load_state_dict(pack_state([m.state_dict() for m in modules]))
    return packed


class MemberCheckpoints(CheckpointIO):
    """Lightning's checkpoint I/O for a pack: saving `name` writes each member's own single-run checkpoint
    (`Member.file(name)`); loading packs the members' own checkpoints. On disk there are only single-run
    checkpoints, so a run resumes whatever it is packed with next time."""

    def __init__(self, members: list[Member]):
        super().__init__()
        self.members = members

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        for member, part in zip(self.members, unpack_checkpoint(checkpoint, len(self.members))):
            target = member.file(str(path))
            if target.name == LAST and target.exists() and distributed.writer():
                os.replace(target, target.with_name(PREVIOUS))  # kept until every member has its new last.ckpt (`common_step`)
            RunDir.save(part, target)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return pack_checkpoint([RunDir.load(m.resume) for m in self.members])

    def remove_checkpoint(self, path) -> None:
        raise NotImplementedError("lth never deletes checkpoints")


class StopOnSignal(Callback):
    """Checkpoints the exact training position and stops when a stopping signal has arrived."""

    def __init__(self, saved: list[Path]):
        self.saved = saved

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if stopping(pl_module.device):
            trainer.save_checkpoint("last.ckpt")
            raise interrupted(f"at step {trainer.global_step}; checkpointed to {', '.join(map(str, self.saved))}")


class SaveLast(Callback):
    """Each member's `last.ckpt`, right after every evaluation at a multiple of `checkpoint_every` steps: the most
    a kill can cost. Written after an evaluation so that it holds the validation history up to its step."""

    def __init__(self, every: int):
        self.every = every

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.global_step % self.every == 0:
            trainer.save_checkpoint(LAST)


class LogEvaluations(Callback):
    """Each member's validation curve and training loss, to its own run's W&B run."""

    def __init__(self, members: list[Member]):
        self.members = members

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not any(m.tracker for m in self.members):
            return
        losses = pl_module.last_loss.tolist() if pl_module.last_loss is not None else [None] * len(self.members)
        for k, member in enumerate(self.members):
            if member.tracker:
                member.tracker.evaluation(member.level, pl_module.val_history[k][-1], losses[k])


def trainer(steps: Steps, io: MemberCheckpoints, callbacks: list[Callback], train: TrainConfig, progress: bool) -> L.Trainer:
    parallel = train.devices * train.num_nodes > 1
    return L.Trainer(
        devices=train.devices,  # Lightning's "auto" would take every GPU of the node
        num_nodes=train.num_nodes,
        strategy=distributed.Strategy(timeout=distributed.TIMEOUT) if parallel else "auto",
        use_distributed_sampler=False,  # lth's loaders take each rank's share themselves (`lth.data`)
        sync_batchnorm=parallel,  # batch statistics of the whole batch, as on one device
        max_steps=steps.total_steps,
        max_epochs=-1,
        val_check_interval=steps.eval_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        deterministic=train.deterministic,
        precision=train.precision,
        benchmark=not train.deterministic,  # cuDNN's autotuned algorithms are fast, but may differ run to run
        # The run's own hooks first: a stop at step t checkpoints after every hook of step t has acted (a mask that
        # a hook changes at t, saved unchanged, would never change on resume, which continues from t + 1).
        callbacks=[*callbacks, SaveLast(steps.checkpoint_every), StopOnSignal([m.file(LAST) for m in io.members])],
        plugins=[io],
        logger=False,  # each member's metrics go to its own run's W&B run (LogEvaluations)
        enable_checkpointing=False,
        enable_progress_bar=progress and sys.stderr.isatty(),
        enable_model_summary=False,
    )


def train_pack(members: list[Member], how: Training, callbacks: list[Callback]) -> MaskedModule:
    """Train K members (equal `pack_key`s) in lockstep as one packed network, resuming from their own
    checkpoints; write each member's final.ckpt; return the trained packed module (member k is its k-th run)."""
    first = members[0]
    module = first.module if first.narrow else pack_modules([m.module for m in members], how.build)
    for m in members if distributed.writer() else ():
        m.dir.mkdir(parents=True, exist_ok=True)
    io = MemberCheckpoints(members)
    data = how.data([m.data_order for m in members])
    fit = trainer(module.steps, io, [LogEvaluations(members), *callbacks], how.train, how.progress)
    if first.finished:
        checkpoint = io.load_checkpoint(None)
        module.load_state_dict(checkpoint["state_dict"])
        module.on_load_checkpoint(checkpoint)
    else:
        # Our own checkpoints, so weights_only=False is safe.
        fit.fit(module, datamodule=data, ckpt_path=None if first.resume is None else str(first.resume), weights_only=False)
        if any(not h or h[-1]["step"] != module.last_step for h in module.val_history):
            fit.validate(module, datamodule=data, verbose=False)
        fit.save_checkpoint(FINAL)  # atomically, per member: other processes wait for these files
    for m in members if distributed.writer() else ():  # a finished level resumes from final.ckpt: its last positions are of no more use
        (m.dir / LAST).unlink(missing_ok=True)
        (m.dir / PREVIOUS).unlink(missing_ok=True)
    return module
