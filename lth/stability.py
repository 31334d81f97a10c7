"""Instability analysis (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis", §2-3):
is the network, from step k of training on, stable to SGD noise? Two copies start from the dense run's state
at step k (level 0: the dense network; level L: under the ticket's level-L masks) and train to the end on
different data orders; the error along the straight line between their trained weights shows whether they
found one linearly connected minimum. The instability is the error barrier, the largest error on the line
minus the mean of the two ends' errors (§2, "error barrier height"). IMP finds matching subnetworks exactly
at the rewind points where the sparse network is stable (§5).

`lth stability` trains the run itself first if it is not trained (never again if it is), takes the state at
k from its rewind checkpoint or, for other k, replays the dense run to k once (the dense run's trajectory is
a function of its seed, so the replay is the run's own state at k), trains the copies with lth's own
checkpointing (a killed copy resumes where it stopped), and writes one line per (level, rewind step) to
`stability.jsonl` in the run directory.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lth import locks
from lth import masks as M
from lth.arms import ARMS
from lth.config import ConfigError, Experiment, to_steps
from lth.data import EVAL_BATCH, EvalBatches, load_split, seeded_generator
from lth.files import atomic_write
from lth.imp import Run, run_experiments
from lth.module import MaskedModule
from lth.packing import MemberCheckpoints, auto_pack, packs
from lth.preemption import check, stop_on_sigusr1
from lth.rewinding import RewindCapture, start_checkpoint
from lth.run_dir import FINAL, LAST, START
from lth.training import Member, train_pack, trainer

COPIES = 2


def barrier(errors: list[float]) -> float:
    """The error barrier of a curve sampled from α = 0 to α = 1: its largest error minus the mean of its ends'."""
    return max(errors) - (errors[0] + errors[-1]) / 2


def interpolate(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 − α)·a + α·b for every floating-point tensor of two states with the same masks; the rest (masks, batch
    counts) taken from a. A weight pruned in both is 0 at every α."""
    return {k: (1 - alpha) * v + alpha * b[k] if v.is_floating_point() else v.clone() for k, v in a.items()}


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, batches) -> None:
    """Batch-norm running statistics recomputed for these weights, as an average over the training data (an
    interpolated network's are not the interpolation of its ends'; Frankle et al. 2020, Appendix)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    model.train()
    for x, _ in batches:
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def error(module: MaskedModule, batches) -> float:
    module.eval()
    wrong = total = 0
    for x, y in batches:
        wrong += int((module.evaluate(x)[:, 0].argmax(-1) != y).sum())
        total += len(y)
    return wrong / total


