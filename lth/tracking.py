"""W&B tracking through Lightning's `WandbLogger`: one W&B run per `lth run` invocation and seed.

The W&B run's id is derived from the run directory's identity and the arms it trains, so a rerun — after a
crash, a kill or a SLURM requeue — resumes the same W&B run instead of starting another. Under `wandb agent`
the agent chooses the id (WANDB_RUN_ID) and hands a preempted run back to the next agent.

W&B is a view of what is on disk, never the record: if it cannot be reached, training carries on and
`results.jsonl` holds everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

from lth.config import Experiment
from lth.preemption import REQUEUE
from lth.run_dir import Row, RunDir

# The columns of the per-level table: one row per (level, arm, seed), so a dashboard chart can compare the
# ticket with its controls without custom code.
TABLE_COLUMNS = (
    "level", "arm", "seed", "weights_remaining", "test_acc_at_early_stop", "test_acc", "best_val_acc", "early_stop_step", "rewind_step", "steps_trained",
    "gap_at_early_stop", "gap",
)
# test_acc_at_early_stop first: the accuracy Frankle & Carbin (2019) report, and the dashboard's default.
LEVEL_METRICS = ("test_acc_at_early_stop", "test_acc", "best_val_acc", "early_stop_step", "level", "gap_at_early_stop", "gap")


def wandb_id(cfg: Experiment) -> str:
    arms = hashlib.sha256(",".join(sorted(cfg.arms)).encode()).hexdigest()[:6]
    return f"{cfg.run_id()}-{arms}"


class Tracker:
    """Owns the W&B run of one run directory; `logger` goes to every Trainer of that run."""

    def __init__(self, cfg: Experiment, run_dir: RunDir):
        from lightning.pytorch.loggers import WandbLogger

        w = cfg.wandb
        agent = "WANDB_SWEEP_ID" in os.environ  # the agent's WANDB_RUN_ID is the sweep's handle on the run
        self.cfg, self.run_dir = cfg, run_dir
        self.logger = WandbLogger(
            project=w.project or os.environ.get("WANDB_PROJECT"),
            entity=w.entity,
            group=w.group or cfg.study_id(),
            job_type="+".join(cfg.arms),
            tags=w.tags,
            name=f"{cfg.name}-seed{cfg.seed}-{'+'.join(cfg.arms)}",
            id=None if agent else wandb_id(cfg),
            resume="allow",
            save_dir=str(run_dir.root),
            config=cfg.to_dict() | {"run_id": cfg.run_id(), "run_dir": str(run_dir.root)},
            reinit="create_new",  # the seeds of one invocation train together, each with its own W&B run
        )
        # Lightning's WandbLogger hands wandb.init `anonymous=None` always, and wandb warns that the setting does
        # nothing (wandb >= 0.19) at every run; left out, nothing changes but the warning.
        self.logger._wandb_init.pop("anonymous", None)
        self.logger.experiment  # noqa: B018 - starts the W&B run now, so a failure shows before training

    @classmethod
    def open(cls, cfg: Experiment, run_dir: RunDir) -> Tracker | None:
        if not (cfg.wandb.project or os.environ.get("WANDB_PROJECT")) or os.environ.get("WANDB_MODE") == "disabled":
            return None
        try:
            return cls(cfg, run_dir)
        except Exception as err:  # noqa: BLE001 - no network, no login, a server error: all mean "carry on without"
            reason = str(err).splitlines()[0] if str(err) else ""
            print(f"[lth] W&B unavailable ({type(err).__name__}: {reason}); training goes on, results stay in {run_dir.root}", file=sys.stderr, flush=True)
            return None

    def evaluation(self, level: int, record: dict[str, float], train_loss: float | None) -> None:
        """One validation of one (level, arm): its curve over training steps, as Lightning's logger logs it."""
        metrics = {"val/acc": record["val_acc"], "val/loss": record["val_loss"], "trainer/global_step": record["step"], "level": level}
        self.logger.experiment.log(metrics | ({"train/loss": train_loss} if train_loss is not None else {}))

    def level(self, row: Row, rows: list[Row]) -> None:
        """A finished (level, arm): its metrics against weights remaining, its summary, the whole results line
        (`ARM/row`, as JSON: what `lth report --wandb` reads back) and the whole table again (a W&B table is
        immutable, so it is re-logged complete from `results.jsonl`)."""
        import wandb

        run = self.logger.experiment
        arm = row.arm
        x = f"{arm}/weights_remaining"
        run.define_metric(x)
        for key in LEVEL_METRICS:
            run.define_metric(f"{arm}/{key}", step_metric=x)
        mine = [r for r in rows if r.arm in self.cfg.arms]
        table = wandb.Table(columns=list(TABLE_COLUMNS), data=[[getattr(r, c) for c in TABLE_COLUMNS] for r in mine])
        # The plain `weights_remaining` too: one dashboard chart can then plot every arm against it (`lth.dashboard`).
        metrics = {x: row.weights_remaining, "weights_remaining": row.weights_remaining, **{f"{arm}/{k}": getattr(row, k) for k in LEVEL_METRICS}}
        run.log(metrics | {"results": table, f"{arm}/row": json.dumps(row.to_json(), sort_keys=True)})
        run.summary.update({f"level_{row.level:02d}/{arm}/{key}": getattr(row, key) for key in ("weights_remaining", *LEVEL_METRICS)})
        if self.cfg.wandb.log_artifacts and arm == "ticket":
            self._artifacts(row.level)

    def stability(self, row: dict[str, Any]) -> None:
        """One measured point of `lth stability`: its barriers, against its level and rewind step, and its curve."""
        import wandb

        run = self.logger.experiment
        where = f"level_{row['level']:02d}/" + (f"k_{row['rewind_step']}" if row["kind"] == "copies" else f"from_level_{row['from_level']:02d}")
        curve = wandb.Table(columns=["alpha", "test_error", "train_error"], data=[list(v) for v in zip(row["alpha"], row["test_error"], row["train_error"])])
        run.log({"stability/level": row["level"], "stability/rewind_step": row["rewind_step"], "stability/test_barrier": row["test_barrier"],
                 "stability/train_barrier": row["train_barrier"], f"stability/{where}/curve": curve})
        run.summary.update({f"stability/{where}/{key}": row[key] for key in ("test_barrier", "train_barrier")})

    def _artifacts(self, level: int) -> None:
        import wandb

        files = [("masks", self.run_dir.mask(level))] + ([("rewind", self.run_dir.rewind)] if level == 0 else [])
        for kind, path in files:
            if path.exists():
                artifact = wandb.Artifact(f"{self.cfg.run_id()}-{kind}", type=kind, metadata={"level": level})
                artifact.add_file(str(path))
                self.logger.experiment.log_artifact(artifact, aliases=[f"level_{level:02d}", "latest"])

    def interrupted(self, exit_code: int) -> None:
        """End the W&B run of a run stopped by a signal; after SIGUSR1, tell a sweep that it stopped to be
        requeued, not because it failed."""
        if exit_code == REQUEUE:
            self.logger.experiment.mark_preempting()
        self.finish(exit_code=exit_code)

    def finish(self, exit_code: int = 0) -> None:
        self.logger.experiment.finish(exit_code=exit_code)
