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

from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lth import locks, pruning
from lth import masks as M
from lth.arms import ARMS
from lth.config import ConfigError, Experiment, dataset, steps, to_steps
from lth.data import EVAL_BATCH, EvalBatches, load_split, seeded_generator
from lth.files import atomic_write, save_figure
from lth.imp import Run, run_experiments
from lth.inputs import call
from lth.module import MaskedModule
from lth.preemption import Interrupted, check, stop_on_signals
from lth.report import About, ticks_no_finer_than
from lth.rewinding import start_checkpoint
from lth.run_dir import FINAL, START, read_lines
from lth.tracking import Tracker
from lth.training import Member, packs, resume_from, train_pack

COPIES = 2
# Train error and batch-norm statistics are measured on a fixed subset of the training split (its first
# examples, the split being seeded): 30 points × a whole CIFAR or MNIST training set would cost more than
# the copies' own training on a CPU, and 10,000 examples put the error within about ±0.4% (one std at 5%).
TRAIN_SUBSET = 10_000


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
        call(model, x)
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

    def done(self) -> dict[tuple[str, int, int | None], dict[str, Any]]:
        """The lines measured so far, by (kind, level, rewind step)."""
        rows = [line for _, line in read_lines(self.results)] if self.results.exists() else []
        return {(r["kind"], r["level"], r["rewind_step"]): r for r in rows}

    def state_at(self, step: int) -> Path:
        """The dense run's training state at `step`: its rewind checkpoint, or a replay of it to `step`, made once."""
        run = self.run
        if step == run.steps.rewind_step:
            return run.dir.rewind
        return run.replay(step, self.root / f"rewind_{step}.ckpt", self.root / f"replay_{step}")

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
            resume = resume_from(directory, start)
            order = seeded_generator(run.cfg.seed, "stability", c).initial_seed() % 2**31
            members.append(run.as_member(level, ARMS["ticket"], module, masks, resume, step, directory, start, order))
        return members

    def curve(self, states: list[dict[str, torch.Tensor]]) -> dict[str, list[float]]:
        """Test and train error at each α between two trained networks (module state dicts) with the same masks."""
        run = self.run
        split = load_split(run.net.spec, run.cfg.data.root, run.steps.val_size)
        a = split.arrays
        batches = {
            "train": EvalBatches(a["x_train"][:TRAIN_SUBSET], a["y_train"][:TRAIN_SUBSET], EVAL_BATCH, split.normalise),
            "test": EvalBatches(a["x_test"], a["y_test"], EVAL_BATCH, split.normalise),
        }
        module = run.build_module(run.cfg.seed)
        curve: dict[str, list[float]] = {"alpha": [], "test_error": [], "train_error": []}
        for i in range(self.alphas):
            alpha = i / (self.alphas - 1)
            module.load_state_dict(interpolate(states[0], states[1], alpha))
            module.apply_masks()  # already so: both ends hold zeros there (and, under channel pruning, their followers)
            recompute_batch_norm(module.model, batches["train"])
            curve["alpha"].append(alpha)
            for s in ("test", "train"):
                curve[f"{s}_error"].append(error(module, batches[s]))
        return curve

    def _row(self, kind: str, level: int, step: int | None, masks: M.Masks, curve: dict[str, list[float]], **extra) -> dict[str, Any]:
        return {
            "kind": kind, "level": level, "rewind_step": step, "seed": self.run.cfg.seed, "run_id": self.run.cfg.run_id(),
            "weights_remaining": M.weights_remaining(masks)[0], **extra,
            "test_barrier": barrier(curve["test_error"]), "train_barrier": barrier(curve["train_error"]), **curve,
        }

    def between(self, level: int) -> dict[str, Any]:
        """The barrier between the ticket's trained networks of levels L−1 and L (Paul et al. 2022, "Unmasking the
        Lottery Ticket Hypothesis", §3): level L−1's weights pruned to level L's mask, against level L's."""
        run = self.run
        before, after = run.trained_weights(level - 1, "ticket"), run.trained_weights(level, "ticket")
        masks = {k[: -len("_mask")]: v for k, v in after.items() if k.endswith("_mask")}
        for name, mask in masks.items():
            before[name], before[f"{name}_mask"] = before[name] * mask, mask.clone()
        states = [{f"model.{k}": v for k, v in state.items()} for state in (before, after)]
        return self._row("levels", level, None, masks, self.curve(states), from_level=level - 1)

    def measure(self, level: int, step: int) -> dict[str, Any]:
        members = self.copies(level, step)
        for m in members:
            m.dir.mkdir(parents=True, exist_ok=True)
        todo = [m for m in members if not m.finished]
        if todo:
            self.run.say(f"stability: level {level}, rewind step {step}: training {len(todo)} copies to step {self.run.steps.total_steps}")
            for group in packs(todo, self.run.pack):
                train_pack(group, self.run.training(), [])
        curve = self.curve([self.run.dir.load(m.dir / FINAL)["state_dict"] for m in members])
        return self._row("copies", level, step, members[0].masks, curve, data_order_seeds=[m.data_order for m in members])


