"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020): the driver that
sequences levels, owns the run directory and makes every piece of work resumable.

Run directory (`Experiment.run_dir()`, named by the run's identity, never by a job id):

    config.yaml            the resolved experiment
    results.jsonl          one line per finished (level, arm); rewritten atomically
    rewind.ckpt            the dense run's full training state at the rewind step
    level_00/ticket/       last.ckpt (written after each evaluation), final.ckpt
    level_01/mask.pt       the level's masks, made once from level 0's final weights
    level_01/ticket/start.ckpt   rewind.ckpt with the level's masks applied: where the level starts
    ...
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import CheckpointIO

from lth import masks as M
from lth.config import ARMS, ConfigError, Experiment, Schedule
from lth.data import DATASETS, DataModule, MissingDataError, seeded_generator
from lth.files import atomic_write, publish
from lth.flops import macs
from lth.models import MODELS
from lth.module import MaskedModule
from lth.packing import pack_checkpoint, pack_state, unpack_checkpoint
from lth.tracking import Tracker


class RunError(RuntimeError):
    """A problem with what is on disk: reported as one line, exit code 2, nothing deleted."""


class Busy(RuntimeError):
    """Another process is training an arm this invocation was asked to train: nothing to do here."""


class Interrupted(RuntimeError):
    """SIGUSR1 asked the run to stop (SLURM sends it before a time limit or preemption with
    `--signal=B:USR1@...`). The training state is checkpointed; rerunning the same command resumes it."""


# Set by SIGUSR1; checked after every training batch and between pieces of work.
STOP = threading.Event()

# How often an arm waiting for the ticket's next level, trained by another process, looks again.
WAIT_SECONDS = 2.0


def _try_lock(path: Path) -> IO[str] | None:
    """An advisory lock (flock) on `path` without waiting: the open handle that holds it (closing it releases
    the lock, as does the holder's death, so a killed job leaves no stale lock), or None if another process
    holds it. The file names the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - the handle is the lock; the caller closes it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"host {socket.gethostname()} pid {os.getpid()} job {os.environ.get('SLURM_JOB_ID', '-')}")
    handle.flush()
    return handle


def _held_elsewhere(path: Path) -> bool:
    if not path.exists():
        return False
    handle = _try_lock(path)
    if handle:
        handle.close()
    return handle is None


def _lock_arm(path: Path) -> IO[str]:
    """The arm's lock, held for this process's lifetime. Retried for a second, since another process may hold
    it for an instant to see whether the arm is in progress (`_held_elsewhere`)."""
    for _ in range(10):
        if handle := _try_lock(path):
            return handle
        time.sleep(0.1)
    raise Busy(path.read_text().strip() or "another process")


def _torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=f".{path.name}.") as tmp:
        torch.save(obj, tmp)
    publish(tmp.name, path)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to read means the file is unusable
        raise RunError(f"{path} is unreadable ({type(err).__name__}); move it aside to redo that step") from None


class MemberCheckpoints(CheckpointIO):
    """Lightning's checkpoint I/O for a pack of K runs (`lth.packing`): saving `name` writes each member's own
    single-run checkpoint, `<member's arm dir>/name`; loading packs the members' own checkpoints. On disk
    there are only single-run checkpoints, so a run resumes whatever it is packed with next time."""

    def __init__(self, dirs: list[Path], resume: list[Path | None]):
        super().__init__()
        self.dirs, self.resume = dirs, resume

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        for directory, member in zip(self.dirs, unpack_checkpoint(checkpoint, len(self.dirs))):
            _torch_save(member, directory / path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return pack_checkpoint([_torch_load(p) for p in self.resume])

    def remove_checkpoint(self, path) -> None:
        raise NotImplementedError("lth never deletes checkpoints")


# Where a level-0 member saves the dense run's rewind point, relative to its arm directory: the run directory.
REWIND = Path("..") / ".." / "rewind.ckpt"


class SaveLast(Callback):
    """After every evaluation, each member's `last.ckpt`: the most a kill can cost is `eval_every` steps."""

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            trainer.save_checkpoint("last.ckpt")


class StopOnSignal(Callback):
    """Checkpoints the exact training position and stops when SIGUSR1 has arrived."""

    def __init__(self, dirs: list[Path]):
        self.dirs = dirs

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if STOP.is_set():
            trainer.save_checkpoint("last.ckpt")
            saved = ", ".join(str(d / "last.ckpt") for d in self.dirs)
            raise Interrupted(f"stopped by SIGUSR1 at step {trainer.global_step}; checkpointed to {saved}")


class RewindCapture(Callback):
    """Saves the dense run's complete training state at the rewind step: weights, optimizer state,
    LR-schedule position and data position (the global step)."""

    def __init__(self, step: int, paths: list[Path]):
        self.step, self.paths = step, paths

    def _maybe_save(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self.step and not all(p.exists() for p in self.paths):
            trainer.save_checkpoint(REWIND)

    def on_train_start(self, trainer, pl_module):
        self._maybe_save(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._maybe_save(trainer)


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


@dataclass
class Member:
    """One (level, arm) of one run, ready to train: its freshly built module (weights and, for Scratch-B and
    fine-tuning, schedule set by `Run.prepare`), its masks, and the checkpoint it continues from (its own
    final.ckpt if it finished, last.ckpt if it was interrupted, start.ckpt, or None: the module at step 0)."""

    run: Run
    level: int
    arm: str
    module: MaskedModule
    masks: M.Masks
    resume: Path | None
    start_step: int

    @property
    def dir(self) -> Path:
        return self.run.level_dir(self.level) / self.arm

    @property
    def finished(self) -> bool:
        return self.resume is not None and self.resume.name == "final.ckpt"

    def pack_key(self) -> tuple:
        """Members with equal keys can train in lockstep as one pack: same network and data shapes, same
        schedule and optimizer, at the same step, with optimizer states of the same form."""
        step, optimizer_state = 0, ()
        if self.resume is not None:
            checkpoint = _torch_load(self.resume)
            step = checkpoint["global_step"]
            optimizer_state = tuple(tuple(sorted(s)) for o in checkpoint["optimizer_states"] for s in o["state"].values())
        cfg = self.run.cfg
        return (cfg.model, cfg.data.name, cfg.data.batch_size, self.run.schedule.val_size, self.module.schedule,
                repr(self.module.train_cfg), self.resume is None, step, optimizer_state, self.finished)


@dataclass
class Run:
    cfg: Experiment
    dir: Path
    schedule: Schedule
    progress: bool = True
    tracker: Tracker | None = None

    @classmethod
    def open(cls, cfg: Experiment, progress: bool = True) -> Run:
        run_dir = cfg.run_dir()
        saved = run_dir / "config.yaml"
        if saved.exists():
            try:
                previous = yaml.safe_load(saved.read_text())
            except yaml.YAMLError:
                raise RunError(f"{saved} is unreadable; move it aside or choose another out_dir") from None
            if not isinstance(previous, dict) or previous.get("model") != cfg.model:
                raise RunError(f"{saved} describes a different experiment; move it aside or choose another out_dir")
        return cls(cfg, run_dir, Schedule.of(cfg), progress)

    # -- results ------------------------------------------------------------------------------------------

    @property
    def results_path(self) -> Path:
        return self.dir / "results.jsonl"

    def results(self) -> list[dict[str, Any]]:
        if not self.results_path.exists():
            return []
        rows = []
        for number, line in enumerate(self.results_path.read_text().splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunError(f"{self.results_path}:{number} is not valid JSON; repair or move the file") from None
        return rows

    def done(self, level: int, arm: str) -> dict[str, Any] | None:
        return next((r for r in self.results() if r["level"] == level and r["arm"] == arm), None)

    def record(self, row: dict[str, Any]) -> None:
        lock = self.lock_path("results")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:  # other arms of this run, in other processes, may record at the same time
            fcntl.flock(handle, fcntl.LOCK_EX)
            rows = self.results() + [row]
            atomic_write(self.results_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())
        if self.tracker:
            self.tracker.level(row, rows)

    # -- pieces of a run ----------------------------------------------------------------------------------

    def level_dir(self, level: int) -> Path:
        return self.dir / f"level_{level:02d}"

    def lock_path(self, name: str) -> Path:
        """An arm's lock (held while a process trains it) or the results file's."""
        return self.dir / "locks" / f"{name}.lock"

    def missing_ticket(self, level: int, arm: str) -> RunError:
        return RunError(f"{arm} at level {level} needs the ticket's level {level - 1}; train the ticket arm first")

    def build_module(self, seed: int, pack: int = 1) -> MaskedModule:
        spec = DATASETS[self.cfg.data.name]
        torch.manual_seed(seed)  # the init is a function of the seed (OpenLTH leaves it unseeded)
        model = MODELS[self.cfg.model](spec.input_shape, spec.num_classes, pack=pack)
        return MaskedModule(model, self.cfg.train, self.schedule, spec.num_classes, pack)

    def fractions(self, module: MaskedModule) -> dict[str, float]:
        p = self.cfg.prune
        dense = list(module.model.dense_layers if p.dense_layers is None else p.dense_layers)
        return M.layer_fractions(module.prunable, p.fraction, p.layer_fractions, dense)

    def level_masks(self, level: int, module: MaskedModule) -> M.Masks:
        """Level 0 is dense; level k prunes level k-1's trained ticket. Made once, then read from disk."""
        if level == 0:
            return M.ones_like(module.weights())
        path = self.level_dir(level) / "mask.pt"
        if path.exists():
            return _torch_load(path)
        trained = self.final_state(level - 1, "ticket")
        state = self.model_state(trained)
        weights = {n: state[n] for n in module.prunable}
        previous = {n: state[f"{n}_mask"] for n in module.prunable}
        pruned = M.prune_magnitude(weights, previous, self.fractions(module), self.cfg.prune.strategy)
        _torch_save(pruned, path)
        return pruned

    def final_state(self, level: int, arm: str) -> dict[str, torch.Tensor]:
        return _torch_load(self.level_dir(level) / arm / "final.ckpt")["state_dict"]

    @staticmethod
    def model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The network's own entries of a MaskedModule state_dict, keyed as the network names them."""
        return {n[len("model."):]: v for n, v in state_dict.items() if n.startswith("model.")}

    def start_checkpoint(self, level: int, arm: str, masks: M.Masks, model_state: dict[str, torch.Tensor] | None = None) -> Path:
        """The dense run's training state at the rewind step (LR position, data position, and the weights and
        optimizer state unless `model_state` replaces the weights), with this level's masks applied.

        The ticket and random pruning keep the rewind-point optimizer state: the masked network continues the
        dense run from step k as exactly as possible. OpenLTH instead starts levels with a fresh optimizer;
        for `rewind: 0` the two coincide, since the state is empty at step 0. Arms whose weights are not the
        dense run's (reinit, lr_rewind) start with a fresh optimizer.
        """
        path = self.level_dir(level) / arm / "start.ckpt"
        if not path.exists():
            checkpoint = _torch_load(self.dir / "rewind.ckpt")
            state = checkpoint["state_dict"]
            if model_state is not None:
                state.update({f"model.{k}": v.clone() for k, v in model_state.items()})
                for optimizer in checkpoint["optimizer_states"]:
                    optimizer["state"] = {}
            for name, mask in masks.items():
                state[f"model.{name}_mask"] = mask.clone()
                state[f"model.{name}"] = state[f"model.{name}"] * mask
            checkpoint["callbacks"] = {}
            checkpoint.pop("lth", None)  # validation history and timing belong to the dense run
            _torch_save(checkpoint, path)
        return path

    def row(self, member: Member, module: MaskedModule, k: int) -> dict[str, Any]:
        """The results line of pack member k, trained in `module`."""
        history = module.val_history[k]
        best = min(history, key=lambda h: (h["val_loss"], h["step"]))
        remaining, per_layer = M.weights_remaining(member.masks)
        spec = DATASETS[self.cfg.data.name]
        return {
            "level": member.level,
            "arm": member.arm,
            "seed": self.cfg.seed,
            "init_seed": self.init_seed(member.level, member.arm),
            "run_id": self.cfg.run_id(),
            "weights_remaining": remaining,
            "weights_remaining_per_layer": per_layer,
            "macs": macs(member.module.model, spec.input_shape, member.masks),
            "test_acc": module.test_results[k],
            "best_val_acc": max(h["val_acc"] for h in history),
            "early_stop_step": best["step"],
            "early_stop_val_acc": best["val_acc"],
            "steps_trained": module.schedule.total_steps - member.start_step,
            "rewind_step": self.schedule.rewind_step,
            "wall_seconds": round(module.train_seconds, 3),  # of the whole pack this member trained in
            "mask_sha256": M.sha256(member.masks),
        }

    def init_seed(self, level: int, arm: str) -> int:
        """The ticket uses the run's seed; each fresh-init arm draws its own init per level."""
        if arm not in ("reinit", "scratch_b"):
            return self.cfg.seed
        return seeded_generator(self.cfg.seed, arm, level).initial_seed() % 2**31

    def scratch_b_schedule(self, masks: M.Masks, module: MaskedModule) -> Schedule:
        """Liu et al. (2019), §4: as many MACs as the dense run, so steps × dense/pruned MACs, capped."""
        shape = DATASETS[self.cfg.data.name].input_shape
        factor = macs(module.model, shape) / macs(module.model, shape, masks)
        if self.cfg.scratch_b.max_factor is not None:
            factor = min(factor, self.cfg.scratch_b.max_factor)
        s = self.schedule
        return replace(s, total_steps=round(s.total_steps * factor), milestone_steps=tuple(round(m * factor) for m in s.milestone_steps))

    def prepare(self, level: int, arm: str, module: MaskedModule, masks: M.Masks) -> tuple[M.Masks, Path | None, int]:
        """What an arm trains at a level, given its freshly built module (whose weights and schedule this may
        replace) and the level's masks: its masks, the checkpoint it starts from (None: from the module's own
        weights at step 0) and the step it starts at."""
        cfg, schedule = self.cfg, self.schedule
        if arm == "ticket" and level == 0:
            return masks, None, 0
        k = schedule.rewind_step
        if arm == "ticket":
            return masks, self.start_checkpoint(level, arm, masks), k
        if arm == "random_prune":
            shuffled = M.random_like(masks, seeded_generator(self.cfg.seed, "random_prune", level))
            return shuffled, self.start_checkpoint(level, arm, shuffled), k
        if arm == "reinit":
            return masks, self.start_checkpoint(level, arm, masks, module.model.state_dict()), k
        previous = self.model_state(self.final_state(level - 1, "ticket"))
        if arm == "lr_rewind":  # Renda et al. (2020): the pruned trained weights, the LR schedule from step k
            return masks, self.start_checkpoint(level, arm, masks, previous), k
        if arm == "scratch_b":
            module.schedule = self.scratch_b_schedule(masks, module)
            return masks, None, 0
        # finetune (Renda et al. 2020): the pruned trained weights at the final LR, for the ticket's steps.
        module.model.load_state_dict(previous)
        module.train_cfg = replace(cfg.train, lr=cfg.train.lr * cfg.train.gamma ** len(schedule.milestone_steps))
        module.schedule = replace(schedule, total_steps=schedule.total_steps - k, milestone_steps=(), rewind_step=0)
        return masks, None, 0

    def members(self, level: int) -> list[Member]:
        """This run's (level, arm)s still to train, each prepared; the ticket first: controls need its masks."""
        out = []
        for arm in [a for a in ARMS if a in self.cfg.arms]:
            if level == 0 and arm != "ticket":
                continue  # controls compare pruned networks; level 0 is the dense network itself
            if row := self.done(level, arm):
                self._say(f"level {level}/{self.cfg.prune.levels} {arm}: done earlier, {row['weights_remaining']:.2%} remaining, test acc {row['test_acc']:.4f}")
                continue
            if STOP.is_set():
                raise Interrupted(f"stopped by SIGUSR1 before level {level} {arm}")
            if level > 0:
                self.wait_for_ticket(level, arm)
            module = self.build_module(self.init_seed(level, arm))
            masks, start, start_step = self.prepare(level, arm, module, self.level_masks(level, module))
            module.set_masks(masks)
            arm_dir = self.level_dir(level) / arm
            resume = next((p for p in (arm_dir / "final.ckpt", arm_dir / "last.ckpt") if p.exists()), start)
            out.append(Member(self, level, arm, module, masks, resume, start_step))
        return out

    def wait_for_ticket(self, level: int, arm: str) -> None:
        """Every arm at level k builds on the ticket's level k-1. When another process is training the ticket
        (a sweep that spreads arms over jobs), follow it level by level; when nobody is, say what is missing."""
        final = self.level_dir(level - 1) / "ticket" / "final.ckpt"
        said = False
        while not final.exists():
            if not _held_elsewhere(self.lock_path("ticket")):
                if final.exists():
                    break  # finished between the two looks
                raise self.missing_ticket(level, arm)
            if not said:
                self._say(f"level {level} {arm}: waiting for the ticket's level {level - 1}, trained by another process")
                said = True
            if STOP.wait(WAIT_SECONDS):
                raise Interrupted(f"stopped by SIGUSR1 while level {level} {arm} waited for the ticket")

    def preflight(self, module: MaskedModule) -> None:
        """Read every stored file this invocation will build on, so that a damaged or mismatched one stops
        the run before any training, with nothing deleted."""
        expected = module.masks()
        for path in sorted(self.dir.glob("level_*/mask.pt")):
            stored = _torch_load(path)
            if not isinstance(stored, dict) or set(stored) != set(expected):
                raise RunError(f"{path} does not name the model's prunable layers; move it aside")
            for name, mask in stored.items():
                if mask.shape != expected[name].shape:
                    raise RunError(f"{path}: mask {name} has shape {tuple(mask.shape)}, the model's weight {tuple(expected[name].shape)}")
        todo = [
            (level, arm)
            for level in range(self.cfg.prune.levels + 1)
            for arm in self.cfg.arms
            if (level == 0) == (arm == "ticket") or (level > 0 and arm == "ticket")
            if not self.done(level, arm)
        ]
        paths = [self.dir / "rewind.ckpt"] if todo else []
        for level, arm in todo:
            paths += [self.level_dir(level) / arm / name for name in ("start.ckpt", "last.ckpt", "final.ckpt")]
            if level > 0:
                previous = self.level_dir(level - 1) / "ticket" / "final.ckpt"
                paths.append(previous)
                if "ticket" not in self.cfg.arms and not previous.exists() and not _held_elsewhere(self.lock_path("ticket")):
                    raise self.missing_ticket(level, arm)
        for path in paths:
            if path.exists():
                _torch_load(path)

    def _say(self, text: str) -> None:
        print(f"[lth] {text}", file=sys.stderr, flush=True)


def auto_pack() -> int:
    """How many runs to pack when the experiment does not say. On a GPU, 16: a ResNet-20 step leaves an H100
    mostly idle, and 16 packed copies train ~10× the images per second of one (README, performance); more
    gains little. On a CPU a step is compute-bound and packing gains nothing, so 1."""
    return 16 if torch.cuda.is_available() else 1


def packs(members: list[Member], size: int) -> list[list[Member]]:
    groups: dict[tuple, list[Member]] = {}
    for member in members:
        groups.setdefault(member.pack_key(), []).append(member)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def trainer(schedule: Schedule, io: MemberCheckpoints, callbacks: list[Callback], cfg: Experiment, progress: bool) -> L.Trainer:
    return L.Trainer(
        max_steps=schedule.total_steps,
        max_epochs=-1,
        val_check_interval=schedule.eval_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        deterministic=cfg.train.deterministic,
        benchmark=not cfg.train.deterministic,  # cuDNN's autotuned algorithms are fast, but may differ run to run
        callbacks=[SaveLast(), StopOnSignal(io.dirs), *callbacks],
        plugins=[io],
        logger=False,  # each member's metrics go to its own run's W&B run (LogEvaluations)
        enable_checkpointing=False,
        enable_progress_bar=progress and sys.stderr.isatty(),
        enable_model_summary=False,
    )


def pack_modules(run: Run, modules: list[MaskedModule]) -> MaskedModule:
    """One module training `modules` (built by `run`, with equal schedules) as a pack, starting from their weights and masks."""
    packed = run.build_module(0, pack=len(modules))
    packed.schedule, packed.train_cfg = modules[0].schedule, modules[0].train_cfg
    packed.load_state_dict(pack_state([m.state_dict() for m in modules]))
    return packed


def train_pack(members: list[Member]) -> list[dict[str, Any]]:
    """Train K members (equal `pack_key`s) in lockstep as one packed network, resuming from their own
    checkpoints; write each member's final.ckpt; return each member's results line."""
    first = members[0]
    run = first.run
    module = pack_modules(run, [m.module for m in members])
    for m in members:
        m.dir.mkdir(parents=True, exist_ok=True)
    io = MemberCheckpoints([m.dir for m in members], [m.resume for m in members])
    data = DataModule(run.cfg.data, run.schedule, [m.run.cfg.seed for m in members])
    callbacks: list[Callback] = [LogEvaluations(members)]
    if first.level == 0:
        callbacks.append(RewindCapture(run.schedule.rewind_step, [m.run.dir / "rewind.ckpt" for m in members]))
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
        fit.save_checkpoint("final.ckpt")  # atomically, per member: other processes wait for these files
    fit.test(module, datamodule=data, verbose=False)
    return [m.run.row(m, module, i) for i, m in enumerate(members)]


def train_levels(runs: list[Run], pack: int) -> None:
    """Level by level across all runs, so that every (run, arm) of a level that can share a pack does."""
    for level in range(max(run.cfg.prune.levels for run in runs) + 1):
        members = [m for run in runs if level <= run.cfg.prune.levels for m in run.members(level)]
        for group in packs(members, pack):
            first = group[0]
            names = ", ".join(f"seed {m.run.cfg.seed} {m.arm}" for m in group)
            first.run._say(f"level {level}: training {names} with {M.weights_remaining(first.masks)[0]:.2%} of weights remaining" + (f" (a pack of {len(group)})" if len(group) > 1 else ""))
            for member, row in zip(group, train_pack(group)):
                member.run.record(row)
                member.run._say(
                    f"level {level}/{member.run.cfg.prune.levels} seed {row['seed']} {member.arm}: {row['weights_remaining']:.2%} remaining, "
                    f"test acc {row['test_acc']:.4f}, best val acc {row['best_val_acc']:.4f} (early stop at step {row['early_stop_step']})"
                )


def run_experiments(cfgs: list[Experiment], progress: bool = True) -> list[Run]:
    """Check every run (stored files, data, that no other process trains its arms) before training any,
    then train them level by level, packed. SIGUSR1 checkpoints and raises `Interrupted`."""
    runs = []
    for cfg in cfgs:
        run = Run.open(cfg, progress)
        run.preflight(run.build_module(cfg.seed))
        try:
            DataModule(cfg.data, run.schedule, [cfg.seed]).check()
        except MissingDataError as err:
            raise ConfigError(str(err)) from None
        runs.append(run)
    STOP.clear()
    previous_handler = signal.signal(signal.SIGUSR1, lambda *_: STOP.set())
    try:
        with ExitStack() as locks:
            for run in runs:
                for arm in run.cfg.arms:
                    try:
                        locks.enter_context(_lock_arm(run.lock_path(arm)))
                    except Busy as holder:
                        raise Busy(f"{arm} of {run.dir} is being trained by another process ({holder}); nothing to do here") from None
            _train(runs)
    finally:
        signal.signal(signal.SIGUSR1, previous_handler)
    return runs


def _train(runs: list[Run]) -> None:
    started = time.perf_counter()
    for run in runs:
        run.dir.mkdir(parents=True, exist_ok=True)
        resolved = yaml.safe_dump(run.cfg.to_dict(), sort_keys=False).encode()
        saved = run.dir / "config.yaml"
        if not saved.exists() or saved.read_bytes() != resolved:
            atomic_write(saved, resolved)
        run.tracker = Tracker.open(run.cfg, run.dir)
    trackers = [run.tracker for run in runs if run.tracker]
    try:
        train_levels(runs, runs[0].cfg.pack or auto_pack())
    except Interrupted:
        for tracker in trackers:
            tracker.preempting()
            tracker.finish(exit_code=3)
        raise
    for tracker in trackers:
        tracker.finish()
    for run in runs:
        run._say(f"finished in {time.perf_counter() - started:.1f}s; results in {run.results_path}")
