"""Pruning with rewinding and its controls (Frankle & Carbin 2019; Frankle et al. 2020): the driver.

For each level, across the seeds of an invocation: make the level's masks (`lth.schedules`), start every
requested arm from its declared starting point (`lth.arms`), train what can share a pack together
(`lth.packing`, `lth.training`) and record one results line per (level, arm) (`lth.run_dir`). Every step
is resumable: finished levels are read back, never retrained.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
import yaml
from lightning.pytorch.callbacks import Callback

from lth import distributed, locks, provenance, pruning, threads
from lth import masks as M
from lth.arms import ARMS, Arm
from lth.arms.base import PRUNED, Level, Start
from lth.config import ConfigError, Experiment, TrainConfig, steps
from lth.data import DataModule, MissingDataError
from lth.files import atomic_write, remove_orphans
from lth.flops import macs, parameters, speedup
from lth.methods.base import Scoring, State
from lth.models import prunable_names
from lth.module import Diverged, MaskedModule, Penalty
from lth.network import Network
from lth.packing import unpack_state
from lth.plugins import code_digest
from lth.preemption import Interrupted, check, stop_on_signals
from lth.rewinding import RewindCapture, start_checkpoint
from lth.run_dir import FINAL, LAST, PREVIOUS, START, Row, RunDir, RunError
from lth.steps import Steps
from lth.tracking import Tracker
from lth.training import Member, MemberCheckpoints, Training, packs, resume_from, train_pack, trainer


@dataclass
class Run:
    cfg: Experiment
    dir: RunDir
    steps: Steps
    progress: bool = True
    tracker: Tracker | None = None
    data_identity: dict | None = None  # what the data are (`DataModule.identity`), once checked before training
    diverged: list[str] = field(default_factory=list)  # what of this run diverged, or was not trained because its source did
    # Each (level, chain)'s refitted weights as this process computed them: under data parallelism only rank 0 writes
    # `refit.pt`, and the other ranks start from these, computed alike, rather than wait for the file.
    refits: dict[tuple[int, str], State] = field(default_factory=dict)

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
        return cls(cfg, run_dir, steps(cfg), progress)

    def arms(self) -> list[Arm]:
        return [arm for name, arm in ARMS.items() if name in self.cfg.arms]

    @functools.cached_property
    def net(self) -> Network:
        """The experiment's network for its dataset (`lth.network`); read when first asked for: `lth report` needs no data."""
        return Network.of(self.cfg)

    @property
    def pack(self) -> int:
        """How many runs train as one packed network (`Network.pack`)."""
        return self.net.pack(self.cfg.pack)

    @property
    def step_macs(self) -> int:
        """Multiply-accumulates of a training step's forward pass at most: per example × batch × runs in a pack."""
        return self.net.example_macs * self.cfg.data.batch_size * self.pack

    def build_module(self, seed: int, pack: int = 1, narrow: M.Masks | None = None, steps: Steps | None = None, train: TrainConfig | None = None,
                     penalty: Penalty | None = None) -> MaskedModule:
        """`Network.build`'s network for `seed` under masks, to train on the experiment's schedule and recipe or on
        `steps`, `train` and `penalty` where an arm's start says otherwise."""
        model = self.net.build(seed, pack, narrow)
        return MaskedModule(model, train or self.cfg.train, steps or self.steps, self.net.spec.num_classes, pack,
                            None if narrow is not None else self.net.followers(), penalty)

    def data(self, seeds: list[int]) -> DataModule:
        """The dataset for a pack of this run's members (one data order each)."""
        d = self.cfg.data
        return DataModule(self.net.spec, d.root, d.batch_size, self.steps.val_size, seeds, d.augment)

    def first_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Steps 0 to n − 1's training batches of the run's data order, augmented as training augments them."""
        return self.data([self.cfg.seed]).first_batches(n)

    def _network_state(self, path) -> State:
        state = self.dir.load(path)["state_dict"]
        return {n[len("model."):]: v for n, v in state.items() if n.startswith("model.")}

    def trained_weights(self, level: int, arm: str) -> State:
        """An arm's trained network at `level` (weights, masks and buffers), keyed as the network names them."""
        return self._network_state(self.dir.arm(level, arm) / FINAL)

    def rewound_weights(self) -> State:
        """The dense run's network at the rewind step, unmasked."""
        return self._network_state(self.dir.rewind)

    # -- where each level's masks come from -----------------------------------------------------------------

    def trains_the_mask(self, level: int, arm: Arm) -> bool:
        """Whether `arm` makes its level's masks by training (the ticket under gradual pruning)."""
        return pruning.schedule(self.cfg.prune).masks_from_training and level == 1 and arm.is_ticket

    def mask_source(self, level: int, arm: Arm) -> tuple[int, str]:
        """The (level, arm) whose trained network `arm`'s masks at `level` (> 0) are made from: its chain's
        previous level (`Arm.source`), or, under a schedule whose masks come out of training, the ticket of
        this level, which pruned as it trained."""
        if pruning.schedule(self.cfg.prune).masks_from_training and not arm.is_ticket:
            return level, "ticket"
        return level - 1, arm.source(level)

    def scoring(self, weights: State, masks: M.Masks, fractions: dict[str, float]) -> Scoring:
        return Scoring(weights, masks, fractions, self.cfg.prune.strategy, self.net.unit.structure, self.rewound_weights, self.net.plain, self.first_batches,
                       self.net.spec.input_shape)

    def prune(self, weights: State, masks: M.Masks, fractions: dict[str, float]) -> M.Masks:
        """The experiment's method and ranking applied to a network's state (`lth.pruning.level_masks`)."""
        return pruning.level_masks(self.cfg.prune, self.net.unit, self.scoring(weights, masks, fractions))

    def level_masks(self, level: int, model: torch.nn.Module, arm: Arm) -> M.Masks:
        """The masks `arm`'s chain trains under at `level`: level 0, and a ticket that prunes as it trains, start
        dense; otherwise they come from `mask_source`'s trained network, pruned once more, or taken as they are
        when it pruned itself as it trained. Made once, then read from disk."""
        prunable = prunable_names(model)
        if level == 0 or self.trains_the_mask(level, arm):
            return M.ones_like({n: model.get_parameter(n) for n in prunable})
        path = self.dir.mask(level, arm.chain())
        if path.exists():
            return self.dir.load(path)
        trained = self.trained_weights(*self.mask_source(level, arm))
        masks = {n: trained[f"{n}_mask"] for n in prunable}
        if not pruning.schedule(self.cfg.prune).masks_from_training:
            fractions = pruning.layer_fractions(self.cfg.prune, model, prunable)
            scoring = self.scoring(trained, masks, fractions)
            masks = pruning.level_masks(self.cfg.prune, self.net.unit, scoring)
            if emptied := [n for n in masks if fractions[n] > 0 and not masks[n].any() and not self.net.unit.empties_layers]:
                raise RunError(f"level {level} would leave {emptied[0]} with no weights: the levels before it are recorded; lower prune.levels to "
                               f"{level - 1} or prune that layer more slowly (prune.layer_fractions)")
            # Only for a chain whose own arm trains the pruned weights on (fine-tuning's, LR rewinding's): the ticket's
            # chain rewinds, and its controls start elsewhere. Written before the masks, whose file says the level is done.
            refit = pruning.method(self.cfg.prune).refit(scoring, self.cfg.prune.method_params, masks) if ARMS[arm.chain()].weights == PRUNED else {}
            if refit:
                self.refits[level, arm.chain()] = refit
                self.dir.save(refit, self.dir.refit(level, arm.chain()))
        self.dir.save(masks, path)
        return masks

    def pruned_weights(self, level: int, arm: Arm) -> State:
        """What an arm that trains the pruned weights on starts `level` from: its source's trained network of the level
        before, with the weights the method refitted to this level's masks in their place (`Method.refit`)."""
        state = self.trained_weights(level - 1, arm.source(level))
        if (level, arm.chain()) in self.refits:
            return state | self.refits[level, arm.chain()]
        refit = self.dir.refit(level, arm.chain())
        return state | self.dir.load(refit) if refit.exists() else state

    # -- members: (level, arm)s ready to train ---------------------------------------------------------------

    def level_context(self, level: int, arm: Arm, model: torch.nn.Module, chain: M.Masks) -> Level:
        shape = self.net.spec.input_shape
        return Level(
            level, self.cfg.seed, chain, self.steps, self.cfg.train.lr, self.cfg.train.gamma, self.net.unit, self.cfg.arm_params.get(arm.name),
            rewound=self.rewound_weights, trained=partial(self.pruned_weights, level, arm),
            fresh=model.state_dict, macs=lambda masks: macs(model, shape, masks),
        )

    def member(self, level: int, arm: Arm) -> Member:
        """(level, arm), ready: its network built, started as its arm's `Start` says, under masks, with its recipe."""
        seed = arm.init_seed(self.cfg.seed, level)
        model = self.net.build(seed)
        chain = self.level_masks(level, model, arm)
        start = arm.start(self.level_context(level, arm, model, chain)) if level > 0 else Start(chain, from_rewind_point=False)
        start = replace(start, masks=distributed.same_masks(start.masks, f"level {level} {arm.name}"))
        arm_dir = self.dir.arm(level, arm.name)
        steps, train = start.steps or self.steps, self.cfg.train if start.lr is None else replace(self.cfg.train, lr=start.lr)
        # The networks that are pruned next train with the method's penalty.
        penalty = pruning.method(self.cfg.prune).penalty(self.cfg.prune.method_params, self.net.unit) if arm.chain() == arm.name else None
        if start.narrow:
            module = self.build_module(seed, narrow=start.masks, steps=steps, train=train, penalty=penalty)
        else:
            module = MaskedModule(model, train, steps, self.net.spec.num_classes, followers=self.net.followers(), penalty=penalty)
            if start.weights is not None and not start.from_rewind_point:  # a start's masks are set below, whatever it holds
                module.model.load_state_dict({**module.model.state_dict(), **start.weights})
            elif level == 0:  # the dense network starts from them, and so rewinds to them
                self.net.start_from_pretrained(module.model)
            module.set_masks(start.masks)
        first, start_step = None, 0
        if start.from_rewind_point:
            first = start_checkpoint(arm_dir / START, self.dir.rewind, start.masks, self.cfg.prune.rewind_optimizer, start.weights)
            start_step = self.steps.rewind_step
        return self.as_member(level, arm, module, start.masks, resume_from(arm_dir, first), start_step, arm_dir, self.dir.rewind, self.cfg.seed,
                              start.narrow)

    def as_member(self, level: int, arm: Arm, module: MaskedModule, masks: M.Masks, resume, start_step: int, directory, rewind,
                  data_order: int, narrow: bool = False) -> Member:
        """A member of this run: what it shares with the members it may be packed with, and its W&B run."""
        d = self.cfg.data
        return Member(
            level, arm, module, masks, resume, start_step, directory, rewind, data_order,
            shared=(self.cfg.model.name, d.name, d.batch_size, d.augment, self.steps.val_size),
            optimizer_origin=arm.optimizer_origin(self.steps.rewind_step, self.cfg.prune.rewind_optimizer), narrow=narrow, tracker=self.tracker,
            alone=narrow or (arm.is_ticket and pruning.schedule(self.cfg.prune).may_end_early(level)),
        )

    def members(self, level: int, after_ticket: bool = False) -> list[Member]:
        """This run's (level, arm)s still to train, each ready; the ticket first: controls need its masks.
        `after_ticket`: the arms whose masks come from this level's ticket (gradual pruning) rather than from
        an earlier level."""
        out = []
        for arm in self.arms():
            if not arm.trains_at(level):
                continue
            source = self.mask_source(level, arm) if level > 0 else None
            if (source is not None and source[0] == level) != after_ticket:
                continue  # trained in the other wave of this level
            again = None
            if row := self.dir.done(level, arm.name):
                if not (again := self.redo(level, arm)):
                    self.say(f"level {level}/{self.cfg.prune.levels} {arm.name}: done earlier, {row.weights_remaining:.2%} remaining, {row_accuracy(row)}")
                    continue
                self.say(f"level {level}/{self.cfg.prune.levels} {arm.name}: recorded earlier, trained again: {again}")
            if (noted := self.dir.diverged(level, arm.name)).exists():
                note = json.loads(noted.read_text())
                self.diverged.append(f"seed {self.cfg.seed} {arm.name} at level {level} diverged at step {note['step']} ({note['why']}), earlier")
                continue
            if source is not None and (lost := self.lost(*source)):
                self.diverged.append(f"seed {self.cfg.seed} {arm.name} at level {level}: not trained, as {lost}")
                continue
            check(f"before level {level} {arm.name}")
            if source is not None:
                self.wait_for(level, arm.name, *source)
            out.append(self.member(level, arm))
        return out

    def lost(self, level: int, arm: str) -> str | None:
        """Why (level, arm) will never be trained, if it will not: it diverged, or a network it is made from did,
        however many levels back (a level after a divergence waits for nothing)."""
        if self.dir.diverged(level, arm).exists():
            return f"the {arm}'s level {level} diverged"
        if level == 0 or self.dir.done(level, arm):
            return None
        return self.lost(*self.mask_source(level, ARMS[arm]))

    def pending(self) -> list[tuple[int, Arm]]:
        """The (level, arm)s this process still has to train."""
        done = {(row.level, row.arm) for row in self.dir.rows()}
        return [(level, arm) for level in range(self.cfg.prune.levels + 1) for arm in self.arms() if arm.trains_at(level) and (level, arm.name) not in done]

    def redo(self, level: int, arm: Arm) -> str | None:
        """Why a recorded (level, arm) trains again, if it must: its final.ckpt, which a level still to train is made
        from, was moved aside, as `RunDir.load` advises for a damaged one, or deleted to save disk. Its results line is
        then replaced by the new one (`RunDir.append`), which describes the weights now on disk."""
        if not (self.dir.arm(level, arm.name) / FINAL).exists() and any(self.mask_source(lv, a) == (level, arm.name) for lv, a in self.pending() if lv > 0):
            return f"its {FINAL} is missing, and a level still to train is made from it"
        return None

    def replay(self, step: int, path: Path, scratch: Path) -> Path:
        """The dense run's training state at `step`, made once into `path` by replaying the dense run from its init (its
        trajectory is a function of the seed): a rewind point moved aside, or another k for `lth stability`. It
        checkpoints in `scratch` like any training, so a stopped replay resumes; `scratch` is removed once done."""
        if not path.exists():
            module = self.build_module(self.cfg.seed, steps=replace(self.steps, total_steps=max(step, 1)))
            scratch.mkdir(parents=True, exist_ok=True)
            resume = scratch / LAST
            member = self.as_member(0, ARMS["ticket"], module, module.masks(), resume if resume.exists() else None, 0, scratch, path, self.cfg.seed)
            fit = trainer(module.steps, MemberCheckpoints([member]), [RewindCapture(step, [path])], self.cfg.train, self.progress)
            fit.fit(module, datamodule=self.data([self.cfg.seed]), ckpt_path=None if member.resume is None else str(resume), weights_only=False)
        shutil.rmtree(scratch, ignore_errors=True)
        return path

    def rewind_again(self) -> None:
        """Capture the rewind point again if it was moved aside while levels still to train start from it (only the
        dense run holds it; its level 0 is recorded, so it is replayed to the rewind step, not retrained)."""
        later = [(level, arm) for level, arm in self.pending() if level > 0]
        if self.dir.rewind.exists() or not self.dir.done(0, "ticket") or all((self.dir.arm(lv, a.name) / START).exists() for lv, a in later):
            return
        self.say(f"{self.dir.rewind.name} is missing and levels still to train start from it: replaying the dense run to step {self.steps.rewind_step}")
        self.replay(self.steps.rewind_step, self.dir.rewind, self.dir.root / "replay_rewind")

    def training(self) -> Training:
        return Training(lambda pack, steps, train, penalty: self.build_module(0, pack, None, steps, train, penalty), self.data, self.cfg.train,
                        self.progress)

    def callbacks(self, group: list[Member]) -> list[Callback]:
        """What a pack of this run's members needs besides training: the dense run saves its rewind point, the ticket
        trains with its schedule's hooks (gradual pruning prunes as it trains, an early-bird schedule may end the dense
        run), and an arm may act as it trains (its own hooks: dynamic sparse training moves its connections)."""
        first = group[0]
        out: list[Callback] = []
        if first.level == 0:
            out.append(RewindCapture(self.steps.rewind_step, [m.rewind for m in group]))
        if first.arm.is_ticket:
            p, module = self.cfg.prune, first.module
            out += pruning.schedule(p).hooks(p.schedule_params, first.level, pruning.layer_fractions(p, module.model, module.prunable), self.prune,
                                             self.net.unit)
        if first.level > 0:
            out += first.arm.hooks(self.cfg.arm_params.get(first.arm.name), first.module.steps.total_steps, [(m.data_order, m.level) for m in group])
        return out

    def row(self, member: Member, module: MaskedModule, k: int) -> Row:
        """The results line of pack member k, trained in `module`."""
        p = self.cfg.prune
        settled = pruning.schedule(p).settled_at(p.schedule_params) if self.trains_the_mask(member.level, member.arm) else 0
        history = [h for h in module.val_history[k] if h["step"] >= settled]
        best, final = early_stop(history), history[-1]
        trained = unpack_state(module.masks(), module.pack)[k]  # a gradually pruned ticket ends sparser than it began
        masks = member.masks if member.narrow else trained  # a narrow network's are its wide masks
        remaining, per_layer = M.weights_remaining(masks)
        return Row(
            level=member.level,
            arm=member.arm.name,
            seed=self.cfg.seed,
            init_seed=member.arm.init_seed(self.cfg.seed, member.level),
            run_id=self.cfg.run_id(),
            weights_remaining=remaining,
            weights_remaining_per_layer=per_layer,
            macs=macs(member.module.model, self.net.spec.input_shape, trained),
            parameters=parameters(member.module.model, member.module.followers, trained),
            test_acc=final["test_acc"],  # at the final weights (`train_pack` evaluates the last step)
            test_acc_at_early_stop=best["test_acc"],
            best_val_acc=max(h["val_acc"] for h in history),
            early_stop_step=best["step"],
            early_stop_val_acc=best["val_acc"],
            steps_trained=module.last_step - member.start_step,
            rewind_step=self.steps.rewind_step,
            rewind_optimizer=p.rewind_optimizer,
            wall_seconds=round(module.train_seconds, 3),  # of the whole pack this member trained in
            mask_sha256=M.sha256(masks),
            inference_speedup=self.speedup(masks, module.device) if self.net.unit.removes_channels else None,
            world_size=distributed.WORLD.size,
            train_subset=self.data([self.cfg.seed]).train_subset(),
            # A level resumed from a checkpoint of an earlier version has evaluations without them: None.
            train_acc=final.get("train_acc"),
            train_loss=final.get("train_loss"),
            test_loss=final.get("test_loss"),
            train_acc_at_early_stop=best.get("train_acc"),
            train_loss_at_early_stop=best.get("train_loss"),
            test_loss_at_early_stop=best.get("test_loss"),
            gap=final["train_acc"] - final["test_acc"] if "train_acc" in final else None,
            gap_at_early_stop=best["train_acc"] - best["test_acc"] if "train_acc" in best else None,
            code=arm_code(member.arm),
            ended_early=module.ended[k]["why"] if module.ended[k] else None,
        )

    def speedup(self, masks: M.Masks, device: torch.device) -> float:
        """The narrow network's forward pass against the full-width one's, measured (`lth.flops.speedup`); their
        weights do not change their speed, so both are built fresh."""
        spec = self.net.spec
        with torch.random.fork_rng(devices=[]):  # leaves the global generator as training left it
            wide = self.net.architecture.build()
        narrow = self.net.unit.narrow(wide, masks, spec.input_shape)
        return round(speedup(wide, narrow, spec.input_shape, self.cfg.data.batch_size, device), 3)

    def record(self, row: Row) -> None:
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
        the run before any training, with nothing deleted; and check that no arm of a user's own was edited since
        its levels were recorded."""
        for row in self.dir.rows():
            if row.arm in self.cfg.arms and (now := arm_code(ARMS[row.arm])) != row.code:
                raise RunError(f"{self.dir.results}: the code of the arm {row.arm} changed since its level {row.level} was recorded ({row.code} then, "
                               f"{now} now); its results would not be this code's: give the changed arm another name, or move the run aside")
        expected = module.masks()
        for path in self.dir.masks_stored():
            stored = self.dir.load(path)
            if not isinstance(stored, dict) or set(stored) != set(expected):
                raise RunError(f"{path} does not name the model's prunable layers; move it aside")
            for name, mask in stored.items():
                if mask.shape != expected[name].shape:
                    raise RunError(f"{path}: mask {name} has shape {tuple(mask.shape)}, the model's weight {tuple(expected[name].shape)}")
        todo = self.pending()
        paths = [self.dir.rewind] if todo else []
        for level, arm in todo:
            paths += [self.dir.arm(level, arm.name) / name for name in (START, LAST, PREVIOUS, FINAL)]
            if level > 0:
                source_level, source = self.mask_source(level, arm)
                previous = self.dir.arm(source_level, source) / FINAL
                paths.append(previous)
                waiting = partial(self.say, f"level {level} {arm.name}: waiting up to {locks.START_SECONDS:.0f} s for a process to take up the {source}")
                if source not in self.cfg.arms and not locks.taken_up(previous, self.dir.lock(source), waiting, f"waiting for the {source}"):
                    raise self.missing(level, arm.name, source_level, source)
        for path in paths:
            if path.exists():
                self.dir.load(path)

    def say(self, text: str) -> None:
        if distributed.writer():
            print(f"[lth] {text}", file=sys.stderr, flush=True)


def arm_code(arm: Arm) -> str | None:
    """The digest of an arm's code if it is a user's plugin (`Row.code`); None for lth's own, known by name."""
    return None if type(arm).__module__.startswith("lth.") else code_digest(type(arm))


