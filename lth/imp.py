"""Pruning with rewinding and its controls (Frankle & Carbin 2019; Frankle et al. 2020): the driver.

For each level, across the seeds of an invocation: make the level's masks (`lth.schedules`), start every
requested arm from its declared starting point (`lth.arms`), train what can share a pack together
(`lth.packing`, `lth.training`) and record one results line per (level, arm) (`lth.run_dir`). Every step
is resumable: finished levels are read back, never retrained.
"""

from __future__ import annotations

import itertools
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import yaml

from lth import channels, locks
from lth import masks as M
from lth.arms import ARMS, Arm
from lth.config import ConfigError, Experiment, Schedule
from lth.data import DATASETS, DataModule, MissingDataError
from lth.files import atomic_write
from lth.flops import macs, parameters, speedup
from lth.methods import METHODS, structure
from lth.models import MODELS, init_batch_norm
from lth.module import MaskedModule
from lth.packing import auto_pack, packs, unpack_state
from lth.preemption import Interrupted, check, stop_on_sigusr1
from lth.run_dir import FINAL, LAST, START, RunDir, RunError
from lth.schedules import level_masks, mask_source, trains_the_mask
from lth.tracking import Tracker
from lth.training import Member, train_pack


@dataclass
class Run:
    cfg: Experiment
    dir: RunDir
    schedule: Schedule
    progress: bool = True
    tracker: Tracker | None = None

    @classmethod
    def open(cls, cfg: Experiment, progress: bool = True) -> Run:
        run_dir = RunDir(cfg.run_dir())
        if run_dir.config.exists():
            try:
                previous = yaml.safe_load(run_dir.config.read_text())
            except yaml.YAMLError:
                raise RunError(f"{run_dir.config} is unreadable; move it aside or choose another out_dir") from None
            model = previous.get("model") if isinstance(previous, dict) else None
            if not isinstance(model, dict) or model.get("name") != cfg.model.name:
                raise RunError(f"{run_dir.config} describes a different experiment; move it aside or choose another out_dir")
        return cls(cfg, run_dir, Schedule.of(cfg), progress)

    def arms(self) -> list[Arm]:
        return [arm for name, arm in ARMS.items() if name in self.cfg.arms]

    @property
    def structure(self) -> dict[str, channels.Removable]:
        return structure(self.cfg.prune, self.cfg.model.name, DATASETS[self.cfg.data.name])

    @property
    def pack(self) -> int:
        """How many runs train as one packed network (`pack`, or `auto_pack` for the dense network's size)."""
        if self.cfg.pack:
            return self.cfg.pack
        spec = DATASETS[self.cfg.data.name]
        with torch.device("meta"):  # shapes alone: no memory, no init drawn from the global generator
            return auto_pack(macs(MODELS[self.cfg.model.name](spec.input_shape, spec.num_classes), spec.input_shape))

    def build_module(self, seed: int, pack: int = 1, narrow: M.Masks | None = None) -> MaskedModule:
        """The network at its init for `seed`; `narrow`: with the channels those masks remove taken out
        physically (`lth.channels.narrow`), then initialised afresh at its own widths."""
        spec = DATASETS[self.cfg.data.name]
        torch.manual_seed(seed)  # the init is a function of the seed (OpenLTH leaves it unseeded)
        model = MODELS[self.cfg.model.name](spec.input_shape, spec.num_classes, pack=pack)
        init_batch_norm(model, self.cfg.model.bn_init)
        if narrow is not None:
            model = channels.narrow(model, narrow, self.structure, spec.input_shape)
            model.initialise()
            init_batch_norm(model, self.cfg.model.bn_init)
        followers = None if narrow is not None else channels.followers(self.structure)
        return MaskedModule(model, self.cfg.train, self.schedule, spec.num_classes, pack, followers)

    def data(self, seeds: list[int]) -> DataModule:
        """The dataset for a pack of this run's members (one seed each)."""
        d = self.cfg.data
        return DataModule(d.name, d.root, d.batch_size, self.schedule.val_size, seeds, d.augment)

    def trained_weights(self, level: int, arm: str) -> dict[str, torch.Tensor]:
        """An arm's trained network at `level` (weights, masks and buffers), keyed as the network names them."""
        state = self.dir.load(self.dir.arm(level, arm) / FINAL)["state_dict"]
        return {n[len("model."):]: v for n, v in state.items() if n.startswith("model.")}

    def members(self, level: int, after_ticket: bool = False) -> list[Member]:
        """This run's (level, arm)s still to train, each ready; the ticket first: controls need its masks.
        `after_ticket`: the arms whose masks come from this level's ticket (gradual pruning) rather than from
        an earlier level."""
        out = []
        for arm in self.arms():
            if not arm.trains_at(level):
                continue
            source = mask_source(self.cfg.prune, level, arm) if level > 0 else None
            if (source is not None and source[0] == level) != after_ticket:
                continue  # trained in the other wave of this level
            if row := self.dir.done(level, arm.name):
                remaining, acc = row["weights_remaining"], row["test_acc"]
                self.say(f"level {level}/{self.cfg.prune.levels} {arm.name}: done earlier, {remaining:.2%} remaining, test acc {acc:.4f}")
                continue
            check(f"before level {level} {arm.name}")
            if source is not None:
                self.wait_for(level, arm.name, *source)
            seed = arm.init_seed(self.cfg.seed, level)
            module = self.build_module(seed)
            chain = level_masks(self, level, module, arm)
            masks, start, start_step = arm.start(self, level, module, chain)
            narrow = arm.narrow(METHODS[self.cfg.prune.method].STRUCTURED)
            if narrow:
                schedule, train = module.schedule, module.train_cfg
                module = self.build_module(seed, narrow=masks)
                module.schedule, module.train_cfg = schedule, train
            else:
                module.set_masks(masks)
            if arm.chain() == arm.name:  # the networks that are pruned next train with Network Slimming's penalty
                module.scale_l1 = self.cfg.prune.slimming_l1 or 0.0
            arm_dir = self.dir.arm(level, arm.name)
            resume = next((p for p in (arm_dir / FINAL, arm_dir / LAST) if p.exists()), start)
            out.append(Member(self, level, arm, module, masks, resume, start_step, narrow))
        return out

    def row(self, member: Member, module: MaskedModule, k: int) -> dict[str, Any]:
        """The results line of pack member k, trained in `module`."""
        final_mask = self.cfg.prune.end_step if trains_the_mask(self.cfg.prune, member.level, member.arm) else 0
        history = [h for h in module.val_history[k] if h["step"] >= final_mask]
        best = early_stop(history)
        trained = unpack_state(module.masks(), module.pack)[k]  # a gradually pruned ticket ends sparser than it began
        masks = member.masks if member.narrow else trained  # a narrow network's are its wide masks
        remaining, per_layer = M.weights_remaining(masks)
        shape = DATASETS[self.cfg.data.name].input_shape
        return {
            "level": member.level,
            "arm": member.arm.name,
            "seed": self.cfg.seed,
            "init_seed": member.arm.init_seed(self.cfg.seed, member.level),
            "run_id": self.cfg.run_id(),
            "weights_remaining": remaining,
            "weights_remaining_per_layer": per_layer,
            "macs": macs(member.module.model, shape, trained),
            "parameters": parameters(member.module, trained),
            "test_acc": history[-1]["test_acc"],  # at the final weights (`train_pack` evaluates the last step)
            "test_acc_at_early_stop": best["test_acc"],
            "best_val_acc": max(h["val_acc"] for h in history),
            "early_stop_step": best["step"],
            "early_stop_val_acc": best["val_acc"],
            "steps_trained": module.schedule.total_steps - member.start_step,
            "rewind_step": self.schedule.rewind_step,
            "rewind_optimizer": self.cfg.prune.rewind_optimizer,
            "wall_seconds": round(module.train_seconds, 3),  # of the whole pack this member trained in
            "mask_sha256": M.sha256(masks),
            "inference_speedup": self.speedup(masks, module.device) if METHODS[self.cfg.prune.method].STRUCTURED else None,
        }

    def speedup(self, masks: M.Masks, device: torch.device) -> float:
        """The narrow network's forward pass against the full-width one's, measured (`lth.flops.speedup`); their
        weights do not change their speed, so both are built fresh."""
        spec = DATASETS[self.cfg.data.name]
        with torch.random.fork_rng(devices=[]):  # leaves the global generator as training left it
            wide = MODELS[self.cfg.model.name](spec.input_shape, spec.num_classes)
        narrow = channels.narrow(wide, masks, self.structure, spec.input_shape)
        return round(speedup(wide, narrow, spec.input_shape, self.cfg.data.batch_size, device), 3)

    def record(self, row: dict[str, Any]) -> None:
        rows = self.dir.append(row)
        if self.tracker:
            self.tracker.level(row, rows)

    def missing(self, level: int, arm: str, source_level: int, source: str) -> RunError:
        return RunError(f"{arm} at level {level} needs the {source}'s level {source_level}; train the {source} arm first")

    def wait_for(self, level: int, arm: str, source_level: int, source: str) -> None:
        """Every arm at level k builds on a trained network (`mask_source`: the ticket's level k-1, its own
        chain's, or under gradual pruning the ticket's level k). When another process is training it (a sweep
        that spreads arms over jobs), follow it level by level; when nobody is, say what is missing."""
        final = self.dir.arm(source_level, source) / FINAL
        say = partial(self.say, f"level {level} {arm}: waiting for the {source}'s level {source_level}, trained by another process")
        if not locks.wait_while_held(final, self.dir.lock(source), say, f"level {level} {arm} waited for the {source}"):
            raise self.missing(level, arm, source_level, source)

    def preflight(self, module: MaskedModule) -> None:
        """Read every stored file this invocation will build on, so that a damaged or mismatched one stops
        the run before any training, with nothing deleted."""
        expected = module.masks()
        for path in self.dir.masks_stored():
            stored = self.dir.load(path)
            if not isinstance(stored, dict) or set(stored) != set(expected):
                raise RunError(f"{path} does not name the model's prunable layers; move it aside")
            for name, mask in stored.items():
                if mask.shape != expected[name].shape:
                    raise RunError(f"{path}: mask {name} has shape {tuple(mask.shape)}, the model's weight {tuple(expected[name].shape)}")
        todo = [
            (level, arm)
            for level in range(self.cfg.prune.levels + 1)
            for arm in self.arms()
            if arm.trains_at(level) and not self.dir.done(level, arm.name)
        ]
        paths = [self.dir.rewind] if todo else []
        for level, arm in todo:
            paths += [self.dir.arm(level, arm.name) / name for name in (START, LAST, FINAL)]
            if level > 0:
                source_level, source = mask_source(self.cfg.prune, level, arm)
                previous = self.dir.arm(source_level, source) / FINAL
                paths.append(previous)
                if source not in self.cfg.arms and not previous.exists() and not locks.held_elsewhere(self.dir.lock(source)):
                    raise self.missing(level, arm.name, source_level, source)
        for path in paths:
            if path.exists():
                self.dir.load(path)

    def say(self, text: str) -> None:
        print(f"[lth] {text}", file=sys.stderr, flush=True)


