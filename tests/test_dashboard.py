"""`lth dashboard`: the W&B report it builds, checked without a server."""

import wandb_workspaces.reports.v2 as wr

from lth import cli, dashboard
from lth.arms import ARMS


def test_the_report_plots_every_arm_against_weights_remaining_grouped_by_study():
    report = dashboard.build("me", "lth-study", "quickstart-1a2b3c4d")
    assert (report.entity, report.project) == ("me", "lth-study")
    (grid,) = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    (runs,) = grid.runsets
    assert (runs.entity, runs.project, runs.groupby) == ("me", "lth-study", ["Group"])
    assert runs.filters == """Metric("Group") == 'quickstart-1a2b3c4d'"""  # the W&B group: one study
    plots = {p.title: p for p in grid.panels if isinstance(p, wr.LinePlot)}
    accuracy = plots["Test accuracy at the early-stopping step"]
    assert accuracy.x == "weights_remaining" and accuracy.log_x
    assert accuracy.y == [f"{arm}/test_acc_at_early_stop" for arm in ARMS]
    assert (accuracy.groupby_aggfunc, accuracy.groupby_rangefunc) == ("mean", "stddev")
    assert plots["Early-stopping step (lowest validation loss)"].y == [f"{arm}/early_stop_step" for arm in ARMS]
    assert [p.table_name for p in grid.panels if isinstance(p, wr.WeavePanelSummaryTable)] == ["results"]
    assert dashboard.build("me", "lth-study").blocks[1].runsets[0].filters == ""  # every run of the project


def test_bad_arguments_and_an_unreachable_wandb_are_one_line(monkeypatch, capsys):
    assert cli.main(["dashboard", "no-slash"]) == 2
    assert "expected ENTITY/PROJECT, got 'no-slash'" in capsys.readouterr().err

    def offline(self, *args, **kwargs):
        raise ConnectionError("could not reach api.wandb.ai\nretrying")

    monkeypatch.setattr(wr.Report, "save", offline)
    assert cli.main(["dashboard", "me/lth-study", "--group", "g"]) == 2
    err = capsys.readouterr().err
    assert err == "lth: error: W&B: could not reach api.wandb.ai\n"


def test_a_sweep_s_points_are_its_groups_and_a_level_compares_them():
    """Each point of a sweep is its own W&B group (its study, named with the point); `--level` adds each arm's
    accuracy at that level per group, mean ± std over seeds: `lth report`'s comparison across points."""
    from conftest import TINY

    from lth import config

    groups = {config.load(None, [*TINY, f"--prune.rewind={k}", f"--point=prune.rewind={k}"]).study_id() for k in ("0", "7it")}
    assert {g.rpartition("-")[0] for g in groups} == {"experiment/prune.rewind=0", "experiment/prune.rewind=7it"}
    assert config.load(None, TINY).study_id().startswith("experiment-")  # a run outside a sweep: its group as before
    grid = dashboard.build("me", "lth-study", level=2).blocks[1]
    (bars,) = [p for p in grid.panels if isinstance(p, wr.BarPlot)]
    assert bars.metrics == [f"level_02/{arm}/test_acc_at_early_stop" for arm in ARMS] and grid.runsets[0].groupby == ["Group"]
    assert (bars.groupby_aggfunc, bars.groupby_rangefunc) == ("mean", "stddev")
    assert not [p for p in dashboard.build("me", "lth-study").blocks[1].panels if isinstance(p, wr.BarPlot)]
