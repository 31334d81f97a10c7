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
