"""`lth dashboard ENTITY/PROJECT [--group G]`: a saved W&B report comparing tickets with their controls, built
with W&B's own report library (PyPI `wandb-workspaces`), from the metrics `lth.tracking` logs.

Each W&B run is one seed of one study; the report groups the runs by W&B group (lth's default group is the
study, named with its sweep point) so every line is a mean over seeds with a ±1 std band, like `lth report`'s
figures, and a sweep's points in one project are its groups, each with its own lines.
"""

from __future__ import annotations

from lth.arms import ARMS
from lth.report import ACCURACY


def build(entity: str, project: str, group: str | None = None, level: int | None = None):
    """The report; `level`: with a bar panel of each arm's accuracy at that level per W&B group, which for a sweep's
    points (each its own group, `lth.config.Experiment.study_id`) is `lth report`'s comparison across points."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    def per_arm(metric: str, title: str, ylabel: str):
        # `weights_remaining` is logged with every arm's per-level metrics, so one chart holds every arm.
        return wr.LinePlot(
            title=title, x="weights_remaining", y=[f"{arm}/{metric}" for arm in ARMS], log_x=True,
            title_x="fraction of weights remaining", title_y=ylabel, groupby_aggfunc="mean", groupby_rangefunc="stddev",
        )

    runs = wr.Runset(
        entity=entity, project=project, name=group or project,
        filters=[expr.Metric("Group") == group] if group else "", groupby=["Group"],
    )
    panels = [
        per_arm(ACCURACY, "Test accuracy at the early-stopping step", "test accuracy at early stop"),
        per_arm("early_stop_step", "Early-stopping step (lowest validation loss)", "step"),
        per_arm("test_acc", "Test accuracy at the final weights", "test accuracy (final)"),
        wr.WeavePanelSummaryTable(table_name="results"),
    ]
    if level is not None:
        panels.insert(1, wr.BarPlot(
            title=f"Test accuracy at the early-stopping step at level {level}, per point", metrics=[f"level_{level:02d}/{arm}/{ACCURACY}" for arm in ARMS],
            orientation="v", groupby_aggfunc="mean", groupby_rangefunc="stddev", title_y="test accuracy at early stop",
        ))
    return wr.Report(
        entity=entity, project=project, title=f"Lottery tickets against their controls: {group or project}",
        description="Ticket, reinit, random pruning, Scratch-B, fine-tuning and LR rewinding, mean ± std over seeds.",
        blocks=[
            wr.P(
                "Test accuracy is read at each run's early-stopping step (lowest validation loss; Frankle & Carbin "
                "2019, §2), against the fraction of weights remaining on a log axis; lines are means over the seeds "
                "of each W&B group, bands ±1 std. The table holds one row per (level, arm, seed)."
            ),
            wr.PanelGrid(runsets=[runs], panels=panels),
        ],
    )
