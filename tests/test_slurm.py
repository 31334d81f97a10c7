"""The real slurm/array.sbatch on a real SLURM (slurm/local-cluster.sh starts one on localhost, as root)."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, result_rows, without_timing

from lth import cli, config

ROOT = Path(__file__).resolve().parents[1]


def _cluster() -> bool:
    return shutil.which("sbatch") is not None and subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0


NO_CLUSTER = "no SLURM cluster answers `scontrol ping` (start one with: sudo slurm/local-cluster.sh)"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _cluster(), reason=NO_CLUSTER)]

# The grid point sets arms and seed; the rest makes it tiny.
SMALL = [a for a in TINY if not a.startswith(("--arms=", "--seed="))]


def _sbatch(tmp_path, array, extra):
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "WANDB_MODE": "disabled"}
    command = ["sbatch", "--parsable", "-c", "1", f"--array={array}", "-o", str(tmp_path / "slurm-%A_%a.out"), "slurm/array.sbatch", "sweeps/quickstart.yaml"]
    out = subprocess.run(command + SMALL + extra, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


def _wait_until(condition, timeout, what):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _queued(job):
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.split()


def _tasks(job):
    """JobState, ExitCode and Restarts of every task, from scontrol (no accounting database needed)."""
    text = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True).stdout
    return [dict(re.findall(r"(JobState|ExitCode|Restarts|ArrayTaskId)=(\S+)", line)) for line in text.splitlines()]




def test_array_runs_every_grid_point_of_the_quickstart_sweep(tmp_path):
    out = ["--out_dir=" + str(tmp_path / "runs"), "--name=grid"]
    job = _sbatch(tmp_path, "0-3", out)
    _wait_until(lambda: not _queued(job), 240, f"array job {job}")
    tasks = _tasks(job)
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1", "2", "3"]
    assert all(t["JobState"] == "COMPLETED" and t["ExitCode"] == "0:0" for t in tasks), tasks
    for seed in (0, 1):
        rows = {(r["level"], r["arm"]): r for r in result_rows(config.load(None, SMALL + out + [f"--seed={seed}"]).run_dir())}
        assert sorted(rows) == sorted([(0, "ticket")] + [(lvl, a) for lvl in (1, 2) for a in ("ticket", "reinit")])
        assert all(rows[lvl, "reinit"]["mask_sha256"] == rows[lvl, "ticket"]["mask_sha256"] for lvl in (1, 2))


def test_sigusr1_mid_level_requeues_and_the_job_finishes_with_identical_results(tmp_path):
    longer = ["--train.duration=200ep", "--train.eval_every=1ep", "--train.checkpoint_every=1ep", "--prune.levels=1"]
    reference = ["--out_dir=" + str(tmp_path / "reference"), "--name=rq"]
    assert cli.main(["run", "experiments/quickstart.yaml", *SMALL, *longer, *reference, "--seed=0", "--arms=ticket"]) == 0
    expected = result_rows(config.load(None, SMALL + longer + reference).run_dir())

    out = ["--out_dir=" + str(tmp_path / "runs"), "--name=rq"]
    job = _sbatch(tmp_path, "0", longer + out)
    log = tmp_path / f"slurm-{job}_0.out"
    _wait_until(lambda: log.exists() and "level 1: training seed 0 ticket" in log.read_text(), 120, "level 1 to start")
    time.sleep(1.0)  # into the level, past its first checkpoint
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{job}_0"], check=True)
    _wait_until(lambda: _queued(job) == ["PENDING"], 60, "the requeue")
    # Skip SLURM's ~2 min requeue delay, but not to within the second of the requeue: slurmd refuses a job
    # credential issued in the same second as the one it revoked ("Job credential revoked").
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job}_0", "StartTime=now"], check=True)
    _wait_until(lambda: not _queued(job), 120, "the requeued job")

    (task,) = _tasks(job)
    assert task["JobState"] == "COMPLETED" and task["ExitCode"] == "0:0" and task["Restarts"] == "1", task
    text = log.read_text()  # --open-mode=append: both attempts
    assert re.search(r"stopped by SIGUSR1 at step \d+; checkpointed to .*level_01/ticket/last.ckpt", text)
    assert f"requeueing job {job}_0" in text and "level 0/1 ticket: done earlier" in text
    assert text.count("level 0: training seed 0 ticket") == 1  # no level is trained twice
    assert without_timing(result_rows(config.load(None, SMALL + longer + out).run_dir())) == without_timing(expected)


def _sbatch_ddp(tmp_path, extra):
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "WANDB_MODE": "disabled"}
    command = ["sbatch", "--parsable", "--ntasks-per-node=2", "-c", "1", "-o", str(tmp_path / "slurm-%j.out"), "slurm/ddp.sbatch",
               "experiments/quickstart.yaml"]
    out = subprocess.run(command + SMALL + ["--seed=0", "--arms=ticket"] + extra, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


def test_the_ddp_script_trains_on_two_ranks_and_sigusr1_requeues_it_to_identical_results(tmp_path):
    """srun starts two ranks (gloo on this CPU); an uninterrupted job, then one signalled mid-level 1 and requeued."""
    longer = ["--train.duration=200ep", "--train.eval_every=1ep", "--train.checkpoint_every=1ep", "--prune.levels=1", "--name=ddp"]
    reference = _sbatch_ddp(tmp_path, [*longer, f"--out_dir={tmp_path / 'reference'}"])
    _wait_until(lambda: not _queued(reference), 240, f"job {reference}")
    (task,) = _tasks(reference)
    assert task["JobState"] == "COMPLETED" and task["ExitCode"] == "0:0", task
    expected = result_rows(config.load(None, SMALL + longer + [f"--out_dir={tmp_path / 'reference'}"]).run_dir())
    assert [r["world_size"] for r in expected] == [2, 2] and (tmp_path / "reference" / "ddp" / "report" / "report.md").exists()

    job = _sbatch_ddp(tmp_path, [*longer, f"--out_dir={tmp_path / 'runs'}"])
    log = tmp_path / f"slurm-{job}.out"
    _wait_until(lambda: log.exists() and "level 1: training seed 0 ticket" in log.read_text(), 120, "level 1 to start")
    time.sleep(1.0)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    _wait_until(lambda: _queued(job) == ["PENDING"], 60, "the requeue")
    time.sleep(2)  # see the requeue test above: not within the second of the requeue
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    _wait_until(lambda: not _queued(job), 240, "the requeued job")
    (task,) = _tasks(job)
    assert task["JobState"] == "COMPLETED" and task["ExitCode"] == "0:0" and task["Restarts"] == "1", task
    text = log.read_text()
    # Both ranks stopped at the same step (one line, from rank 0), and the requeued job did not train level 0 again.
    # srun reports ranks that exit in the same instant together ("tasks 0-1"), else one line each ("task 1", "task 0").
    reports = re.findall(r"tasks? (\d+)(?:-(\d+))?: Exited with exit code 3", text)
    exited = {rank for first, last in reports for rank in range(int(first), int(last or first) + 1)}
    assert len(re.findall(r"stopped by SIGUSR1 at step \d+", text)) == 1 and exited == {0, 1}
    assert text.count("level 0: training seed 0 ticket") == 1
    assert without_timing(result_rows(config.load(None, SMALL + longer + [f"--out_dir={tmp_path / 'runs'}"]).run_dir())) == without_timing(expected)


def test_an_array_task_of_a_sweep_trains_its_point_on_the_ranks_it_starts_itself(tmp_path):
    """A sweep point as one multi-device job: a batch task of one process starts its node's ranks (no srun)."""
    out = ["--out_dir=" + str(tmp_path / "runs"), "--name=grid", "--train.devices=2"]
    job = _sbatch(tmp_path, "0", out)
    _wait_until(lambda: not _queued(job), 240, f"array job {job}")
    (task,) = _tasks(job)
    assert task["JobState"] == "COMPLETED" and task["ExitCode"] == "0:0", task
    rows = result_rows(config.load(None, SMALL + out + ["--seed=0"]).run_dir())
    assert [(r["level"], r["arm"], r["world_size"]) for r in rows] == [(0, "ticket", 2), (1, "ticket", 2), (2, "ticket", 2)]
