"""Training one pack: K members of equal `pack_key` in lockstep as one packed network, under Lightning's loop,
resuming from their own checkpoints, each writing its own checkpoints and results line."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from lth.arms.base import Arm
from lth.masks import Masks
from lth.module import MaskedModule
from lth.packing import MemberCheckpoints, pack_modules
from lth.preemption import StopOnSignal
from lth.rewinding import REWIND, RewindCapture
from lth.run_dir import FINAL, LAST
from lth.schedules import layer_fractions, trains_the_mask
from lth.schedules.gradual import GradualPruning

if TYPE_CHECKING:
    from lth.config import Experiment, Schedule
    from lth.imp import Run


@dataclass
class Member:
    """One (level, arm) of one run, ready to train: its freshly built module (weights and schedule set by
    `Arm.start`), its masks, and the checkpoint it continues from (its own final.ckpt if it finished,
    last.ckpt if it was interrupted, start.ckpt, or None: the module at step 0)."""

    run: Run
    level: int
    arm: Arm
    module: MaskedModule
    masks: Masks
    resume: Path | None
    start_step: int
    narrow: bool = False  # trains the physically narrower network (`Arm.narrow`)
    # Elsewhere than the run's own arm directory and rewind point, and on another data order than the run's
    # seed gives (the copies of `lth.stability`).
    directory: Path | None = None
    rewind: Path | None = None
    data_seed: int | None = None

    @property
    def dir(self) -> Path:
        return self.directory or self.run.dir.arm(self.level, self.arm.name)

    def file(self, name: str) -> Path:
        return (self.rewind or self.run.dir.rewind) if name == REWIND else self.dir / name

    @property
    def order(self) -> int:
        """The seed of its data order."""
        return self.run.cfg.seed if self.data_seed is None else self.data_seed

    @property
    def finished(self) -> bool:
        return self.resume is not None and self.resume.name == FINAL


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
        if trainer.sanity_checking or not any(m.run.tracker for m in self.members):
            return
        losses = pl_module.last_loss.tolist() if pl_module.last_loss is not None else [None] * len(self.members)
        for k, member in enumerate(self.members):
            if member.run.tracker:
                member.run.tracker.evaluation(member.level, pl_module.val_history[k][-1], losses[k])


def trainer(schedule: Schedule, io: MemberCheckpoints, callbacks: list[Callback], cfg: Experiment, progress: bool) -> L.Trainer:
    return L.Trainer(
        max_steps=schedule.total_steps,
        max_epochs=-1,
        val_check_interval=schedule.eval_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        deterministic=cfg.train.deterministic,
        precision=cfg.train.precision,
        benchmark=not cfg.train.deterministic,  # cuDNN's autotuned algorithms are fast, but may differ run to run
        callbacks=[SaveLast(schedule.checkpoint_every), StopOnSignal([m.file(LAST) for m in io.members]), *callbacks],
        plugins=[io],
        logger=False,  # each member's metrics go to its own run's W&B run (LogEvaluations)
        enable_checkpointing=False,
        enable_progress_bar=progress and sys.stderr.isatty(),
        enable_model_summary=False,
    )


def train_pack(members: list[Member]) -> list[dict[str, Any]]:
    """Train K members (equal `pack_key`s) in lockstep as one packed network, resuming from their own
    checkpoints; write each member's final.ckpt; return each member's results line."""
    first = members[0]
    run = first.run
    module = first.module if first.narrow else pack_modules([m.module for m in members], lambda pack: run.build_module(0, pack))
    for m in members:
        m.dir.mkdir(parents=True, exist_ok=True)
    io = MemberCheckpoints(members)
    data = run.data([m.order for m in members])
    callbacks: list[Callback] = [LogEvaluations(members)]
    if first.level == 0:
        callbacks.append(RewindCapture(run.schedule.rewind_step, [m.file(REWIND) for m in members]))
    if trains_the_mask(run.cfg.prune, first.level, first.arm):
        callbacks.append(GradualPruning(run.cfg.prune, layer_fractions(run.cfg.prune, module.model, module.prunable)))
    fit = trainer(module.schedule, io, callbacks, run.cfg, run.progress)
    if first.finished:
        checkpoint = io.load_checkpoint(None)
        module.load_state_dict(checkpoint["state_dict"])
        module.on_load_checkpoint(checkpoint)
    else:
        # Our own checkpoints, so weights_only=False is safe.
        fit.fit(module, datamodule=data, ckpt_path=None if first.resume is None else str(first.resume), weights_only=False)
        if any(not h or h[-1]["step"] != module.schedule.total_steps for h in module.val_history):
            fit.validate(module, datamodule=data, verbose=False)
        fit.save_checkpoint(FINAL)  # atomically, per member: other processes wait for these files
    return [m.run.row(m, module, i) for i, m in enumerate(members)]