def early_stop(history: list[dict[str, float]]) -> dict[str, float]:
    """Frankle & Carbin's (2019, §2) early-stopping iteration: the evaluation of lowest validation loss, the
    earliest on ties. A network pruned as it trains (gradual pruning) is the network its results line
    describes only from its last pruning step on, so `Run.row` offers only those evaluations."""
    return min(history, key=lambda h: (h["val_loss"], h["step"]))


def train_levels(runs: list[Run], pack: int) -> None:
    """Level by level across all runs, so that every (run, arm) of a level that can share a pack does. The runs
    of one invocation differ only in their seed, so any of them says how a pack trains."""
    for level, after_ticket in itertools.product(range(max(run.cfg.prune.levels for run in runs) + 1), (False, True)):
        owner: dict[int, Run] = {}
        members = []
        for run in runs:
            for member in run.members(level, after_ticket) if level <= run.cfg.prune.levels else []:
                owner[id(member)] = run
                members.append(member)
        for group in packs(members, pack):
            first = owner[id(group[0])]
            names = ", ".join(f"seed {owner[id(m)].cfg.seed} {m.arm.name}" for m in group)
            together = f" (a pack of {len(group)})" if len(group) > 1 else ""
            stopped = max((m.stopped_at() or 0 for m in group), default=0)
            resuming = f", resuming at step {stopped:,} where it was stopped" if stopped else ""
            first.say(f"level {level}: training {names} with {M.weights_remaining(group[0].masks)[0]:.2%} of weights remaining{together}{resuming}")
            group, module = _train_pack(group, owner, first)
            for k, member in enumerate(group):
                run = owner[id(member)]
                row = run.row(member, module, k)
                run.record(row)
                run.say(
                    f"level {level}/{run.cfg.prune.levels} seed {row.seed} {member.arm.name}: {row.weights_remaining:.2%} remaining, "
                    f"{row_accuracy(row)}, best val acc {row.best_val_acc:.4f}" + (f"; {row.ended_early}" if row.ended_early else "")
                )