class Study:
    """One run's instability analysis: its directory under the run's, the states at each k, the copies."""

    def __init__(self, run: Run, alphas: int):
        self.run, self.alphas = run, alphas
        self.root = run.dir.root / "stability"
        self.results = run.dir.root / "stability.jsonl"

    def done(self) -> dict[tuple[int, int], dict[str, Any]]:
        if not self.results.exists():
            return {}
        rows = [json.loads(line) for line in self.results.read_text().splitlines() if line.strip()]
        return {(r["level"], r["rewind_step"]): r for r in rows}

    def state_at(self, step: int) -> Path:
        """The dense run's training state at `step`: its rewind checkpoint, or a replay of it to `step`, made once."""
        run = self.run
        if step == run.schedule.rewind_step:
            return run.dir.rewind
        path = self.root / f"rewind_{step}.ckpt"
        if not path.exists():
            module = run.build_module(run.cfg.seed)
            module.schedule = replace(run.schedule, total_steps=max(step, 1))
            replay = self.root / f"replay_{step}"
            replay.mkdir(parents=True, exist_ok=True)
            resume = replay / LAST
            member = Member(run, 0, ARMS["ticket"], module, module.masks(), resume if resume.exists() else None, 0, directory=replay, rewind=path)
            fit = trainer(module.schedule, MemberCheckpoints([member]), [RewindCapture(step, [path])], run.cfg, run.progress)
            fit.fit(module, datamodule=run.data([run.cfg.seed]), ckpt_path=None if member.resume is None else str(resume), weights_only=False)
        return path

    def copies(self, level: int, step: int) -> list[Member]:
        """The two copies of (level, k): the same start and masks, each its own data order."""
        run, members = self.run, []
        masks = run.dir.load(run.dir.mask(level)) if level > 0 else None
        for c in range(COPIES):
            directory = self.root / f"level_{level:02d}" / f"rewind_{step}" / f"copy_{c}"
            module = run.build_module(run.cfg.seed)
            masks = masks if masks is not None else M.ones_like(module.weights())
            module.set_masks(masks)
            start = start_checkpoint(directory / START, self.state_at(step), masks, run.cfg.prune.rewind_optimizer)
            resume = next(p for p in (directory / FINAL, directory / LAST, start) if p.exists())
            order = seeded_generator(run.cfg.seed, "stability", c).initial_seed() % 2**31
            members.append(Member(run, level, ARMS["ticket"], module, masks, resume, step, directory=directory, rewind=start, data_seed=order))
        return members

    def curve(self, members: list[Member]) -> dict[str, list[float]]:
        """Test and train error at each α between the two copies' trained weights."""
        run = self.run
        d = run.cfg.data
        split = load_split(d.name, d.root, run.schedule.val_size)
        a = split.arrays
        batches = {s: EvalBatches(a[f"x_{s}"], a[f"y_{s}"], EVAL_BATCH, split.normalise) for s in ("train", "test")}
        states = [run.dir.load(m.dir / FINAL)["state_dict"] for m in members]
        module = run.build_module(run.cfg.seed)
        curve: dict[str, list[float]] = {"alpha": [], "test_error": [], "train_error": []}
        for i in range(self.alphas):
            alpha = i / (self.alphas - 1)
            module.load_state_dict(interpolate(states[0], states[1], alpha))
            recompute_batch_norm(module.model, batches["train"])
            curve["alpha"].append(alpha)
            for s in ("test", "train"):
                curve[f"{s}_error"].append(error(module, batches[s]))
        return curve

    def measure(self, level: int, step: int) -> dict[str, Any]:
        members = self.copies(level, step)
        for m in members:
            m.dir.mkdir(parents=True, exist_ok=True)
        todo = [m for m in members if not m.finished]
        if todo:
            self.run.say(f"stability: level {level}, rewind step {step}: training {len(todo)} copies to step {self.run.schedule.total_steps}")
            for group in packs(todo, self.run.cfg.pack or auto_pack()):
                train_pack(group)
        curve = self.curve(members)
        return {
            "level": level, "rewind_step": step, "seed": self.run.cfg.seed, "run_id": self.run.cfg.run_id(),
            "data_seeds": [m.order for m in members], "weights_remaining": M.weights_remaining(members[0].masks)[0],
            "test_barrier": barrier(curve["test_error"]), "train_barrier": barrier(curve["train_error"]), **curve,
        }


def points(cfg: Experiment, rewinds: list[str], levels: list[int], alphas: int) -> list[tuple[int, int]]:
    """(level, rewind step) pairs to measure, checked before any work: one line on a problem."""
    from lth.config import Schedule

    schedule = Schedule.of(cfg)
    if alphas < 2:
        raise ConfigError(f"--alphas: the curve needs at least its two ends, got {alphas}")
    steps = []
    for text in rewinds:
        step = to_steps(str(text), schedule.steps_per_epoch, "--rewind")
        if not 0 <= step < schedule.total_steps:
            raise ConfigError(f"--rewind: {text} ({step} steps) is not before the end of training ({schedule.total_steps} steps)")
        steps.append(step)
    for level in levels:
        if not 0 <= level <= cfg.prune.levels:
            raise ConfigError(f"--levels: the run has levels 0 to {cfg.prune.levels} (prune.levels), not {level}")
    if cfg.prune.schedule == "gradual" and any(level > 0 for level in levels):
        raise ConfigError("--levels: a gradually pruned ticket changes its masks as it trains; measure level 0")
    return [(level, step) for level in levels for step in steps]


def run_stability(cfg: Experiment, rewinds: list[str], levels: list[int], alphas: int, progress: bool = True) -> Path:
    todo = points(cfg, rewinds, levels, alphas)
    ticket = replace(cfg, arms=["ticket"], prune=replace(cfg.prune, levels=max(levels)))
    (run,) = run_experiments([ticket], progress)  # trains what is missing of the ticket's chain, nothing else
    run = Run(cfg, run.dir, run.schedule, progress)
    study = Study(run, alphas)
    try:
        held = locks.claim(run.dir.lock("stability"))
    except locks.Busy as holder:
        raise locks.Busy(f"the stability study of {run.dir.root} is being run by another process ({holder}); nothing to do here") from None
    with held, stop_on_sigusr1():
        for level, step in todo:
            if (level, step) in study.done():
                continue
            check(f"before the stability of level {level} at rewind step {step}")
            row = study.measure(level, step)
            lines = study.results.read_bytes() if study.results.exists() else b""
            atomic_write(study.results, lines + (json.dumps(row) + "\n").encode())
            run.say(f"stability: level {level}, rewind step {step}: test barrier {row['test_barrier']:+.4f}, train barrier {row['train_barrier']:+.4f}")
    return study.results
