"""W&B logging, read back from the offline run files that `wandb sync` would upload."""

import dataclasses
import glob
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import result_rows
from wandb.proto import wandb_internal_pb2 as pb

from lth import cli, config
from lth.tracking import TABLE_COLUMNS, wandb_id


def _records(path):
    """The records of a .wandb file (a LevelDB-style log of 32 KiB blocks after a 7-byte header)."""
    data, pos, pending = Path(path).read_bytes(), 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            pos += left - 7
            continue
        pending += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _read_offline(run_dir):
    runs = sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*")))
    out = {"ids": [], "group": set(), "job_type": set(), "history": [], "summary": {}, "step_metric": {}, "artifacts": [], "config": {}}
    for offline in runs:
        for record in _records(glob.glob(offline + "/run-*.wandb")[0]):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out["ids"].append(record.run.run_id)
                out["group"].add(record.run.run_group)
                out["job_type"].add(record.run.job_type)
            elif kind == "history":
                out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            elif kind == "summary":
                out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
            elif kind == "metric" and record.metric.step_metric:
                out["step_metric"][record.metric.name] = record.metric.step_metric
            elif kind == "config":
                out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "artifact":
                out["artifacts"].append(record.artifact.type)
    tables = sorted(glob.glob(runs[-1] + "/files/media/table/results_*.table.json"), key=lambda p: int(p.split("results_")[1].split("_")[0]))
    out["table"] = json.loads(Path(tables[-1]).read_text()) if tables else None
    return out




@pytest.mark.slow
def test_offline_wandb_run_holds_the_level_metrics_table_and_summary_and_resumes_by_id(tiny, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = ["run", "experiments/quickstart.yaml", *tiny, "--arms=[ticket,reinit]", "--wandb.project=lth-test", "--wandb.log_artifacts=true"]
    assert cli.main(args + ["--prune.levels=1"]) == 0
    assert cli.main(args) == 0  # two levels now: the same run directory, so the same W&B run, resumed
    cfg = config.load("experiments/quickstart.yaml", tiny + ["--arms=[ticket,reinit]"])
    rows, logged = result_rows(cfg.run_dir()), _read_offline(cfg.run_dir())

    assert logged["ids"] == [wandb_id(cfg)] * 2
    assert logged["group"] == {cfg.study_id()} and logged["job_type"] == {"ticket+reinit"}
    for arm in ["ticket", "reinit"]:
        ours = [r for r in rows if r["arm"] == arm]
        theirs = [h for h in logged["history"] if f"{arm}/test_acc" in h]
        assert all(h["weights_remaining"] == h[f"{arm}/weights_remaining"] for h in theirs)  # the dashboard's x axis
        assert [(h[f"{arm}/weights_remaining"], h[f"{arm}/test_acc"], h[f"{arm}/early_stop_step"]) for h in theirs] == [
            (r["weights_remaining"], r["test_acc"], r["early_stop_step"]) for r in ours
        ]
        assert logged["step_metric"][f"{arm}/test_acc"] == f"{arm}/weights_remaining"
        for r in ours:
            assert logged["summary"][f"level_{r['level']:02d}/{arm}/test_acc"] == r["test_acc"]
    assert logged["table"]["columns"] == list(TABLE_COLUMNS)
    assert logged["table"]["data"] == [[r[c] for c in TABLE_COLUMNS] for r in rows]  # complete after the resume
    assert logged["artifacts"].count("masks") == 2 and logged["artifacts"].count("rewind") == 1
    assert sum("val/acc" in h for h in logged["history"]) >= 3 * 6  # Lightning's own metrics flow too

    # `lth report --wandb` reads the same rows back (here through a stand-in for wandb.Api over these records).
    class Run:
        name, config = "r", {k: v for k, v in logged["config"].items() if not k.startswith("_")}

        def scan_history(self):
            return logged["history"]

    class Api:
        def runs(self, path, filters):
            return [Run()] if filters == {"group": cfg.study_id()} else []

    from lth import report

    read = report.rows_from_wandb("e/p", cfg.study_id(), Api())
    assert sorted((r.to_json() for r in read), key=lambda r: (r["level"], r["arm"])) == sorted(rows, key=lambda r: (r["level"], r["arm"]))


@pytest.mark.slow
def test_unreachable_wandb_never_stops_training(tiny, tmp_path):
    env = {"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "x" * 40, "WANDB_INIT_TIMEOUT": "2"}
    args = ["run", "experiments/quickstart.yaml", *tiny, "--prune.levels=1", "--wandb.project=lth-test"]
    done = subprocess.run([sys.executable, "-m", "lth.cli", *args], capture_output=True, text=True, timeout=300, env={**__import__("os").environ, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "W&B unavailable" in done.stderr
    assert [(r["level"], r["arm"]) for r in result_rows(config.load(None, tiny).run_dir())] == [(0, "ticket"), (1, "ticket")]


def test_a_stability_study_logs_to_its_own_wandb_run(tiny, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    # Seed 1: a run id no other test of this process has used (the W&B service keeps ids in use).
    args = [*tiny, "--seed=1", "--prune.levels=0", "--wandb.project=lth-test"]
    assert cli.main(["stability", "experiments/quickstart.yaml", *args, "--rewind=[7it]", "--alphas=3"]) == 0
    cfg = config.load("experiments/quickstart.yaml", args)
    logged = _read_offline(cfg.run_dir())
    (row,) = [json.loads(line) for line in (cfg.run_dir() / "stability.jsonl").read_text().splitlines()]
    assert logged["job_type"] == {"ticket", "stability"}
    assert wandb_id(dataclasses.replace(cfg, arms=["stability"])) in logged["ids"]
    assert logged["summary"]["stability/level_00/k_7/test_barrier"] == row["test_barrier"]
    assert any(h.get("stability/train_barrier") == row["train_barrier"] and h["stability/rewind_step"] == 7 for h in logged["history"])
