"""`lth report RUN_DIR...`: tickets against their controls, aggregated over seeds, as a summary, tables and figures.

The accuracy reported by default is the test accuracy at the early-stopping step (the step of lowest
validation loss), the figure Frankle & Carbin (2019, §2) report; the accuracy at the final weights is
tabulated beside it.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path

from scipy import stats

from lth import config
from lth.arms import ARMS
from lth.files import atomic_write, save_figure
from lth.run_dir import Row, RunDir, distinct

ACCURACY = "test_acc_at_early_stop"  # what the summary, the first table and accuracy.png show


@dataclass(frozen=True)
class Stat:
    values: tuple[float, ...]  # one per seed

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        return cls(tuple(values))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """The sample standard deviation over seeds; 0 for a single run."""
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    @property
    def half_width(self) -> float:
        """Half the 95% confidence interval of the mean over seeds (Student's t); 0 for a single run."""
        return float(stats.t.ppf(0.975, self.n - 1)) * self.std / math.sqrt(self.n) if self.n > 1 else 0.0


@dataclass(frozen=True)
class Cell:
    weights_remaining: float
    test_acc_at_early_stop: Stat
    test_acc: Stat  # at the final weights
    early_stop_step: Stat
    macs: float | None = None  # per example, of the network as pruned (`lth.flops`); None in lines that predate it
    parameters: float | None = None
    inference_speedup: float | None = None  # measured, under channel methods
    per_layer: tuple[tuple[str, float], ...] = ()  # each prunable layer's weights remaining, mean over seeds
    gap_at_early_stop: Stat | None = None  # train minus test accuracy; None where a line predates it
    gap: Stat | None = None
    ended_early: tuple[tuple[int, str], ...] = ()  # (seed, why) of each run a hook ended early (`Row.ended_early`)


@dataclass(frozen=True)
class About:
    """What a figure says of its runs besides their numbers, since a figure is read apart from its report (in a
    paper's appendix): the network, the data, and the test split's size, whose reciprocal is the finest difference
    in accuracy one test can show."""

    model: str
    data: str
    test_size: int | None  # None for runs that predate `dataset.json`

    @classmethod
    def of(cls, run_dir: Path) -> About:
        run = RunDir(Path(run_dir))
        cfg = config.load(run.config)
        return cls(cfg.model.name, cfg.data.name, run.sizes()[1])

    def caption(self) -> str:
        return f"{self.model} on {self.data}" + (f", {self.test_size:,} test examples" if self.test_size else "")


@dataclass(frozen=True)
class Difference:
    """Ticket minus control, with a 95% confidence interval from Welch's t-test (unequal variances); no
    interval unless each side has at least two seeds."""

    mean: float
    low: float | None
    high: float | None
    n: tuple[int, int]

    @classmethod
    def of(cls, ticket: Stat, control: Stat) -> Difference:
        mean = ticket.mean - control.mean
        if ticket.n < 2 or control.n < 2:
            return cls(mean, None, None, (ticket.n, control.n))
        if ticket.std == control.std == 0:
            return cls(mean, mean, mean, (ticket.n, control.n))
        with warnings.catch_warnings():  # scipy warns of precision loss when a side's seeds agree to ~1e-16
            warnings.simplefilter("ignore", RuntimeWarning)
            interval = stats.ttest_ind(ticket.values, control.values, equal_var=False).confidence_interval(0.95)
        return cls(mean, float(interval.low), float(interval.high), (ticket.n, control.n))

    def __str__(self) -> str:
        n = f"n={self.n[0]}/{self.n[1]}"
        if self.low is None:
            return f"{self.mean:+.4f} ({n}, too few seeds for an interval)"
        mark = " *" if self.low > 0 or self.high < 0 else ""
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]{mark} ({n})"


def run_folders(paths: list[Path]) -> list[Path]:
    """`paths` less the report folders lth wrote among its runs (`lth run` writes out_dir/NAME/report/), so that
    `lth report runs/NAME/*` reports the runs."""
    return [p for p in paths if not ((Path(p) / "report.md").is_file() and not (Path(p) / "results.jsonl").exists())]


