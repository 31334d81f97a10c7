import json
import math
import statistics
from pathlib import Path

import matplotlib.image
import pytest
import torch
import yaml
from conftest import result_rows
from scipy import stats

from lth import cli, config, report

# The fields of a results line that the report does not read.
OTHER_FIELDS = {"init_seed": 0, "run_id": "r", "weights_remaining_per_layer": {}, "best_val_acc": 0.5, "early_stop_val_acc": 0.5, "steps_trained": 1,
                "rewind_step": 0, "rewind_optimizer": "fresh", "wall_seconds": 1.0, "mask_sha256": "0"}


def _fake_run(path, seed, accs, overrides=()):
    """A run directory as `lth run` writes it: its config and results over two arms and two levels."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config.load(None, [f"--seed={seed}", *overrides]).to_dict()))
    rows = []
    for (arm, level), acc in accs.items():
        row = {"level": level, "arm": arm, "seed": seed, "weights_remaining": 0.8**level, "test_acc": acc - 0.01, "test_acc_at_early_stop": acc}
        rows.append(row | {"early_stop_step": 100 * (level + seed)} | OTHER_FIELDS)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_numbers_equal_the_results_and_figures_have_one_series_per_arm(tmp_path, capsys):
    runs = [tmp_path / f"seed{s}" for s in range(3)]
    accs = [
        {("ticket", 0): 0.90, ("ticket", 1): 0.91, ("reinit", 1): 0.85, ("ticket", 2): 0.92, ("reinit", 2): 0.80},
        {("ticket", 0): 0.92, ("ticket", 1): 0.93, ("reinit", 1): 0.83, ("ticket", 2): 0.90, ("reinit", 2): 0.82},
        {("ticket", 0): 0.91, ("ticket", 1): 0.92, ("reinit", 1): 0.84, ("ticket", 2): 0.91, ("reinit", 2): 0.78},
    ]
    for seed, (run, acc) in enumerate(zip(runs, accs)):
        _fake_run(run, seed, acc)
    assert cli.main(["report", *map(str, runs), "--out", str(tmp_path / "out")]) == 0
    assert "report.md" in capsys.readouterr().out

    cells = report.aggregate(report.read_rows(runs))
    for key in accs[0]:
        values = [a[key] for a in accs]
        assert cells[key].test_acc_at_early_stop.mean == pytest.approx(statistics.fmean(values))
        assert cells[key].test_acc_at_early_stop.std == pytest.approx(statistics.stdev(values))
        assert cells[key].test_acc.mean == pytest.approx(statistics.fmean(values) - 0.01)
        assert cells[key].test_acc_at_early_stop.n == 3
    text = (tmp_path / "out" / "report.md").read_text()
    reinit_2 = cells["reinit", 2].test_acc_at_early_stop
    ticket_2 = cells["ticket", 2].test_acc_at_early_stop
    assert f"| 2 | 64.00% | {ticket_2.mean:.4f} ± {ticket_2.std:.4f} (n=3) | {reinit_2.mean:.4f} ± {reinit_2.std:.4f} (n=3) |" in text
    assert f"{cells['reinit', 1].early_stop_step.mean:.0f} ± {cells['reinit', 1].early_stop_step.std:.0f} (n=3)" in text

    for name in ["accuracy", "early_stop", "density"]:  # each figure as PNG, and as PDF for a paper
        image = matplotlib.image.imread(tmp_path / "out" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert (tmp_path / "out" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    # These lines predate the generalisation gap: its figure would be empty axes, so neither it nor its link is there.
    assert not (tmp_path / "out" / "gap.png").exists() and "gap.png" not in text
    fig = report.figure(cells, "test_acc_at_early_stop", "test accuracy")
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["ticket", "reinit", "dense"] and len(ax.collections) == 2  # one band per arm
    assert ax.get_legend().get_title().get_text() == "mean over 3 seeds, ±1 std"  # what the bands are, said
    dense = cells["ticket", 0].test_acc_at_early_stop
    (band,) = ax.patches  # the dense network's ±1 std: its lower edge is the matching threshold
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((dense.mean - dense.std, dense.mean + dense.std))
    assert ax.get_xscale() == "log"
    ticket_line = ax.get_lines()[0]
    assert list(ticket_line.get_xdata()) == pytest.approx([80.0, 64.0])
    assert ax.get_lines()[2].get_ydata()[0] == pytest.approx(0.91)


def test_a_figure_names_its_network_and_data_and_steps_its_accuracy_no_finer_than_one_test_example(tmp_path):
    """One seed's nearly flat lines once zoomed the axis to steps of 0.0025 on a test split of 300: finer than any
    difference that test can show."""
    _fake_run(tmp_path / "run", 0, {("ticket", 0): 0.600, ("ticket", 1): 0.601, ("reinit", 1): 0.599, ("ticket", 2): 0.6, ("reinit", 2): 0.6})
    (tmp_path / "run" / "dataset.json").write_text(json.dumps({"train_size": 3600, "test_size": 300, "sha256": "0"}))
    about = report.About.of(tmp_path / "run")
    assert about == report.About("mnist1d_mlp", "mnist1d", 300)
    cells = report.aggregate(report.read_rows([tmp_path / "run"]))
    for field in ("test_acc_at_early_stop", "test_acc"):
        ax = report.figure(cells, field, "test accuracy", about).axes[0]
        assert ax.get_title() == "mnist1d_mlp on mnist1d, 300 test examples"
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert len(ticks) >= 2 and min(b - a for a, b in zip(ticks, ticks[1:])) >= 1 / 300 - 1e-12
        assert ax.get_legend().get_title().get_text() == "one seed"  # no band to name
    steps = report.figure(cells, "early_stop_step", "early-stop step", about).axes[0].get_yticks()
    assert all(float(t).is_integer() for t in steps)
    assert report.density_figure(cells, about).axes[0].get_title() == about.caption()
    # Runs that predate dataset.json still draw, without a size to state.
    (tmp_path / "run" / "dataset.json").unlink()
    assert report.About.of(tmp_path / "run").caption() == "mnist1d_mlp on mnist1d"


def test_every_arm_draws_in_a_colour_of_its_own():
    """The eleventh arm (`set`) once drew in the ticket's blue: matplotlib cycles ten colours."""
    from lth.arms import ARMS

    assert len({report.arm_colour(arm) for arm in ARMS}) == len(ARMS)


