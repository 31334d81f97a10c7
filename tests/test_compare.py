"""`lth report` across a sweep's points (`lth.compare`): its numbers are the results lines', its figures put the points
in order, and runs that cannot share one sparsity axis are refused in one line."""

import json
import math
import statistics

import pytest
from scipy import stats
from test_report import _fake_run

from lth import cli, compare, report

# Two seeds of two rewind points; the ticket holds up at level 2 only when rewound late, as in Frankle et al. (2020).
ACCS = {
    "25it": [{("ticket", 0): 0.90, ("ticket", 1): 0.91, ("reinit", 1): 0.85, ("ticket", 2): 0.92, ("reinit", 2): 0.80},
             {("ticket", 0): 0.92, ("ticket", 1): 0.93, ("reinit", 1): 0.83, ("ticket", 2): 0.90, ("reinit", 2): 0.82}],
    "0": [{("ticket", 0): 0.91, ("ticket", 1): 0.88, ("reinit", 1): 0.84, ("ticket", 2): 0.81, ("reinit", 2): 0.79},
          {("ticket", 0): 0.90, ("ticket", 1): 0.86, ("reinit", 1): 0.85, ("ticket", 2): 0.83, ("reinit", 2): 0.81}],
}
STEPS = {"0": 0, "25it": 25}


def _points(tmp_path, extra=()):
    dirs = []
    for rewind, seeds in ACCS.items():  # the later rewind point first: the figure orders them by rewind step
        for seed, accs in enumerate(seeds):
            path = tmp_path / f"prune.rewind={rewind}" / f"seed{seed}"
            _fake_run(path, seed, accs, [f"--prune.rewind={rewind}", "--train.lr=0.01", *extra])
            lines = [json.loads(line) | {"rewind_step": STEPS[rewind]} for line in (path / "results.jsonl").read_text().splitlines()]
            (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
            dirs.append(path)
    return dirs


def _interval(values):
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{statistics.fmean(values):.4f} [{statistics.fmean(values) - half:.4f}, {statistics.fmean(values) + half:.4f}] (n={len(values)})"


def test_the_comparison_s_numbers_are_the_results_lines(tmp_path, capsys):
    dirs = _points(tmp_path / "runs")
    assert cli.main(["report", *map(str, dirs), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| point | `prune.rewind` | runs (seeds) |" in text and "| 0 | `0` | 2 |" in text and "| 1 | `25it` | 2 |" in text  # by rewind step
    shared = text.split("## What every point shares")[1].split("##")[0]
    assert "- `train.lr`: `0.01`" in shared and "`prune.rewind`" not in shared and "`seed`" not in shared  # said once, not per point
    at_level = text.split("## At level 2")[1].split("##")[0]
    for i, rewind in enumerate(("0", "25it")):
        for arm in ("ticket", "reinit"):
            row = next(line for line in at_level.splitlines() if line.startswith(f"| {i} |"))
            assert _interval([seed[arm, 2] for seed in ACCS[rewind]]) in row
    matching = text.split("## Matching sparsity")[1].split("##")[0]
    # Point 1 (rewind 25it): dense mean 0.91, std 0.0141; the ticket matches at level 2 (0.8**2), reinit nowhere.
    assert "| 0 | none | none |" in matching and "| 1 | 64.00% | none |" in matching
    for name in ("points.png", "panels.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000


def test_the_points_figure_orders_rewind_points_by_step_and_draws_each_arm(tmp_path):
    found, _ = compare.points(_points(tmp_path / "runs"))
    about = report.About("mnist1d_mlp", "mnist1d", 1000)
    fig = compare._points_figure(found, ["ticket", "reinit"], 2, about)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["prune.rewind=0", "prune.rewind=25it"]
    ticket = ax.containers[0].lines[0].get_ydata()  # errorbar: the line of its means
    assert list(ticket) == pytest.approx([statistics.fmean([0.81, 0.83]), statistics.fmean([0.92, 0.90])])
    panels = compare._panels(found, about)
    assert len([a for a in panels.axes if a.get_visible()]) == 2 and panels.axes[0].get_title() == "prune.rewind=0"
    assert ax.get_title().startswith("mnist1d_mlp on mnist1d, 1,000 test examples") and panels._suptitle.get_text() == about.caption()


def test_runs_of_different_models_are_refused_in_one_line(tmp_path, capsys):
    a = _points(tmp_path / "a")[0]
    b = tmp_path / "b" / "seed0"
    _fake_run(b, 0, ACCS["0"][0], ["--model=mnist1d_cnn"])
    assert cli.main(["report", str(a), str(b), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "these runs differ in model.name" in err and "report them separately" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_level_not_every_point_reached_is_refused(tmp_path, capsys):
    assert cli.main(["report", *map(str, _points(tmp_path / "runs")), "--level", "5", "--out", str(tmp_path / "out")]) == 2
    assert "--level 5: not a level every point's ticket reached (0, 1, 2)" in capsys.readouterr().err


def test_the_report_folders_among_the_points_are_not_taken_for_runs(tmp_path, capsys):
    dirs = _points(tmp_path / "runs")
    for point in {d.parent for d in dirs}:  # as `lth run --point` leaves them: runs/NAME/POINT/report
        assert cli.main(["report", *map(str, point.glob("seed*")), "--out", str(point / "report")]) == 0
    assert cli.main(["report", *map(str, (tmp_path / "runs").glob("*/*")), "--out", str(tmp_path / "out")]) == 0
    assert "| 1 | `25it` | 2 |" in (tmp_path / "out" / "report.md").read_text()


def test_points_that_fine_tune_and_train_from_scratch_get_liu_et_al_s_table_named_by_their_method(tmp_path):
    """Per method: fine-tuned, Scratch-E and Scratch-B side by side and each scratch arm minus fine-tuning with its Welch
    interval; the default method is named (`magnitude`), not left null because defaults stay out of the identity."""
    accs = {"magnitude": [(0.90, 0.80, 0.78, 0.83), (0.92, 0.82, 0.79, 0.84)], "channel": [(0.90, 0.70, 0.74, 0.80), (0.92, 0.72, 0.73, 0.81)]}
    dirs = []
    for method, seeds in accs.items():
        for seed, (dense, tuned, scratch_e, scratch_b) in enumerate(seeds):
            path = tmp_path / method / f"seed{seed}"
            cells = {("ticket", 0): dense, ("ticket", 1): tuned, ("finetune", 1): tuned, ("scratch_e", 1): scratch_e, ("scratch_b", 1): scratch_b}
            _fake_run(path, seed, cells, [f"--prune.method={method}", "--arms=[ticket,finetune,scratch_e,scratch_b]"])
            dirs.append(path)
    compare.write(dirs, tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    table = text[text.index("## Fine-tuned against trained from scratch"):text.index("## Matching sparsity")]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines() if line.startswith("| prune.method=")}
    assert sorted(rows) == ["prune.method=channel", "prune.method=magnitude"]
    for method, seeds in accs.items():
        row = rows[f"prune.method={method}"]
        assert row[2].startswith(f"{statistics.fmean(s[1] for s in seeds):.4f} [")
        expected = stats.ttest_ind([s[3] for s in seeds], [s[1] for s in seeds], equal_var=False).confidence_interval(0.95)
        difference = statistics.fmean(s[3] for s in seeds) - statistics.fmean(s[1] for s in seeds)
        assert row[6].startswith(f"{difference:+.4f} [{expected.low:+.4f}, {expected.high:+.4f}]"), row[6]