def row_accuracy(row: Row) -> str:
    """A results line's accuracy as the report and W&B read it (at the early-stopping step, Frankle & Carbin 2019, §2),
    the final weights' named as such: the terminal once printed the final one as "test acc" beside tables of the other."""
    return f"test acc at early stop {row.test_acc_at_early_stop:.4f} (step {row.early_stop_step}; at the final weights {row.test_acc:.4f})"


def _train_pack(group: list[Member], owner: dict[int, Run], first: Run) -> tuple[list[Member], MaskedModule]:
    """Train a pack; a member that diverges leaves a note instead of a results line (`MaskedModule.diverged`), and
    the others go on from their last checkpoint. Returns the members that finished and their trained module."""
    while True:
        try:
            return group, train_pack(group, first.training(), first.callbacks(group))
        except Diverged as stop:
            for k, why in stop.members.items():
                member, run = group[k], owner[id(group[k])]
                note = {"level": member.level, "arm": member.arm.name, "seed": run.cfg.seed, "step": stop.step, "why": why}
                atomic_write(run.dir.diverged(member.level, member.arm.name), json.dumps(note).encode())
                run.diverged.append(f"seed {run.cfg.seed} {member.arm.name} at level {member.level} diverged at step {stop.step} ({why}); no result recorded")
                run.say(run.diverged[-1])
            group = [m for k, m in enumerate(group) if k not in stop.members]
            for m in group:
                m.resume = resume_from(m.dir, m.resume)
            if not group:
                return group, None