def arguments(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """`lth stability`'s own options (`--rewind`, `--levels`, `--alphas`, `--between_levels`) and the rest, the
    experiment's overrides. `--rewind` defaults to the run's own rewind point (None here)."""
    from lth.config import parse_overrides

    own: dict[str, Any] = {"rewind": None, "levels": [0], "alphas": 30, "between_levels": False}
    overrides = []
    for arg in args:
        key = arg[2:].partition("=")[0]
        if key not in own:
            overrides.append(arg)
            continue
        value = parse_overrides([arg])[key]
        own[key] = value if key in ("alphas", "between_levels") or isinstance(value, list) else [value]
    if not isinstance(own["alphas"], int) or not all(isinstance(level, int) for level in own["levels"]):
        raise ConfigError("--alphas and --levels take integers")
    for key in ("levels", "rewind"):
        if own[key] == []:
            raise ConfigError(f"--{key}: give at least one, or leave it out for the default")
    if not isinstance(own["between_levels"], bool):
        raise ConfigError(f"--between_levels: expected true or false, got {own['between_levels']!r}")
    return own, overrides


def points(cfg: Experiment, rewinds: list[str], levels: list[int], alphas: int) -> list[tuple[int, int]]:
    """(level, rewind step) pairs to measure, checked before any work: one line on a problem."""
    durations = steps(cfg)
    if cfg.train.devices * cfg.train.num_nodes > 1:
        raise ConfigError("lth stability: trains its copies on one device each; leave train.devices and train.num_nodes at 1 "
                          "(its points spread over jobs instead, as a sweep over --rewind)")
    if dataset(cfg.data).stream:
        raise ConfigError("lth stability: evaluates its interpolations on in-memory data, and these images stream from their files; "
                          "serve them from the cache (a larger data.cache_bytes) or measure on a smaller dataset")
    if alphas < 2:
        raise ConfigError(f"--alphas: the curve needs at least its two ends, got {alphas}")
    rewind_steps = []
    for text in rewinds:
        step = to_steps(str(text), durations.steps_per_epoch, "--rewind")
        if not 0 <= step < durations.total_steps:
            raise ConfigError(f"--rewind: {text} ({step} steps) is not before the end of training ({durations.total_steps} steps)")
        rewind_steps.append(step)
    for level in levels:
        if not 0 <= level <= cfg.prune.levels:
            raise ConfigError(f"--levels: the run has levels 0 to {cfg.prune.levels} (prune.levels), not {level}")
    if pruning.schedule(cfg.prune).masks_from_training and any(level > 0 for level in levels):
        raise ConfigError("--levels: a gradually pruned ticket changes its masks as it trains; measure level 0")
    return [(level, step) for level in levels for step in rewind_steps]


def run_stability(cfg: Experiment, rewinds: list[str], levels: list[int], alphas: int, between_levels: bool = False, progress: bool = True) -> Path:
    """Measure every (level, k) not yet in `stability.jsonl`, and with `between_levels` every pair of consecutive
    levels of the ticket's chain up to the highest level asked for; then write the run's stability report.
    Processes may share the work (a sweep over k): each point is measured by whoever claims it first."""
    todo = [("copies", level, step) for level, step in points(cfg, rewinds, levels, alphas)]
    chain = max(levels)
    todo += [("levels", level, None) for level in range(1, chain + 1)] if between_levels else []
    run = Run.open(cfg, progress)
    try:
        run_experiments([replace(cfg, arms=["ticket"], prune=replace(cfg.prune, levels=chain))], progress)  # what is missing of the ticket's chain
    except locks.Busy:  # another process trains the chain (another point of a sweep): follow it
        run.wait_for(chain, "stability", chain, "ticket")
    study = Study(run, alphas)
    with torch.device("meta"):  # its layers alone, no memory and no init
        norms = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in run.net.architecture.build().modules())
    recomputed = f" (batch-norm statistics recomputed on {TRAIN_SUBSET:,} training examples at each of {alphas} points)" if norms else ""
    run.tracker = Tracker.open(replace(cfg, arms=["stability"]), run.dir)  # its own W&B run, job_type "stability"
    with stop_on_signals():
        try:
            for point in todo:
                kind, level, step = point
                with ExitStack() as held:
                    try:
                        held.enter_context(locks.claim(run.dir.lock(f"stability_{kind}_{level}_{step}")))
                    except locks.Busy:
                        run.say(f"stability: {kind} of level {level} at rewind step {step} is being measured by another process")
                        continue
                    if point in study.done():
                        continue
                    check(f"before the stability of level {level} at rewind step {step}")
                    row = study.measure(level, step) if kind == "copies" else study.between(level)
                    run.dir.append_line(study.results, row)
                if run.tracker:
                    run.tracker.stability(row)
                run.say(f"stability: {kind} of level {level} at rewind step {step}: test barrier {row['test_barrier']:+.4f}, "
                        f"train barrier {row['train_barrier']:+.4f}{recomputed}")
        except Interrupted as stop:
            if run.tracker:
                run.tracker.interrupted(stop.exit_code)
            raise
    if run.tracker:
        run.tracker.finish()
    write_report(list(study.done().values()), study.root, About.of(run.dir.root))
    return study.results