def test_report_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "results.jsonl does not exist" in err and err.count("\n") == 1
    for args in (["report"], ["report", "--wandb", "e/p"], ["report", str(tmp_path), "--wandb", "e/p", "--group", "g"]):
        assert cli.main(args) == 2
        assert "give run directories, or --wandb ENTITY/PROJECT with --group G" in capsys.readouterr().err


def test_runs_that_differ_in_more_than_their_seed_are_compared_not_pooled(tmp_path, capsys):
    _fake_run(tmp_path / "a", 0, {("ticket", 0): 0.9})
    _fake_run(tmp_path / "b", 1, {("ticket", 0): 0.8}, ["--train.lr=0.01"])
    assert cli.main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert text.startswith("# Lottery-ticket comparison across 2 points") and "| point | `train.lr` | runs (seeds) |" in text
    with pytest.raises(ValueError, match="differ in more than their seed"):  # pooled into one study's cells: never
        report.read_rows([tmp_path / "a", tmp_path / "b"])


def test_run_over_two_seeds_ends_with_the_report_of_both(tiny, tmp_path, capsys):
    args = ["run", "experiments/quickstart.yaml", *tiny, "--seed=[0,1]", "--arms=[ticket,reinit]", "--prune.levels=1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(": ", 1) for line in out.splitlines() if line.startswith(("report: ", "figure: ", "results: ")))
    run_dirs = sorted((tmp_path / "runs" / "tiny").glob("*-seed*"))
    assert [d.name.split("-")[2] for d in run_dirs] == ["seed0", "seed1"]
    assert lines["report"] == str(tmp_path / "runs" / "tiny" / "report" / "report.md")
    assert matplotlib.image.imread(lines["figure"]).ndim == 3
    cells = report.aggregate(report.read_rows(run_dirs))
    assert {key: cell.test_acc.n for key, cell in cells.items()} == {("ticket", 0): 2, ("ticket", 1): 2, ("reinit", 1): 2}
    reinit = cells["reinit", 1].test_acc_at_early_stop
    assert f"{reinit.mean:.4f} ± {reinit.std:.4f} (n=2)" in out and f"{reinit.mean:.4f} ± {reinit.std:.4f} (n=2)" in Path(lines["report"]).read_text()


def test_report_of_every_folder_of_a_study_skips_the_report_lth_run_wrote_there(tiny, tmp_path, capsys):
    """`lth report runs/NAME/*` once failed on the report folder `lth run` had written among the run folders."""
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--seed=[0,1]", "--arms=[ticket]", "--prune.levels=0"]) == 0
    everything = sorted((tmp_path / "runs" / "tiny").iterdir())
    assert (tmp_path / "runs" / "tiny" / "report") in everything
    capsys.readouterr()
    assert cli.main(["report", *map(str, everything), "--out", str(tmp_path / "again")]) == 0
    assert "(n=2)" in (tmp_path / "again" / "report.md").read_text()


def test_a_study_of_dense_networks_alone_reports_without_empty_figures(tiny, tmp_path, capsys):
    """Its figures plot against weights remaining, of which it has one value: they came out as empty axes."""
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--seed=[0,1]", "--prune.levels=0"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "runs" / "tiny" / "report"
    assert "figure:" not in out and sorted(p.name for p in folder.iterdir()) == ["report.md"]
    text = (folder / "report.md").read_text()
    assert "![" not in text and "| 0 | 100.00% |" in text


def test_summary_gives_matching_sparsity_and_welch_intervals_on_a_hand_made_file(tmp_path, capsys):
    """Dense 0.90/0.92/0.91: mean 0.91, std 0.01, so an arm matches at a mean of at least 0.90. The ticket's
    means are 0.91, 0.905 and 0.895 at 80%, 64% and 51.2%: it matches down to 64%. Reinit's 0.89, 0.85, 0.80
    never match. Random pruning has one seed at level 1 only: no interval."""
    accs = [
        {("ticket", 0): 0.90, ("ticket", 1): 0.90, ("ticket", 2): 0.900, ("ticket", 3): 0.890, ("reinit", 1): 0.88, ("reinit", 2): 0.85, ("reinit", 3): 0.79},
        {("ticket", 0): 0.92, ("ticket", 1): 0.92, ("ticket", 2): 0.910, ("ticket", 3): 0.900, ("reinit", 1): 0.90, ("reinit", 2): 0.84, ("reinit", 3): 0.81},
        {("ticket", 0): 0.91, ("ticket", 1): 0.91, ("ticket", 2): 0.905, ("ticket", 3): 0.895, ("reinit", 1): 0.89, ("reinit", 2): 0.86, ("reinit", 3): 0.80},
    ]
    accs[0][("random_prune", 1)] = 0.5
    runs = [tmp_path / f"seed{s}" for s in range(3)]
    for seed, (run, acc) in enumerate(zip(runs, accs)):
        _fake_run(run, seed, acc)
    cells = report.aggregate(report.read_rows(runs))
    assert report.matching_sparsity(cells, "ticket") == pytest.approx(0.64)
    assert report.matching_sparsity(cells, "reinit") is None

    # Welch's interval, by its formula: the Welch-Satterthwaite degrees of freedom and the t quantile.
    t, r = [a["ticket", 3] for a in accs], [a["reinit", 3] for a in accs]
    va, vb = statistics.variance(t) / 3, statistics.variance(r) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    diff = report.Difference.of(cells["ticket", 3].test_acc_at_early_stop, cells["reinit", 3].test_acc_at_early_stop)
    assert diff.mean == pytest.approx(0.095) and diff.n == (3, 3)
    assert (diff.low, diff.high) == pytest.approx((0.095 - half, 0.095 + half))
    lone = report.Difference.of(cells["ticket", 1].test_acc_at_early_stop, cells["random_prune", 1].test_acc_at_early_stop)
    assert lone.low is None and "too few seeds" in str(lone) and "n=3/1" in str(lone)

    assert cli.main(["report", *map(str, runs), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    head = text[: text.index("Runs:")]  # the summary comes first
    assert "- ticket: 64.00% of weights remaining" in head and "- reinit: no pruned level matches" in head
    assert f"| 3 | 51.20% | {diff} |" in head and str(diff).endswith("* (n=3/3)")


def test_results_without_early_stop_accuracy_are_refused_in_one_line(tmp_path, capsys):
    _fake_run(tmp_path / "old", 0, {("ticket", 0): 0.9})
    results = tmp_path / "old" / "results.jsonl"
    results.write_text(results.read_text().replace('"test_acc_at_early_stop": 0.9, ', ""))
    assert cli.main(["report", str(tmp_path / "old"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "results.jsonl:1 has no test_acc_at_early_stop: it was written by an older lth" in err and err.count("\n") == 1


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "3"])
def test_a_results_line_that_is_not_an_object_is_named_in_one_line(tmp_path, capsys, line):
    _fake_run(tmp_path / "odd", 0, {("ticket", 0): 0.9})
    results = tmp_path / "odd" / "results.jsonl"
    results.write_text(results.read_text() + line + "\n")
    assert cli.main(["report", str(tmp_path / "odd"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "results.jsonl:2 is not a results line (a JSON object" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_overlap_of_a_mask_with_itself_is_one_and_of_hand_made_masks_their_iou():
    import torch

    a = {"w": torch.tensor([True, True, False, False]), "v": torch.tensor([[True, False]])}
    b = {"w": torch.tensor([True, False, True, False]), "v": torch.tensor([[True, True]])}
    assert report.iou(a, a) == 1.0
    assert report.iou(a, b) == pytest.approx(2 / 5)  # kept by both: w0, v0; by either: w0, w1, w2, v0, v1


def test_the_random_baseline_is_the_mean_iou_of_random_masks_with_the_same_per_layer_counts():
    """Random pruning's control keeps each layer's count; with layers at different densities (global pruning) two
    such masks share more than one overall density would predict."""
    import torch

    generator = torch.Generator().manual_seed(0)

    def random_like(mask):
        out = {}
        for name, m in mask.items():
            keep = torch.zeros(m.numel(), dtype=torch.bool)
            keep[torch.randperm(m.numel(), generator=generator)[: int(m.sum())]] = True
            out[name] = keep.view_as(m)
        return out

    a = {"dense": torch.arange(2000) < 1800, "sparse": torch.arange(6000).view(60, 100) < 300}  # 90% and 5% kept
    b = {"dense": torch.arange(2000) < 1000, "sparse": torch.arange(6000).view(60, 100) < 600}  # 50% and 10%
    sampled = sum(report.iou(random_like(a), random_like(b)) for _ in range(200)) / 200
    assert report.random_iou(a, b) == pytest.approx(sampled, abs=0.005)
    density = (1800 + 300) / 8000
    assert report.random_iou(a, a) > density / (2 - density) + 0.1


def test_per_layer_densities_weigh_up_to_the_total_and_the_report_shows_layers_and_overlap(tiny, tmp_path, capsys):
    import torch

    args = tiny + ["--seed=[0,1]", "--arms=[ticket,finetune]"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dirs = [c.run_dir() for c in config.load_seeds("experiments/quickstart.yaml", args)]
    state = torch.load(run_dirs[0] / "level_00" / "ticket" / "final.ckpt", weights_only=False)["state_dict"]
    sizes = {k[len("model."):-len("_mask")]: v.numel() for k, v in state.items() if k.endswith("_mask")}
    for row in report.read_rows(run_dirs):
        weighted = sum(row.weights_remaining_per_layer[n] * sizes[n] for n in sizes) / sum(sizes.values())
        assert weighted == pytest.approx(row.weights_remaining, abs=1e-12)
    text = (tmp_path / "runs" / "tiny" / "report" / "report.md").read_text()
    assert "## Where the weights go" in text and "| `layers.0.weight` |" in text
    assert (tmp_path / "runs" / "tiny" / "report" / "density.png").stat().st_size > 0
    table = text.split("## Mask overlap")[1]
    first = next(line for line in table.splitlines() if line.startswith("| 1 |")).split("|")
    seeds, random, finetune = (cell.strip() for cell in first[3:6])
    assert seeds.endswith("(n=1)") and 0 < float(seeds.split()[0]) < 1  # two seeds: one pair, not the same subnetwork
    assert float(random) >= 0.5 / 1.5 - 0.01  # half the weights: d / (2 - d) at one density, more where layers differ
    # and exactly what the two seeds' per-layer counts give, k_a k_b / n shared of k_a + k_b - k_a k_b / n per layer
    kept = [{n: row.weights_remaining_per_layer[n] * sizes[n] for n in sizes} for row in report.read_rows(run_dirs) if row.arm == "ticket" and row.level == 1]
    both = sum(kept[0][n] * kept[1][n] / sizes[n] for n in sizes)
    assert float(random) == pytest.approx(both / sum(kept[0][n] + kept[1][n] - kept[0][n] * kept[1][n] / sizes[n] for n in sizes), abs=5e-4)
    assert float(finetune.split()[0]) == pytest.approx(1.0)  # level 1 prunes the same dense network in both chains
    # IMP's masks are nested (level 2 keeps half of level 1's): their IoU would be 1/2 by construction, so not shown.
    assert "level − 1 and level" not in table and "Each ticket's mask lies inside its previous level's" in table


def test_the_committed_evidence_names_no_machine_paths():
    """Results pages and their configs name runs relative to out_dir and the repository, never a machine's folders."""
    texts = [p for p in Path("docs/results").rglob("*") if p.suffix in (".md", ".yaml", ".json", ".jsonl")]
    assert texts
    for path in texts:
        text = path.read_text()
        assert not any(prefix in text for prefix in ("/work/", "/tmp/", "/home/", "/root/")), path


def test_a_run_given_twice_or_copied_or_a_line_repeated_counts_once(tmp_path, capsys):
    """One run is one seed however it reaches the report: `R R/`, a copy of its folder, a line repeated in its ledger."""
    accs = {("ticket", 0): 0.90, ("ticket", 1): 0.91, ("reinit", 1): 0.85}
    _fake_run(tmp_path / "seed0", 0, accs)
    _fake_run(tmp_path / "seed1", 1, {key: acc - 0.05 for key, acc in accs.items()})
    _fake_run(tmp_path / "copy", 0, accs)
    once = report.aggregate(report.read_rows([tmp_path / "seed0", tmp_path / "seed1"]))
    results = tmp_path / "seed0" / "results.jsonl"
    results.write_text(results.read_text() + results.read_text().splitlines(keepends=True)[1])
    for given in ([tmp_path / "seed0", tmp_path / "seed1", Path(f"{tmp_path / 'seed0'}/")], [tmp_path / "seed0", tmp_path / "copy", tmp_path / "seed1"]):
        cells = report.aggregate(report.read_rows(given))
        assert cells == once and all(cell.test_acc_at_early_stop.n == 2 for cell in cells.values())
    assert "(n=2/2)" in report.summary(once) and "(n=3/3)" not in report.summary(once)


def test_two_different_lines_for_one_level_arm_and_seed_are_refused_naming_both(tmp_path, capsys):
    _fake_run(tmp_path / "seed0", 0, {("ticket", 0): 0.90, ("ticket", 1): 0.91})
    results = tmp_path / "seed0" / "results.jsonl"
    second = json.loads(results.read_text().splitlines()[1]) | {"test_acc_at_early_stop": 0.5}
    results.write_text(results.read_text() + json.dumps(second) + "\n")
    assert cli.main(["report", str(tmp_path / "seed0"), "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{results}:2 and {results}:3 are two different results for seed 0's ticket at level 1" in line
    assert not (tmp_path / "out").exists()


def test_the_terminal_s_lines_read_the_report_s_accuracy_and_one_seed_shows_no_spread(tiny, tmp_path, capsys):
    """Each per-run line once printed the final weights' accuracy as "test acc" beside tables of the accuracy at the
    early-stopping step: now both read the results line's test_acc_at_early_stop, the final one named as such."""
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--arms=[ticket,reinit]", "--prune.levels=1"]) == 0
    said = capsys.readouterr()
    rows = result_rows(config.load(None, [*tiny, "--arms=[ticket,reinit]", "--prune.levels=1"]).run_dir())
    for row in rows:
        line = (f"level {row['level']}/1 seed 0 {row['arm']}: {row['weights_remaining']:.2%} remaining, "
                f"test acc at early stop {row['test_acc_at_early_stop']:.4f}")
        assert line in said.err and f"at the final weights {row['test_acc']:.4f}" in said.err
    table = said.out.split("Test accuracy at the early-stopping step, mean ± std over seeds:")[1].split("\n\n")[0]
    assert f"| {rows[0]['test_acc_at_early_stop']:.4f} (n=1) |" in table and "±" not in table


def test_a_run_prints_no_known_third_party_noise(tiny, tmp_path):
    """Lightning's LeafSpec deprecation and its "srun is available" hint at every fit, and W&B's "anonymous setting
    has no effect", each silenced where it comes from: a run's own lines are all its stderr says."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-m", "lth.cli", "run", "experiments/quickstart.yaml", *tiny, "--prune.levels=1", "--wandb.project=noise"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    noise = [line for line in done.stderr.splitlines() if any(word in line for word in ("LeafSpec", "srun", "anonymous"))]
    assert noise == []


def test_the_setup_section_states_the_experiment_and_what_ran_it(tiny, tmp_path):
    args = ["run", "experiments/quickstart.yaml", *tiny, "--prune.levels=1", "--train.label_smoothing=0.1"]
    assert cli.main(args) == 0
    text = (tmp_path / "runs" / "tiny" / "report" / "report.md").read_text()
    setup = text.split("## Setup")[1].split("Runs:")[0]
    assert "- Network: `mnist1d_mlp`" in setup and "- Data: `synthetic`" in setup and "batch 64" in setup
    assert "sgd, learning rate 0.05, momentum 0.9, weight decay 0.0005" in setup and "rewinding to 7it" in setup
    assert "`train.label_smoothing`: `0.1`" in setup  # a setting given on the command line, not at its default
    assert "`prune.fraction`" not in setup.split("Other settings")[1]  # said in words above, not again
    assert f"torch {torch.__version__}" in setup and "1 rank(s)" in setup
    assert "--train.label_smoothing=0.1" in setup.split("- Commands:")[1]


def test_a_matching_sparsity_found_at_the_deepest_level_is_said_to_be_a_bound(tmp_path):
    _fake_run(tmp_path / "a", 0, {("ticket", 0): 0.90, ("ticket", 1): 0.91, ("ticket", 2): 0.92, ("reinit", 1): 0.91, ("reinit", 2): 0.80})
    summary = report.summary(report.aggregate(report.read_rows([tmp_path / "a"])))
    assert "- ticket: at most 64.00% of weights remaining: it still matches at the deepest level run" in summary
    assert "- reinit: 80.00% of weights remaining\n" in summary + "\n"  # it stops matching at level 2: found, not a bound


def test_the_density_figure_names_layers_readably():
    names = ["bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.1.output.dense.weight", "bert.pooler.dense.weight"]
    assert report.layer_labels(names) == ["encoder.layer.0.attention.self.query", "encoder.layer.1.output.dense", "pooler.dense"]
    assert report.layer_labels(["layers.0.weight", "layers.2.weight"]) == ["layers.0", "layers.2"]
    assert report.layer_labels(["fc.weight"]) == ["fc"]