def run_experiments(cfgs: list[Experiment], progress: bool = True) -> list[Run]:
    """Check every run (stored files, data, that no other process trains its arms) before training any,
    then train them level by level, packed. A stopping signal checkpoints and raises `Interrupted`."""
    runs = []
    for cfg in cfgs:
        run = Run.open(cfg, progress)
        run.preflight(run.build_module(cfg.seed))
        try:
            data = run.data([cfg.seed])
            data.check()
            run.data_identity = data.identity()
        except MissingDataError as err:
            raise ConfigError(str(err)) from None
        run.dir.same_data(run.data_identity, cfg.data.root)
        runs.append(run)
    train = cfgs[0].train
    distributed.start(train.devices, train.num_nodes)  # the other ranks run this command too, from the start
    stream = runs[0].net.spec.stream  # its decoding processes share this process's CPUs, as the node's ranks do
    chosen = threads.choose(runs[0].step_macs, threads.cpus(), train.threads, os.environ.get("OMP_NUM_THREADS"), ranks=train.devices,
                            workers=stream.workers if stream else 0)
    threads.apply(chosen)
    runs[0].say(f"threads: {chosen.count} ({chosen.why})")
    if not runs[0].net.architecture.packs:
        runs[0].say(f"{cfg.model.name} is not written in lth's packing convention (its builder takes no `pack`): its runs train one at a time")
    for run in runs:  # recorded in config.yaml; not part of the identity (`lth.config.NOT_IN_IDENTITY`)
        run.cfg = replace(run.cfg, train=replace(run.cfg.train, threads=chosen.count))
    with stop_on_signals(), ExitStack() as held:
        for run in runs:
            mine, busy = [], []
            for arm in run.cfg.arms if distributed.writer() else ():  # rank 0 claims for every rank
                try:
                    held.enter_context(locks.claim(run.dir.lock(arm)))
                    mine.append(arm)
                except locks.Busy as holder:
                    busy.append(f"{arm} of {run.dir.root} is being trained by another process ({holder})")
            mine, busy = distributed.broadcast((mine, busy))
            if not mine:  # another process trains this seed: the other seeds are still this invocation's to train
                run.say(f"{'; '.join(busy)}: this process leaves seed {run.cfg.seed} to it")
            elif busy:  # train the rest, following the other process where they build on its arms (`Run.wait_for`)
                run.say(f"{'; '.join(busy)}: this process trains {', '.join(mine)}")
            run.cfg = replace(run.cfg, arms=mine)
        if not any(run.cfg.arms for run in runs):
            raise locks.Busy("every seed of this invocation is being trained by another process; nothing to do here")
        _train([run for run in runs if run.cfg.arms])
    return runs