def write_report(rows: list[dict[str, Any]], out: Path, about: About) -> list[Path]:
    """A table of barriers, and two figures: error against α for each k (one panel per level), and the test
    barrier against k (one line per level; Frankle et al. 2020, Figures 3 and 5). Rows of several seeds are
    averaged per (level, k); the figures say how many, and of which network and data (`about`)."""
    import statistics

    import matplotlib.ticker
    from matplotlib.figure import Figure

    cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
    pairs: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] == "levels":
            pairs.setdefault(row["level"], []).append(row)
        else:
            cells.setdefault((row["level"], row["rewind_step"]), []).append(row)
    levels = sorted({level for level, _ in cells})
    mean = lambda key, group: statistics.fmean(r[key] for r in group)  # noqa: E731
    lines = ["| level | weights remaining | rewind step | test barrier | train barrier | seeds |", "|---|---|---|---|---|---|"]
    for (level, step), group in sorted(cells.items()):
        lines.append(f"| {level} | {mean('weights_remaining', group):.2%} | {step} | {mean('test_barrier', group):+.4f} | "
                     f"{mean('train_barrier', group):+.4f} | {len(group)} |")
    if pairs:
        lines += ["", "Between consecutive levels of the ticket's chain (level L−1's trained weights pruned to level L's mask, "
                  "against level L's; Paul et al. 2022):", "", "| levels | weights remaining | test barrier | train barrier | seeds |", "|---|---|---|---|---|"]
        lines += [f"| {level - 1} → {level} | {mean('weights_remaining', group):.2%} | {mean('test_barrier', group):+.4f} | "
                  f"{mean('train_barrier', group):+.4f} | {len(group)} |" for level, group in sorted(pairs.items())]
    out.mkdir(parents=True, exist_ok=True)
    figures = "\n\n![error along the line](curves.png)\n\n![barrier against rewind step](barrier.png)\n" if cells else "\n"
    atomic_write(out / "report.md", ("# Instability analysis\n\nError barrier between two copies trained from each rewind step "
                 "(the largest error along the line between them minus the mean of its ends; batch norm recomputed at each point).\n\n"
                 + "\n".join(lines) + figures).encode())
    if not cells:
        return [out / "report.md"]
    seeds = len({row["seed"] for row in rows})
    caption = f"{about.caption()}; mean over {seeds} seed{'s' * (seeds != 1)}"
    curves = Figure(figsize=(4.2 * len(levels) + 1, 3.9))
    for ax, level in zip(curves.subplots(1, len(levels), squeeze=False)[0], levels):
        for (at, step), group in sorted(cells.items()):
            if at == level:
                alphas = group[0]["alpha"]
                errors = [statistics.fmean(r["test_error"][i] for r in group) for i in range(len(alphas))]
                ax.plot(alphas, errors, marker="o", markersize=3, label=f"k = {step}")
        ax.set_title(f"level {level} ({mean('weights_remaining', cells[next(k for k in cells if k[0] == level)]):.1%} of weights)")
        ax.set_xlabel("α (interpolation)")
        ax.set_ylabel("test error")
        ax.grid(True, alpha=0.3)
        if about.test_size:
            ticks_no_finer_than(ax, 1 / about.test_size)
    # One legend, beside the last panel: every panel's k are the same colours, and the curves fill the axes.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    curves.suptitle(caption, fontsize="medium")
    curves.tight_layout()
    barrier_figure = Figure(figsize=(6.4, 3.9))
    ax = barrier_figure.subplots()
    for level in levels:
        steps = sorted(step for at, step in cells if at == level)
        ax.plot(steps, [mean("test_barrier", cells[level, step]) for step in steps], marker="o", label=f"level {level}")
    ax.set_xscale("symlog", linthresh=max(1, min((s for _, s in cells if s > 0), default=1)))
    ax.set_xticks(sorted({step for _, step in cells}))  # the steps measured, as numbers: symlog's own ticks skip them
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("rewind step k")
    ax.set_ylabel("test error barrier")
    if about.test_size:
        ticks_no_finer_than(ax, 1 / about.test_size)
    ax.set_title(caption, fontsize="small")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    barrier_figure.tight_layout()
    paths = [out / "report.md"]
    for figure, name in ((curves, "curves.png"), (barrier_figure, "barrier.png")):
        paths += save_figure(figure, out / name)
    return paths
