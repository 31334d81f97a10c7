"""`lth report` across a study's points: runs of several experiments (a sweep's points, or any runs that differ in
more than their seed) compared in one report, for the questions that are comparisons across settings: which rewind
point finds tickets (Frankle et al. 2020, Figure 4 plots accuracy against the rewind iteration), which pruning rate,
global against layerwise, which method at the same sparsity.

A point is the runs that differ only in their seed (one study, `lth.config.Experiment.study_id`); its name is the
settings in which it differs from the other points, and the settings all points share are said once. Points are
compared on one sparsity axis, so they must prune the same network on the same data: runs of different models or
datasets are refused in one line (report them separately), rather than drawn on axes where their "weights
remaining" mean different things.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from lth import config
from lth.files import atomic_write, save_figure
from lth.report import ACCURACY, About, Cell, Difference, Stat, aggregate, arm_colour, arms_in, draw_arms, matching_sparsity, reportable, ticks_no_finer_than
from lth.run_dir import Row, RunDir, distinct

# Settings that make runs incomparable on one sparsity axis (module docstring).
INCOMPARABLE = ("model.name", "model.kwargs", "data.name")


@dataclass(frozen=True)
class Point:
    name: str  # its differing settings, `key=value` joined by commas
    settings: dict  # those settings
    run_dirs: tuple[Path, ...]
    rows: tuple[Row, ...]  # their results lines, each seed's once
    cells: dict[tuple[str, int], Cell]


def points(run_dirs: list[Path]) -> tuple[list[Point], dict]:
    """The points among `run_dirs` (one per study), in order (`_order`), and the settings they all share."""
    studies: dict[str, tuple[dict, list[Path], list]] = {}
    stated: dict[str, dict] = {}  # each study's every setting: a setting at its default is left out of the identity
    for path in dict.fromkeys(Path(p).resolve() for p in run_dirs):
        run_dir = RunDir(path)
        cfg, lines = reportable(run_dir)
        settings = config.flatten(cfg.identity())
        settings.pop("seed")
        key = json.dumps(settings, sort_keys=True, default=str)
        study = studies.setdefault(key, (settings, [], []))
        stated.setdefault(key, config.flatten(cfg.to_dict()))
        study[1].append(path)
        study[2].extend((row, str(run_dir.results)) for row in lines)
    every = [settings for settings, _, _ in studies.values()]
    keys = list(dict.fromkeys(key for settings in every for key in settings))
    differ = [key for key in keys if len({json.dumps(s.get(key), sort_keys=True, default=str) for s in every}) > 1]
    if incomparable := [key for key in differ if key in INCOMPARABLE or key.startswith(("model.kwargs.", "code."))]:
        values = sorted({json.dumps(s.get(incomparable[0]), default=str) for s in every})
        raise ValueError(f"these runs differ in {incomparable[0]} ({', '.join(values)}): their sparsities are of different networks or data, "
                         "not one axis to compare on; report them separately")
    out = []
    for key, (settings, dirs, lines) in studies.items():
        rows = distinct(lines)  # a run copied to a second folder is still one seed
        mine = {k: settings[k] if k in settings else stated[key].get(k) for k in differ}  # `magnitude`, not null, where it is the default
        out.append(Point(",".join(f"{k}={_text(v)}" for k, v in mine.items()), mine, tuple(dirs), tuple(rows), aggregate(rows)))
    shared = {key: value for key, value in every[0].items() if key not in differ}
    return [out[i] for i in _order(out, differ)], shared


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def interval(stat: Stat) -> str:
    """Mean and 95% interval of the mean over seeds (Student's t); the mean alone for one seed."""
    if stat.n < 2:
        return f"{stat.mean:.4f} (n=1)"
    return f"{stat.mean:.4f} [{stat.mean - stat.half_width:.4f}, {stat.mean + stat.half_width:.4f}] (n={stat.n})"


def tables(point: Point) -> str:
    cells, arms = point.cells, arms_in(point.cells)
    lines = ["| level | weights remaining | " + " | ".join(arms) + " |", "|---" * (len(arms) + 2) + "|"]
    for level in sorted({level for _, level in cells}):
        remaining = cells.get(("ticket", level)) or next(c for (_, at), c in cells.items() if at == level)
        entries = [interval(cells[arm, level].test_acc_at_early_stop) if (arm, level) in cells else "" for arm in arms]
        lines.append(f"| {level} | {remaining.weights_remaining:.2%} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def level_to_compare(found: list[Point], level: int | None) -> int:
    """The level the across-points figure reads: `level`, or the deepest level every point's ticket reached."""
    common = set.intersection(*({lv for arm, lv in p.cells if arm == "ticket"} for p in found))
    if level is not None:
        if level not in common:
            raise ValueError(f"--level {level}: not a level every point's ticket reached ({', '.join(map(str, sorted(common))) or 'none'})")
        return level
    return max(common, default=0)


def write(run_dirs: list[Path], out: Path, level: int | None = None) -> list[Path]:
    found, shared = points(run_dirs)
    level = level_to_compare(found, level)
    arms = [a for a in dict.fromkeys(a for p in found for a in arms_in(p.cells))]
    out.mkdir(parents=True, exist_ok=True)
    shared_lines = "\n".join(f"- `{key}`: `{_text(value)}`" for key, value in shared.items())
    differ = list(found[0].settings)
    header = "| point | " + " | ".join(f"`{k}`" for k in differ) + " | runs (seeds) |\n" + "|---" * (len(differ) + 2) + "|\n"
    header += "\n".join(f"| {i} | " + " | ".join(f"`{_text(v)}`" for v in p.settings.values()) + f" | {len(p.run_dirs)} |" for i, p in enumerate(found))
    matching = "| point | " + " | ".join(arms) + " |\n" + "|---" * (len(arms) + 1) + "|\n" + "\n".join(
        f"| {i} | " + " | ".join(_matching(p, arm) for arm in arms) + " |" for i, p in enumerate(found))
    at_level = "| point | weights remaining | " + " | ".join(arms) + " |\n" + "|---" * (len(arms) + 2) + "|\n" + "\n".join(
        f"| {i} | {_remaining(p, level)} | " + " | ".join(interval(p.cells[a, level].test_acc_at_early_stop) if (a, level) in p.cells else "" for a in arms)
        + " |" for i, p in enumerate(found))
    per_point = "\n\n".join(f"### Point {i}: {p.name}\n\n{tables(p)}" for i, p in enumerate(found))
    sources = "\n".join(f"- `{'/'.join(d.parts[-3:])}`" for p in found for d in p.run_dirs)
    atomic_write(out / "report.md", (
        f"# Lottery-ticket comparison across {len(found)} points\n\n"
        "Test accuracy at the early-stopping step (Frankle & Carbin 2019, §2), mean and 95% interval of the mean over seeds "
        "(Student's t).\n\n"
        f"## What differs\n\n{header}\n\n## What every point shares\n\n{shared_lines}\n\n"
        f"## At level {level}\n\nEach arm at the deepest level every point's ticket reached (`lth report --level L` chooses another).\n\n"
        f"{at_level}\n\n![accuracy at level {level} against the point](points.png)\n\n"
        f"{_scratch(found, level)}"
        "## Matching sparsity\n\nThe fewest weights remaining at which the arm's mean accuracy is at least its point's dense mean minus "
        f"its std over seeds (Renda et al. 2020).\n\n{matching}\n\n"
        f"## Each point\n\n![accuracy against weights remaining, one panel per point](panels.png)\n\n{per_point}\n\n"
        f"Runs:\n{sources}\n"
    ).encode())
    paths = [out / "report.md"]
    about = About.of(found[0].run_dirs[0])  # one network on one dataset (`INCOMPARABLE`)
    for name, fig in (("points.png", _points_figure(found, arms, level, about)), ("panels.png", _panels(found, about))):
        paths += save_figure(fig, out / name)
    return paths


SCRATCH = ("scratch_e", "scratch_b")


def _scratch(found: list[Point], level: int) -> str:
    """Liu et al. (2019)'s table, where the points fine-tune and train from scratch: per point (a pruning method, say),
    its pruned model, the fine-tuned accuracy beside Scratch-E's and Scratch-B's, and each scratch arm minus
    fine-tuning with its 95% Welch interval. Their conclusion holds at a point where no scratch interval lies below 0."""
    shown = [p for p in found if ("finetune", level) in p.cells and any((a, level) in p.cells for a in SCRATCH)]
    if not shown:
        return ""
    rows = []
    for p in shown:
        cells, tuned = p.cells, p.cells["finetune", level]
        dense = cells.get(("ticket", 0))
        model = f"{tuned.weights_remaining:.1%} of weights" + (f", {tuned.macs / dense.macs:.1%} of MACs" if dense and dense.macs and tuned.macs else "")
        accuracy = [interval(cells[a, level].test_acc_at_early_stop) if (a, level) in cells else "" for a in ("finetune", *SCRATCH)]
        minus = [str(Difference.of(cells[a, level].test_acc_at_early_stop, tuned.test_acc_at_early_stop)) if (a, level) in cells else "" for a in SCRATCH]
        rows.append(f"| {p.name} | {model} | " + " | ".join(accuracy + minus) + " |")
    return ("## Fine-tuned against trained from scratch (Liu et al. 2019)\n\n"
            f"At level {level}: each point's pruned network fine-tuned (`finetune`) beside its architecture trained from a fresh "
            "init for the dense run's epochs (Scratch-E) and for its compute (Scratch-B), as Liu et al.'s Tables 1-4 set them, then each "
            "scratch arm minus fine-tuning, mean [95% CI, Welch] (n scratch/fine-tuned); * the interval excludes 0. Their conclusion, that "
            "training the pruned architecture from scratch is as good, holds at a point where no interval lies below 0.\n\n"
            "| point | pruned model | fine-tuned | Scratch-E | Scratch-B | Scratch-E − fine-tuned | Scratch-B − fine-tuned |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n")


def _matching(point: Point, arm: str) -> str:
    found = matching_sparsity(point.cells, arm)
    return "" if not any(a == arm for a, _ in point.cells) else "none" if found is None else f"{found:.2%}"


def _remaining(point: Point, level: int) -> str:
    cell = point.cells.get(("ticket", level))
    return f"{cell.weights_remaining:.2%}" if cell else ""


def _order(found: list[Point], differ: list[str]) -> list[int]:
    """The points' order in tables and along the figure's x axis: by the rewind step where the rewind point differs
    (as Frankle et al. 2020 plot it), by value where the one differing setting is a number, else as first given."""
    if differ == ["prune.rewind"]:
        return sorted(range(len(found)), key=lambda i: statistics.fmean(row.rewind_step for row in found[i].rows))
    if len(differ) == 1 and all(isinstance(p.settings[differ[0]], (int, float)) for p in found):
        return sorted(range(len(found)), key=lambda i: found[i].settings[differ[0]])
    return list(range(len(found)))


def _points_figure(found: list[Point], arms: list[str], level: int, about: About):
    """Each arm's accuracy at `level` against the point, with its 95% interval; the dense networks' as a band."""
    from matplotlib.figure import Figure


    order = range(len(found))
    longest = max(len(line) for p in found for line in p.name.split(","))  # a tick label's widest line, in characters
    fig = Figure(figsize=(max(7.6, max(1.1, 0.08 * longest) * len(found) + 3.2), 4.2))
    ax = fig.subplots()
    x = list(range(len(order)))
    for arm in arms:
        xs, means, halves = [], [], []
        for at, i in enumerate(order):
            if (arm, level) in found[i].cells:
                stat = found[i].cells[arm, level].test_acc_at_early_stop
                xs.append(at)
                means.append(stat.mean)
                halves.append(stat.half_width)
        ax.errorbar(xs, means, yerr=halves, marker="o", markersize=4, capsize=3, label=arm, color=arm_colour(arm))
    dense = [(at, found[i].cells["ticket", 0].test_acc_at_early_stop.mean) for at, i in enumerate(order) if ("ticket", 0) in found[i].cells]
    if dense and level > 0:
        ax.plot([at for at, _ in dense], [mean for _, mean in dense], color="black", linestyle="--", linewidth=1, label="dense (level 0)")
    ax.set_xticks(x)
    ax.set_xticklabels([found[i].name.replace(",", "\n") for i in order], fontsize=8)
    remaining = {_remaining(p, level) for p in found}  # said in the title only where every point has the same
    shared = f" ({remaining.pop()} of weights remaining)" if len(remaining) == 1 and "" not in remaining else ""
    ax.set_title(f"{about.caption()}; level {level}{shared}", fontsize=10)
    ax.set_ylabel("test accuracy at early stop")
    if about.test_size:
        ticks_no_finer_than(ax, 1 / about.test_size)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: error bars fill them
    fig.tight_layout()
    return fig


def _panels(found: list[Point], about: About):
    """One panel per point on shared axes: each arm's accuracy against weights remaining (`lth.report.figure`)."""
    from matplotlib.figure import Figure

    columns = min(3, len(found))
    rows = -(-len(found) // columns)
    fig = Figure(figsize=(4.2 * columns + 1.8, 3.4 * rows))
    # Each panel its own x axis: points may prune to different sparsities (one method removes blocks, another channels).
    axes = fig.subplots(rows, columns, sharey=True, squeeze=False).flatten()
    legend = None
    for ax, point in zip(axes, found):
        if any(level > 0 for _, level in point.cells):
            draw_arms(ax, point.cells, ACCURACY, "test accuracy at early stop", about)
            if ax.get_legend():  # one legend, beside the panels, over none of their points: the arms' colours are the same in each
                legend = legend or (ax.get_legend_handles_labels(), ax.get_legend().get_title().get_text())
                ax.get_legend().remove()
        ax.set_title(point.name, fontsize=9)
    for ax in axes[len(found):]:
        ax.set_visible(False)
    fig.suptitle(about.caption(), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / (4.2 * columns + 1.8), 1))
    if legend:
        (handles, labels), title = legend
        fig.legend(handles, labels, title=title, loc="center right", fontsize=8, title_fontsize=8)
    return fig
