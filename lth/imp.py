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
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lth import masks as M
from lth.config import ARMS, ConfigError, Experiment, Schedule
from lth.data import DATASETS, DataModule, MissingDataError, seeded_generator
from lth.files import atomic_write, publish
from lth.flops import macs
from lth.models import MODELS
from lth.module import MaskedModule
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


class StopOnSignal(Callback):
    """Checkpoints the exact training position and stops when SIGUSR1 has arrived."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if STOP.is_set():
            trainer.save_checkpoint(self.path)
            raise Interrupted(f"stopped by SIGUSR1 at step {trainer.global_step}; checkpointed to {self.path}")


class RewindCapture(Callback):
    """Saves the dense run's complete training state at the rewind step: weights, optimizer state,
    LR-schedule position and data position (the global step)."""

    def __init__(self, step: int, path: Path):
        self.step, self.path = step, path

    def _maybe_save(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self.step and not self.path.exists():
            trainer.save_checkpoint(self.path)

    def on_train_start(self, trainer, pl_module):
        self._maybe_save(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._maybe_save(trainer)


@dataclass
class Run:
    cfg: Experiment
    dir: Path
    schedule: Schedule
    data: DataModule
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
        schedule = Schedule.of(cfg)
        return cls(cfg, run_dir, schedule, DataModule(cfg.data, schedule, cfg.seed), progress)

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

    def build_module(self, seed: int) -> MaskedModule:
        spec = DATASETS[self.cfg.data.name]
        torch.manual_seed(seed)  # the init is a function of the seed (OpenLTH leaves it unseeded)
        model = MODELS[self.cfg.model](spec.input_shape, spec.num_classes)
        return MaskedModule(model, self.cfg.train, self.schedule, spec.num_classes)

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

    def start_checkpoint(self, level: int, arm: str, masks: M.Masks, model_state: dict[str, torch.Tensor], fresh_optimizer: bool) -> Path:
        """The dense run's training state at the rewind step (LR position, data position and, unless
        `fresh_optimizer`, optimizer state), with `model_state` and this level's masks applied.

        The ticket and random pruning keep the rewind-point optimizer state: the masked network continues the
        dense run from step k as exactly as possible. OpenLTH instead starts levels with a fresh optimizer;
        for `rewind: 0` the two coincide, since the state is empty at step 0. Arms whose weights are not the
        dense run's (reinit, lr_rewind) start with a fresh optimizer.
        """
        path = self.level_dir(level) / arm / "start.ckpt"
        if not path.exists():
            checkpoint = _torch_load(self.dir / "rewind.ckpt")
            state = checkpoint["state_dict"]
            state.update({f"model.{k}": v.clone() for k, v in model_state.items()})
            for name, mask in masks.items():
                state[f"model.{name}_mask"] = mask.clone()
                state[f"model.{name}"] = state[f"model.{name}"] * mask
            if fresh_optimizer:
                for optimizer in checkpoint["optimizer_states"]:
                    optimizer["state"] = {}
            checkpoint["callbacks"] = {}
            checkpoint.pop("lth", None)  # validation history and timing belong to the dense run
            _torch_save(checkpoint, path)
        return path

    # -- training -----------------------------------------------------------------------------------------

    def trainer(self, arm_dir: Path, schedule: Schedule, extra_callbacks: list[Callback] = ()) -> L.Trainer:
        return L.Trainer(
            max_steps=schedule.total_steps,
            max_epochs=-1,
            val_check_interval=schedule.eval_every,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            deterministic=self.cfg.train.deterministic,
            callbacks=[ModelCheckpoint(dirpath=arm_dir, save_top_k=0, save_last=True), StopOnSignal(arm_dir / "last.ckpt"), *extra_callbacks],
            default_root_dir=arm_dir,
            logger=self.tracker.logger if self.tracker else False,
            enable_progress_bar=self.progress and sys.stderr.isatty(),
            enable_model_summary=False,
        )

    def train(self, level: int, arm: str, module: MaskedModule, masks: M.Masks, start: Path | None, start_step: int) -> dict[str, Any]:
        """Train one (level, arm) to the end of its schedule, resuming from its last checkpoint if any."""
        arm_dir = self.level_dir(level) / arm
        arm_dir.mkdir(parents=True, exist_ok=True)
        final = arm_dir / "final.ckpt"
        data = self.data
        module.set_masks(masks)
        if final.exists():
            checkpoint = _torch_load(final)
            module.load_state_dict(checkpoint["state_dict"])
            module.on_load_checkpoint(checkpoint)
            trainer = self.trainer(arm_dir, module.schedule)
        else:
            last = arm_dir / "last.ckpt"
            resume = last if last.exists() else start
            if resume is not None:
                _torch_load(resume)  # an unreadable checkpoint stops here with a clear message, nothing deleted
            callbacks = [RewindCapture(self.schedule.rewind_step, self.dir / "rewind.ckpt")] if level == 0 else []
            trainer = self.trainer(arm_dir, module.schedule, callbacks)
            trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=False)  # our own checkpoints
            if not module.val_history or module.val_history[-1]["step"] != module.schedule.total_steps:
                trainer.validate(module, datamodule=data, verbose=False)
            partial = arm_dir / ".final.ckpt.partial"  # atomic: other processes wait for this file
            trainer.save_checkpoint(partial)
            os.replace(partial, final)
        test_acc = trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"]
        history = module.val_history
        best = min(history, key=lambda h: (h["val_loss"], h["step"]))
        remaining, per_layer = M.weights_remaining(module.masks())
        spec = DATASETS[self.cfg.data.name]
        return {
            "level": level,
            "arm": arm,
            "seed": self.cfg.seed,
            "init_seed": self.init_seed(level, arm),
            "run_id": self.cfg.run_id(),
            "weights_remaining": remaining,
            "weights_remaining_per_layer": per_layer,
            "macs": macs(module.model, spec.input_shape, module.masks()),
            "test_acc": test_acc,
            "best_val_acc": max(h["val_acc"] for h in history),
            "early_stop_step": best["step"],
            "early_stop_val_acc": best["val_acc"],
            "steps_trained": module.schedule.total_steps - start_step,
            "rewind_step": self.schedule.rewind_step,
            "wall_seconds": round(module.train_seconds, 3),
            "mask_sha256": M.sha256(module.masks()),
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
        if arm in ("ticket", "random_prune"):
            rewound = self.model_state(_torch_load(self.dir / "rewind.ckpt")["state_dict"])
        if arm == "ticket":
            return masks, self.start_checkpoint(level, arm, masks, rewound, fresh_optimizer=False), k
        if arm == "random_prune":
            shuffled = M.random_like(masks, seeded_generator(self.cfg.seed, "random_prune", level))
            return shuffled, self.start_checkpoint(level, arm, shuffled, rewound, fresh_optimizer=False), k
        if arm == "reinit":
            return masks, self.start_checkpoint(level, arm, masks, module.model.state_dict(), fresh_optimizer=True), k
        previous = self.model_state(self.final_state(level - 1, "ticket"))
        if arm == "lr_rewind":  # Renda et al. (2020): the pruned trained weights, the LR schedule from step k
            return masks, self.start_checkpoint(level, arm, masks, previous, fresh_optimizer=True), k
        if arm == "scratch_b":
            module.schedule = self.scratch_b_schedule(masks, module)
            return masks, None, 0
        # finetune (Renda et al. 2020): the pruned trained weights at the final LR, for the ticket's steps.
        module.model.load_state_dict(previous)
        module.train_cfg = replace(cfg.train, lr=cfg.train.lr * cfg.train.gamma ** len(schedule.milestone_steps))
        module.schedule = replace(schedule, total_steps=schedule.total_steps - k, milestone_steps=(), rewind_step=0)
        return masks, None, 0

    def run_arms(self) -> list[dict[str, Any]]:
        levels = self.cfg.prune.levels
        arms = [a for a in ARMS if a in self.cfg.arms]  # the ticket first: controls need its masks
        for level in range(levels + 1):
            for arm in arms:
                if level == 0 and arm != "ticket":
                    continue  # controls compare pruned networks; level 0 is the dense network itself
                if row := self.done(level, arm):
                    self._say(f"level {level}/{levels} {arm}: done earlier, {row['weights_remaining']:.2%} remaining, test acc {row['test_acc']:.4f}")
                    continue
                if STOP.is_set():
                    raise Interrupted(f"stopped by SIGUSR1 before level {level} {arm}")
                if level > 0:
                    self.wait_for_ticket(level, arm)
                module = self.build_module(self.init_seed(level, arm))
                masks, start, start_step = self.prepare(level, arm, module, self.level_masks(level, module))
                self._say(f"level {level}/{levels} {arm}: training with {M.weights_remaining(masks)[0]:.2%} of weights remaining")
                row = self.train(level, arm, module, masks, start, start_step)
                self.record(row)
                self._say(
                    f"level {level}/{levels} {arm}: {row['weights_remaining']:.2%} remaining, test acc {row['test_acc']:.4f}, "
                    f"best val acc {row['best_val_acc']:.4f} (early stop at step {row['early_stop_step']})"
                )
        return self.results()

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


def run_experiments(cfgs: list[Experiment], progress: bool = True) -> list[Run]:
    """Check every run (stored files, data, that no other process trains its arms) before training any,
    then train them one after another. SIGUSR1 checkpoints and raises `Interrupted`."""
    runs = []
    for cfg in cfgs:
        run = Run.open(cfg, progress)
        run.preflight(run.build_module(cfg.seed))
        try:
            run.data.check()
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
            for run in runs:
                _train_run(run)
    finally:
        signal.signal(signal.SIGUSR1, previous_handler)
    return runs


def _train_run(run: Run) -> None:
    run.dir.mkdir(parents=True, exist_ok=True)
    resolved = yaml.safe_dump(run.cfg.to_dict(), sort_keys=False).encode()
    saved = run.dir / "config.yaml"
    if not saved.exists() or saved.read_bytes() != resolved:
        atomic_write(saved, resolved)
    run.tracker = Tracker.open(run.cfg, run.dir)
    started = time.perf_counter()
    try:
        run.run_arms()
    except Interrupted:
        if run.tracker:
            run.tracker.preempting()
            run.tracker.finish(exit_code=3)
        raise
    if run.tracker:
        run.tracker.finish()
    run._say(f"finished in {time.perf_counter() - started:.1f}s; results in {run.results_path}")