def _train(runs: list[Run]) -> None:
    started = time.perf_counter()
    for run in runs:
        if distributed.writer():
            run.dir.root.mkdir(parents=True, exist_ok=True)
        for orphan in remove_orphans(run.dir.root) if distributed.writer() else ():
            run.say(f"removed {orphan.relative_to(run.dir.root)}, a temporary file a killed process left")
        if not run.dir.dataset.exists():
            atomic_write(run.dir.dataset, json.dumps(run.data_identity, indent=1).encode())
        resolved = yaml.safe_dump(run.cfg.to_dict(), sort_keys=False).encode()
        if not run.dir.config.exists() or run.dir.config.read_bytes() != resolved:
            atomic_write(run.dir.config, resolved)
        if distributed.writer() and run.pending():  # an invocation that trains nothing here leaves the run untouched
            provenance.record(run.dir.invocations, "cuda" if torch.cuda.is_available() else "cpu", run.cfg.train.threads, distributed.WORLD.size)
        run.tracker = Tracker.open(run.cfg, run.dir) if distributed.writer() else None  # one W&B run per run, not per rank
    trackers = [run.tracker for run in runs if run.tracker]
    try:
        for run in runs:
            if "ticket" in run.cfg.arms:  # the rewind point is the dense run's: made under the ticket's lock
                run.rewind_again()
        train_levels(runs, runs[0].pack)
    except Interrupted as stop:
        for tracker in trackers:
            tracker.interrupted(stop.exit_code)
        raise
    for tracker in trackers:
        tracker.finish()
    for run in runs:
        run.say(f"finished in {time.perf_counter() - started:.1f}s; results in {run.dir.results}")