def early_stop(history: list[dict[str, float]]) -> dict[str, float]:
    """Frankle & Carbin's (2019, §2) early-stopping iteration: the evaluation of lowest validation loss, the
    earliest on ties. A network pruned as it trains (gradual pruning) is the network its results line
    describes only from its last pruning step on, so `Run.row` offers only those evaluations."""
    return min(history, key=lambda h: (h["val_loss"], h["step"]))


def train_levels(runs: list[Run], pack: int) -> None:
    """Level by level across all runs, so that every (run, arm) of a level that can share a pack does."""
    for level, after_ticket in itertools.product(range(max(run.cfg.prune.levels for run in runs) + 1), (False, True)):
        members = [m for run in runs if level <= run.cfg.prune.levels for m in run.members(level, after_ticket)]
        for group in packs(members, pack):
            first = group[0]
            names = ", ".join(f"seed {m.run.cfg.seed} {m.arm.name}" for m in group)
            together = f" (a pack of {len(group)})" if len(group) > 1 else ""
            first.run.say(f"level {level}: training {names} with {M.weights_remaining(first.masks)[0]:.2%} of weights remaining{together}")
            for member, row in zip(group, train_pack(group)):
                member.run.record(row)
                member.run.say(
                    f"level {level}/{member.run.cfg.prune.levels} seed {row['seed']} {member.arm.name}: {row['weights_remaining']:.2%} remaining, "
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
            run.data([cfg.seed]).check()
        except MissingDataError as err:
            raise ConfigError(str(err)) from None
        runs.append(run)
    with stop_on_sigusr1(), ExitStack() as held:
        for run in runs:
            for arm in run.cfg.arms:
                try:
                    held.enter_context(locks.claim(run.dir.lock(arm)))
                except locks.Busy as holder:
                    raise locks.Busy(f"{arm} of {run.dir.root} is being trained by another process ({holder}); nothing to do here") from None
        _train(runs)
    return runs


def _train(runs: list[Run]) -> None:
    started = time.perf_counter()
    for run in runs:
        run.dir.root.mkdir(parents=True, exist_ok=True)
        resolved = yaml.safe_dump(run.cfg.to_dict(), sort_keys=False).encode()
        if not run.dir.config.exists() or run.dir.config.read_bytes() != resolved:
            atomic_write(run.dir.config, resolved)
        run.tracker = Tracker.open(run.cfg, run.dir)
    trackers = [run.tracker for run in runs if run.tracker]
    try:
        train_levels(runs, runs[0].pack)
    except Interrupted:
        for tracker in trackers:
            tracker.preempting()
            tracker.finish(exit_code=3)
        raise
    for tracker in trackers:
        tracker.finish()
    for run in runs:
        run.say(f"finished in {time.perf_counter() - started:.1f}s; results in {run.dir.results}")