def read_rows(run_dirs: list[Path]) -> list[Row]:
    """The rows of runs that differ only in their seed; pooling runs of different studies would make the
    error bars meaningless, so that is refused."""
    rows, studies = [], {}
    for path in dict.fromkeys(Path(p).resolve() for p in run_dirs):  # `R` and `R/` are one run
        run_dir = RunDir(path)
        cfg, lines = reportable(run_dir)
        _one_study(studies, cfg.study_id(), path)
        rows += [(row, str(run_dir.results)) for row in lines]
    return distinct(rows)  # a run copied to a second folder is still one seed


def reportable(run_dir: RunDir) -> tuple[config.Experiment, list[Row]]:
    """A run's experiment and results lines; one line of error if it is not a run, or has none to report. The
    experiment first: it imports the run's plugins, whose arms its lines may name."""
    path = run_dir.root
    if not run_dir.results.is_file() and (lost := run_dir.divergences()):
        first = lost[0]
        raise ValueError(f"{path}: no level of it finished: seed {first['seed']} {first['arm']} at level {first['level']} diverged at step {first['step']} "
                         f"({first['why']}){f' and {len(lost) - 1} more' if len(lost) > 1 else ''}; nothing to report")
    if not run_dir.results.is_file():
        raise FileNotFoundError(f"{run_dir.results} does not exist: is {path} an lth run directory?")
    cfg = config.load(run_dir.config)
    lines = run_dir.rows()
    if not lines:
        raise ValueError(f"{run_dir.results} holds no results line yet: nothing to report")
    return cfg, lines


def divergences(run_dirs: list[Path]) -> list[dict]:
    """The (level, arm)s of these runs that diverged: no results line, a note instead (`lth.imp`)."""
    return [note for path in run_dirs for note in RunDir(Path(path)).divergences()]


def _one_study(studies: dict[str, object], study: str, source: object) -> None:
    studies.setdefault(study, source)
    if len(studies) > 1:
        first, other = list(studies.values())[:2]
        raise ValueError(f"{first} and {other} differ in more than their seed; report them separately")


def rows_from_wandb(path: str, group: str, api=None) -> list[Row]:
    """The results lines that lth logged to the W&B runs of one group (by default a group is one study), as
    `ARM/row`. Needs a network; the tested route is the run directories."""
    import wandb

    api = api or wandb.Api()
    rows, studies = [], {}
    runs = list(api.runs(path, filters={"group": group}))
    if not runs:
        raise ValueError(f"no W&B runs in group {group!r} of {path}")
    for run in runs:
        cfg = config.from_dict({k: v for k, v in run.config.items() if k not in ("run_id", "run_dir")})
        _one_study(studies, cfg.study_id(), run.name)
        for step in run.scan_history():
            rows += [(Row.from_json(json.loads(step[f"{arm}/row"]), f"W&B run {run.name}"), f"W&B run {run.name}")
                     for arm in ARMS if step.get(f"{arm}/row") is not None]
    return distinct(rows)


def aggregate(rows: list[Row]) -> dict[tuple[str, int], Cell]:
    """Seeds of the same (arm, level) pooled. Every run of a level shares its sparsity, up to rounding."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.arm, row.level), []).append(row)
    return {
        key: Cell(
            statistics.fmean(r.weights_remaining for r in group),
            Stat.of([r.test_acc_at_early_stop for r in group]),
            Stat.of([r.test_acc for r in group]),
            Stat.of([float(r.early_stop_step) for r in group]),
            *(statistics.fmean(getattr(r, k) for r in group) if all(getattr(r, k) is not None for r in group) else None
              for k in ("macs", "parameters", "inference_speedup")),
            tuple((layer, statistics.fmean(r.weights_remaining_per_layer[layer] for r in group)) for layer in group[0].weights_remaining_per_layer),
            *(Stat.of([getattr(r, k) for r in group]) if all(getattr(r, k) is not None for r in group) else None for k in ("gap_at_early_stop", "gap")),
            tuple((r.seed, r.ended_early) for r in group if r.ended_early),
        )
        for key, group in sorted(groups.items(), key=lambda kv: (list(ARMS).index(kv[0][0]), kv[0][1]))
    }


def arms_in(cells: dict[tuple[str, int], Cell]) -> list[str]:
    return [a for a in ARMS if any(arm == a for arm, _ in cells)]


def matching_sparsity(cells: dict[tuple[str, int], Cell], arm: str) -> float | None:
    """The fewest weights remaining at which the arm's mean accuracy is at least the dense network's mean minus
    its std over seeds (Renda et al. 2020's "matching"); None if it matches at no pruned level."""
    if ("ticket", 0) not in cells:
        return None
    dense = cells["ticket", 0].test_acc_at_early_stop
    matching = [c.weights_remaining for (a, level), c in cells.items() if a == arm and level > 0 and c.test_acc_at_early_stop.mean >= dense.mean - dense.std]
    return min(matching, default=None)


def summary(cells: dict[tuple[str, int], Cell]) -> str:
    """Per arm, its matching sparsity; per level, the ticket minus each control with a 95% interval."""
    arms = arms_in(cells)
    lines = ["Matching sparsity (fewest weights remaining with mean test accuracy at early stop >= dense mean - dense std):", ""]
    for arm in arms:
        found = matching_sparsity(cells, arm)
        deepest = min((c.weights_remaining for (a, level), c in cells.items() if a == arm and level > 0), default=None)
        lines.append(f"- {arm}: " + ("no pruned level matches" if found is None else f"{found:.2%} of weights remaining" if found != deepest else
                                      f"at most {found:.2%} of weights remaining: it still matches at the deepest level run, so where it stops "
                                      "matching is not reached"))
    controls = [a for a in arms if a != "ticket"]
    if "ticket" in arms and controls:
        lines += ["", "Ticket minus control, test accuracy at early stop, mean [95% CI, Welch] (n ticket/control); * the interval excludes 0:", ""]
        lines += ["| level | weights remaining | " + " | ".join(controls) + " |", "|---" * (len(controls) + 2) + "|"]
        for level in sorted({lv for a, lv in cells if a == "ticket" and lv > 0}):
            ticket = cells["ticket", level]
            diffs = [str(Difference.of(ticket.test_acc_at_early_stop, cells[c, level].test_acc_at_early_stop)) if (c, level) in cells else "" for c in controls]
            lines.append(f"| {level} | {ticket.weights_remaining:.2%} | " + " | ".join(diffs) + " |")
    return "\n".join(lines)


def markdown(cells: dict[tuple[str, int], Cell], field: str, digits: int) -> str:
    arms = arms_in(cells)
    levels = sorted({level for _, level in cells})
    lines = ["| level | weights remaining | " + " | ".join(arms) + " |", "|---" * (len(arms) + 2) + "|"]
    for level in levels:
        remaining = cells.get(("ticket", level)) or next(c for (_, at), c in cells.items() if at == level)
        entries = []
        for arm in arms:
            cell = cells.get((arm, level))
            stat = getattr(cell, field) if cell else None  # None too where the lines predate the field
            spread = f" ± {stat.std:.{digits}f}" if stat and stat.n > 1 else ""  # one seed has no spread to show
            entries.append(f"{stat.mean:.{digits}f}{spread} (n={stat.n})" if stat else "")
        lines.append(f"| {level} | {remaining.weights_remaining:.2%} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def cost(cells: dict[tuple[str, int], Cell]) -> str:
    """What the ticket's network of each level computes and holds, against the dense network's."""
    tickets = sorted((level, c) for (arm, level), c in cells.items() if arm == "ticket" and c.macs is not None and c.parameters is not None)
    if not tickets or tickets[0][0] != 0:
        return "No MACs or parameter counts in these results lines (they predate them)."
    dense = tickets[0][1]
    measured = any(c.inference_speedup is not None for _, c in tickets)  # under channel methods only: the narrow network is timed
    lines = ["| level | weights remaining | MACs per example | parameters | dense MACs / MACs |" + (" measured speed-up |" if measured else ""),
             "|---" * (6 if measured else 5) + "|"]
    lines += [
        f"| {level} | {c.weights_remaining:.2%} | {c.macs:,.0f} | {c.parameters:,.0f} | {dense.macs / c.macs:.2f}× |"
        + ((f" {c.inference_speedup:.2f}× |" if c.inference_speedup is not None else " |") if measured else "")
        for level, c in tickets
    ]
    return "\n".join(lines)


def figure(cells: dict[tuple[str, int], Cell], field: str, ylabel: str, about: About | None = None):
    """One line per arm with a ±1 std band over seeds, against percent of weights remaining on a log axis
    (sparser to the right, as in Frankle & Carbin 2019, Figure 3); the dense network dashed; titled with `about`
    (none for rows read from W&B, whose runs' files are elsewhere)."""
    from matplotlib.figure import Figure  # not pyplot: no GUI backend, nothing kept alive after saving

    fig = Figure(figsize=(7.8, 4.2))
    ax = fig.subplots()
    draw_arms(ax, cells, field, ylabel, about, outside=True)
    if about:
        ax.set_title(about.caption(), fontsize="medium")
    fig.tight_layout()
    return fig


def draw_arms(ax, cells: dict[tuple[str, int], Cell], field: str, ylabel: str, about: About | None = None, outside: bool = False) -> None:
    """`figure`'s drawing, on one set of axes (a panel of `lth.compare`'s figure too); `outside`: its legend beside
    the axes, where it covers no band."""
    import matplotlib.ticker

    arms = arms_in(cells)
    for i, arm in enumerate(arms):
        points = sorted(((c.weights_remaining * 100, getattr(c, field)) for (a, at), c in cells.items() if a == arm and at > 0 and getattr(c, field)),
                        reverse=True)
        if not points:
            continue
        x = [p for p, _ in points]
        mean = [s.mean for _, s in points]
        colour = arm_colour(arm)
        if len(points) == 1:  # one pruned level: a band over one x has no width, so a bar, each arm's a little apart
            ax.errorbar([x[0] * 1.04 ** (i - (len(arms) - 1) / 2)], mean, yerr=[points[0][1].std], marker="o", markersize=4, capsize=3, label=arm,
                        color=colour)
            continue
        ax.plot(x, mean, marker="o", markersize=3, label=arm, color=colour)
        ax.fill_between(x, [s.mean - s.std for _, s in points], [s.mean + s.std for _, s in points], alpha=0.2, color=colour)
    if ("ticket", 0) in cells and getattr(cells["ticket", 0], field):
        dense = getattr(cells["ticket", 0], field)
        ax.axhline(dense.mean, color="black", linestyle="--", linewidth=1, label="dense")
        # Its band too: its lower edge, mean − std, is where an arm "matches" (`matching_sparsity`).
        ax.axhspan(dense.mean - dense.std, dense.mean + dense.std, color="black", alpha=0.08, linewidth=0)
    ax.set_xscale("log")
    levels = sorted({round(c.weights_remaining * 100, 1) for (_, at), c in cells.items() if at > 0}, reverse=True)
    ax.set_xticks(levels[:: -(-len(levels) // 10)])  # the levels themselves, at most about ten of them (`write` draws none without)
    if len(levels) == 1:  # room for its arms' bars side by side, not an axis zoomed to their offsets
        ax.set_xlim(levels[0] * 1.4, levels[0] / 1.4)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel("percent of weights remaining")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if field == "early_stop_step":
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    elif about and about.test_size:  # an accuracy, or a gap between two accuracies on as many examples
        ticks_no_finer_than(ax, 1 / about.test_size)
    seeds = max((getattr(c, field).n for c in cells.values() if getattr(c, field)), default=0)
    if ax.get_legend_handles_labels()[0]:  # lines that predate a field draw nothing to name
        ax.legend(title=f"mean over {seeds} seeds, ±1 std" if seeds > 1 else "one seed", title_fontsize="small", fontsize="small",
                  **({"loc": "upper left", "bbox_to_anchor": (1.01, 1)} if outside else {}))


# Past matplotlib's ten cycle colours, colours none of them is near (Dark2's magenta, teal, mustard, grey, violet):
# the eleventh arm once drew in the ticket's blue.
MORE_COLOURS = ("#e7298a", "#1b9e77", "#a6761d", "#666666", "#7570b3")


def arm_colour(arm: str) -> str:
    """An arm's colour, the same in every figure and panel: its place among the arms (`ARMS`), then `MORE_COLOURS`."""
    i = list(ARMS).index(arm)
    return f"C{i}" if i < 10 else MORE_COLOURS[(i - 10) % len(MORE_COLOURS)]


def ticks_no_finer_than(ax, step: float) -> None:
    """The y axis's ticks at least `step` apart, at 1, 2, 2.5 or 5 times a power of ten. Steps finer than one test
    example mark differences no test of that size can show; one seed's flat lines once zoomed an axis to steps of
    0.0025 on 300 examples."""
    import matplotlib.ticker

    ticks = ax.get_yticks()
    if len(ticks) > 1 and ticks[1] - ticks[0] >= step:
        return
    decade = 10 ** math.floor(math.log10(step))
    spacing = next(m * decade for m in (1, 2, 2.5, 5, 10) if m * decade >= step)
    ax.yaxis.set_major_locator(matplotlib.ticker.MultipleLocator(spacing))
    low, high = ax.get_ylim()
    if high - low < 2 * spacing:  # out to the ticks on either side: at least two to read a value between
        ax.set_ylim(math.floor(low / spacing) * spacing, max(math.ceil(high / spacing), math.floor(low / spacing) + 1) * spacing)


FIGURES = ((ACCURACY, "test accuracy at early stop", "accuracy.png"), ("early_stop_step", "early-stop step", "early_stop.png"),
           ("gap_at_early_stop", "train − test accuracy at early stop", "gap.png"))
GAP = ("## Generalisation gap at the early-stopping step (mean ± std over seeds)\n\nTrain accuracy on a fixed subset of the training "
       "split (its first examples, as many as the test split's, the same for every arm and level) minus test accuracy, at "
       "the step of lowest validation loss; at the final weights below it. Does pruning reduce overfitting?\n\n")


def layers(cells: dict[tuple[str, int], Cell]) -> str:
    """Each layer's weights remaining at the deepest level of every arm: which layers pruning empties first (under
    global pruning a layer's rate is the ranking's, not a setting)."""
    arms = [a for a in arms_in(cells) if any(arm == a and level > 0 for arm, level in cells)]
    if not arms:
        return "Only the dense network was trained."
    last = {a: max(level for arm, level in cells if arm == a) for a in arms}
    names = [name for name, _ in cells[arms[0], last[arms[0]]].per_layer]
    lines = ["| layer | " + " | ".join(f"{a} (level {last[a]})" for a in arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for name in names:
        lines.append(f"| `{name}` | " + " | ".join(f"{dict(cells[a, last[a]].per_layer)[name]:.2%}" for a in arms) + " |")
    total = " | ".join(f"{cells[a, last[a]].weights_remaining:.2%}" for a in arms)
    return "\n".join([*lines, f"| all prunable | {total} |"])


def density_figure(cells: dict[tuple[str, int], Cell], about: About | None = None):
    """The ticket's per-layer weights remaining against the level, one line per layer, on a log axis."""
    import matplotlib.ticker
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.8, 4.2))
    ax = fig.subplots()
    tickets = sorted((level, c) for (arm, level), c in cells.items() if arm == "ticket")
    names = [name for name, _ in tickets[0][1].per_layer] if tickets else []
    for name, label in zip(names, layer_labels(names)):
        ax.plot([level for level, _ in tickets], [dict(c.per_layer)[name] * 100 for _, c in tickets], marker="o", markersize=3, label=label)
    ax.plot([level for level, _ in tickets], [c.weights_remaining * 100 for _, c in tickets], color="black", linestyle="--", label="all prunable")
    ax.set_yscale("log")
    lowest = min((y for line in ax.get_lines() for y in line.get_ydata() if y > 0), default=100)
    ax.set_ylim(10 ** math.floor(math.log10(lowest)), 110)  # down to a labelled decade: the lowest value is read off a tick
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax.set_xlabel("level")
    ax.set_ylabel("percent of the layer's weights remaining (ticket)")
    if about:
        ax.set_title(about.caption(), fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: the lines fill them
    fig.tight_layout()
    return fig


def layer_labels(names: list[str]) -> list[str]:
    """Parameter names as a figure's legend says them: without the prefix every name shares (`bert.encoder.`) and
    the `.weight` every prunable parameter ends in; the table beside it keeps the parameter names."""
    parts = [name.removesuffix(".weight").split(".") for name in names]
    shared = 0
    while len(names) > 1 and all(len(p) > shared + 2 and p[shared] == parts[0][shared] for p in parts):  # two parts left at least
        shared += 1
    return [".".join(p[shared:]) for p in parts]


def iou(a: dict, b: dict) -> float:
    """Intersection over union of two masks' kept weights, over every layer together."""
    both = sum(int((a[n] & b[n]).sum()) for n in a)
    either = sum(int((a[n] | b[n]).sum()) for n in a)
    return both / either if either else 1.0


def random_iou(a: dict, b: dict) -> float:
    """The IoU two masks would have if each layer kept as many weights as they do, but at random positions
    (random pruning's control): a layer of n weights keeping k_a and k_b shares k_a k_b / n in expectation. Under
    global pruning layers keep different fractions, and this is above d / (2 - d) of one overall density d."""
    both = either = 0.0
    for name in a:
        n, k_a, k_b = a[name].numel(), int(a[name].sum()), int(b[name].sum())
        both += k_a * k_b / n
        either += k_a + k_b - k_a * k_b / n
    return both / either if either else 1.0


def overlap(run_dirs: list[Path]) -> str:
    """How much of the ticket's kept weights different seeds, consecutive levels, and the ticket and the fine-tuning
    chain share (Frankle & Carbin 2019 find tickets of different inits are not one subnetwork); beside the seeds',
    what random masks with the same tickets' per-layer counts would share (`random_iou`)."""
    dirs = [RunDir(Path(d)) for d in run_dirs if not isinstance(d, str)]
    levels = sorted({int(p.parent.name.split("_")[1]) for d in dirs for p in d.root.glob("level_*/mask.pt")})
    if not levels:
        return "No stored masks (a report from W&B, or no pruned level yet)."
    load = lambda d, level, chain="ticket": RunDir.load(d.mask(level, chain)) if d.mask(level, chain).exists() else None  # noqa: E731
    mean = lambda values: f"{statistics.fmean(values):.3f} (n={len(values)})" if values else ""  # noqa: E731
    rows, nested = [], True
    for level in levels:
        masks = [m for d in dirs if (m := load(d, level)) is not None]
        density = sum(int(v.sum()) for v in masks[0].values()) / sum(v.numel() for v in masks[0].values())
        pairs = [(a, b) for i, a in enumerate(masks) for b in masks[i + 1 :]]
        chained = [(m, p) for d in dirs if (m := load(d, level)) is not None and level > 1 and (p := load(d, level - 1)) is not None]
        nested &= all(not (m[n] & ~p[n]).any() for m, p in chained for n in m)
        finetune = [iou(m, f) for d in dirs if (m := load(d, level)) is not None and (f := load(d, level, "finetune")) is not None]
        random = statistics.fmean(random_iou(a, b) for a, b in pairs or [(masks[0], masks[0])])
        rows.append([str(level), f"{density:.2%}", mean([iou(a, b) for a, b in pairs]), f"{random:.3f}", mean([iou(m, p) for m, p in chained]),
                     mean(finetune)])
    header = ["level", "ticket weights remaining", "seeds' tickets (pairs)", "random masks", "level − 1 and level", "ticket and finetune"]
    # A column says something where some level has a value, and the consecutive levels' where a level's mask is not
    # inside the previous one's: under IMP it is (it prunes what it kept), and their IoU is then the ratio of their
    # weights remaining, 1 − p by construction.
    keep = [i for i in range(len(header)) if any(row[i] for row in rows) and not (i == 4 and nested)]
    lines = ["| " + " | ".join(header[i] for i in keep) + " |", "|---" * len(keep) + "|", *("| " + " | ".join(row[i] for i in keep) + " |" for row in rows)]
    if nested and any(row[4] for row in rows):
        lines.append("\nEach ticket's mask lies inside its previous level's, so their overlap is the ratio of their weights remaining: not shown.")
    return "\n".join(lines)


def _ended_early(cells: dict[tuple[str, int], Cell]) -> str:
    """The runs a hook ended before their schedule's last step, and why (an early-bird ticket: the steps it saved)."""
    lines = [f"- seed {seed} {arm} at level {level}: {why}" for (arm, level), c in cells.items() for seed, why in c.ended_early]
    return "Ended early:\n\n" + "\n".join(lines) + "\n\n" if lines else ""


def _diverged(notes: list[dict]) -> str:
    """Training that diverged is no result: its cells are absent from every table and figure, and listed here."""
    if not notes:
        return ""
    lines = [f"- seed {n['seed']} {n['arm']} at level {n['level']}: step {n['step']}, {n['why']}" for n in notes]
    return "Diverged, so absent from the tables and figures (no result was recorded):\n\n" + "\n".join(lines) + "\n\n"


# Settings the Setup section says in its own words; the others are listed where they differ from their defaults.
DESCRIBED = ("name", "seed", "out_dir", "arms", "point", "model.name", "model.kwargs", "data.name", "data.root", "data.batch_size", "data.augment",
             "data.val_size", "train.optimizer", "train.lr", "train.momentum", "train.weight_decay", "train.duration", "train.lr_schedule",
             "train.milestones", "train.gamma", "train.warmup", "train.eval_every", "train.threads", "prune.method", "prune.strategy",
             "prune.fraction", "prune.levels", "prune.rewind", "prune.schedule")


def setup(run_dirs: list[Path]) -> str:
    """The experiment as a methods section states it, from the runs' own files: their `config.yaml` (what was trained,
    and every other setting not at its default), `dataset.json` (the data's sizes) and `invocations.jsonl` (the
    software, hardware and commands, `lth.provenance`)."""
    from lth import provenance, pruning

    dirs = [RunDir(Path(d)) for d in run_dirs]
    cfgs = [config.load(d.config) for d in dirs]
    cfg, t, p, d = cfgs[0], cfgs[0].train, cfgs[0].prune, cfgs[0].data
    try:
        val = f"{config.steps(cfg).val_size:,}"
    except config.ConfigError:  # its data are not where it was run; the sizes recorded still say the rest
        val = "the dataset's default number of"
    train, test = dirs[0].sizes()
    data = f"{train:,} training examples, {val} of them held out for validation, {test:,} test" if train and test else "sizes not recorded"
    optimizer = f"{t.optimizer}, learning rate {t.lr:g}" + (f", momentum {t.momentum:g}" if t.optimizer == "sgd" else "") + f", weight decay {t.weight_decay:g}"
    warmup = f" after {t.warmup} of linear warm-up" if t.warmup != "0" else ""
    schedule = ("cosine to 0" if t.lr_schedule == "cosine" else f"× {t.gamma:g} at {', '.join(t.milestones)}" if t.milestones else "constant") + warmup
    defaults = config.settings()
    other = {k: v for k, v in config.flatten(cfg.to_dict()).items() if k not in DESCRIBED and not k.startswith("wandb.") and v != defaults.get(k)}
    lines = [
        f"- Network: `{cfg.model.name}`" + (f" with {json.dumps(cfg.model.kwargs)}" if cfg.model.kwargs else ""),
        f"- Data: `{d.name}`, {data}; batch {d.batch_size}" + ("" if d.augment is None else f", augmentation {'on' if d.augment else 'off'}"),
        f"- Training: {t.duration} per level, {optimizer}; learning rate {schedule}; evaluated every {t.eval_every}, the test accuracy "
        "read at the step of lowest validation loss",
        f"- Pruning: `{p.method}`, {p.strategy}, {pruning.schedule(p).fraction(p.schedule_params, p.fraction):.0%} of the remaining "
        f"{pruning.method(p).unit(p.method_params, dict).removes} a level, "
        f"{p.levels} level{'s' * (p.levels != 1)} "
        f"(`{p.schedule}`), rewinding "
        f"to {'the original initialisation' if p.rewind == '0' else p.rewind}",
        *_reconstructed(p, [a for c in cfgs for a in c.arms]),
        f"- Arms: {', '.join(dict.fromkeys(a for c in cfgs for a in c.arms))}; seeds: {', '.join(str(c.seed) for c in cfgs)}",
        "- Other settings not at their defaults: " + (", ".join(f"`{k}`: `{json.dumps(v, default=str)}`" for k, v in other.items()) or "none"),
        *provenance.describe([line for run in dirs for line in provenance.read(run.invocations)]),
    ]
    return "\n".join(lines)


def _reconstructed(prune, arms: list[str]) -> list[str]:
    """A method's own recipe fine-tunes the weights it reconstructs (ThiNet, He et al.): the arms that train the pruned
    weights on start from those, which the report says (`lth.methods.base.Method.refit`)."""
    from lth import pruning
    from lth.arms import ARMS
    from lth.arms.base import PRUNED

    method, on = pruning.method(prune), [a for a in dict.fromkeys(arms) if ARMS[a].weights == PRUNED]
    if not (method.reconstructs and on):
        return []
    return [f"- {', '.join(f'`{a}`' for a in on)} start{'s' * (len(on) == 1)} each pruned level from the weights `{prune.method}` "
            f"reconstructs, not the trained ones: {method.reconstructs}"]


def write(cells: dict[tuple[str, int], Cell], sources: list, out: Path, diverged: list[dict] = ()) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    sources_list = list(sources)
    # Figures plot against weights remaining: a study of dense networks alone (level 0) has nothing to draw.
    pruned = any(level > 0 for _, level in cells)
    # A figure of a field no line holds (lines that predate it) would be empty axes.
    drawn = [(field, ylabel, name) for field, ylabel, name in FIGURES if pruned and any(getattr(c, field) for c in cells.values())]
    shown = {name for *_, name in drawn} | ({"density.png"} if pruned else set())
    image = lambda alt, name: f"![{alt}]({name})" if name in shown else ""  # noqa: E731
    # A run directory as `name/run id`, relative to its out_dir: a report names no machine's paths.
    sources = "\n".join(f"- `{d if isinstance(d, str) else '/'.join(Path(d).resolve().parts[-2:])}`" for d in sources)
    # Atomic: array tasks of one study may write the same report at the same moment.
    atomic_write(out / "report.md", (
        f"# Lottery-ticket report\n\n{summary(cells)}\n\n{_ended_early(cells)}{_diverged(diverged)}"
        + (f"## Setup\n\n{setup(sources_list)}\n\n" if all(isinstance(d, Path) for d in sources_list) else "")
        + f"Runs:\n{sources}\n\n"
        "## Test accuracy at the early-stopping step (mean ± std over seeds)\n\n"
        "The test accuracy of each run at its step of lowest validation loss (Frankle & Carbin 2019, §2).\n\n"
        f"{markdown(cells, ACCURACY, 4)}\n\n"
        f"## Test accuracy at the final weights\n\n{markdown(cells, 'test_acc', 4)}\n\n"
        f"## Early-stop step (lowest validation loss)\n\n{markdown(cells, 'early_stop_step', 0)}\n\n"
        f"{GAP}{markdown(cells, 'gap_at_early_stop', 4)}\n\nAt the final weights:\n\n{markdown(cells, 'gap', 4)}\n\n"
        f"{image('generalisation gap', 'gap.png')}\n\n"
        "## What the ticket's network computes\n\nMultiply-accumulates per example of its Linear and Conv layers and "
        "parameters as deployed (a removed channel also removes the next layer's inputs; `lth.flops`); under a "
        "channel method, the narrow network's forward pass against the full-width one's, measured at the training "
        "batch on the training device (mean over seeds). Weight masks run no faster on dense hardware: "
        "`benchmarks/inference.py` times their sparse copies.\n\n"
        f"{cost(cells)}\n\n"
        "## Where the weights go\n\nEach prunable layer's weights remaining at each arm's deepest level (mean over seeds); "
        "the figure follows the ticket level by level.\n\n"
        f"{layers(cells)}\n\n{image('per-layer density', 'density.png')}\n\n"
        "## Mask overlap\n\nIntersection over union of kept weights: between the tickets of different seeds (mean over "
        "pairs), against the expected IoU of random masks with those tickets' per-layer counts (random pruning's "
        "control), between a ticket's consecutive levels, and "
        "between the ticket's and the fine-tuning chain's masks at the same level.\n\n"
        f"{overlap(sources_list)}\n\n"
        f"{image('test accuracy at early stop', 'accuracy.png')}\n\n{image('early-stop step', 'early_stop.png')}\n"
    ).encode())
    paths = [out / "report.md"]
    about = About.of(sources_list[0]) if all(isinstance(d, Path) for d in sources_list) else None
    for field, ylabel, name in drawn:
        paths += save_figure(figure(cells, field, ylabel, about), out / name)
    if pruned:
        paths += save_figure(density_figure(cells, about), out / "density.png")
    return paths
