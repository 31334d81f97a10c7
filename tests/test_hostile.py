"""What a user who trusts lth with a month of cluster time expects when things go wrong (issue 31): it never hangs
(every case that hung runs in a process with a time limit, so a hang fails the test), never takes one experiment
for another, and answers every signal, at any moment, with its exit code and one line."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import held_by_another_process, result_rows, without_timing

from lth import cli, config
from lth.run_dir import FINAL, RunDir

QUICKSTART = str(Path("experiments/quickstart.yaml").resolve())
LIMIT = 240  # seconds: each of these finishes in a fraction of it; a hang is killed there and fails the test


def _lth(args, cwd, **popen):
    return subprocess.run([sys.executable, "-m", "lth.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=LIMIT,
                          env={**os.environ, "WANDB_MODE": "disabled"}, **popen)


def _said(stderr: str) -> list[str]:
    """What lth said to the user, its progress lines aside."""
    return [line for line in stderr.splitlines() if line.startswith("lth:")]


@pytest.mark.slow
def test_a_divergence_with_levels_after_it_exits_4_and_so_does_the_rerun(tiny, tmp_path):
    args = ["run", QUICKSTART, *tiny, "--train.lr=1e6", "--prune.levels=3", "--arms=[ticket,reinit]"]
    for _ in range(2):
        done = _lth(args, tmp_path)
        assert done.returncode == cli.DIVERGED, done.stderr[-2000:]
        said = _said(done.stderr)
        assert said[1:] == [f"lth: seed 0 {arm} at level {level}: not trained, as the ticket's level 0 diverged"
                            for level in (1, 2, 3) for arm in ("ticket", "reinit")], said
        assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("moved, redone", [(f"level_01/ticket/{FINAL}", "level 1/2 ticket: recorded earlier, trained again"),
                                           ("rewind.ckpt", "rewind.ckpt is missing and levels still to train start from it: replaying")],
                         ids=["final", "rewind"])
def test_a_checkpoint_moved_aside_as_advised_is_made_again_and_the_run_goes_on(tiny, tmp_path, moved, redone):
    """`RunDir.load` says "move it aside to redo that step": the rerun redoes it (a level's training, replacing its
    results line with an equal one; the dense run replayed to the rewind step) and trains the levels after it."""
    args = ["run", QUICKSTART, *tiny, "--prune.levels=1"]
    assert _lth(args, tmp_path).returncode == 0
    run_dir = config.load(None, tiny).run_dir()
    before = without_timing(result_rows(run_dir))
    kept = torch.load(run_dir / moved, weights_only=False)["state_dict"]
    (run_dir / moved).rename(tmp_path / "aside.ckpt")
    done = _lth(args[:-1] + ["--prune.levels=2"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert redone in done.stderr
    again = torch.load(run_dir / moved, weights_only=False)["state_dict"]
    assert again.keys() == kept.keys() and all(torch.equal(again[k], kept[k]) for k in kept)
    rows = without_timing(result_rows(run_dir))
    assert [(r["level"], r["arm"]) for r in rows] == [(0, "ticket"), (1, "ticket"), (2, "ticket")]
    assert rows[:2] == before


def test_levels_past_the_last_weight_are_refused_at_once(tmp_path):
    """A billion levels once built a list over every level before any check (memory past 9 GB, never an answer)."""
    started = time.monotonic()
    done = _lth(["run", QUICKSTART, "--seed=0", "--prune.levels=1000000000", f"--out_dir={tmp_path / 'runs'}"], tmp_path)
    assert done.returncode == 2 and time.monotonic() - started < 60
    assert _said(done.stderr) == ["lth: error: prune.levels: level 40 would remove none of the 2 weights left in 3 layers sharing fraction 0.2 "
                                  "(layers.0.weight, ...) (round(0.2 × 2) = 0); at most 39 levels, got 1000000000"]
    assert not (tmp_path / "runs").exists()


def test_a_busy_seed_leaves_the_free_seeds_to_train(tiny, capsys):
    seed0 = config.load(None, tiny).run_dir()
    holder = held_by_another_process(seed0 / "locks" / "ticket.lock")
    try:
        assert cli.main(["run", QUICKSTART, *tiny, "--prune.levels=0", "--seed=[0,1]"]) == 0
    finally:
        holder.close()
    assert "this process leaves seed 0 to it" in capsys.readouterr().err
    assert not (seed0 / "results.jsonl").exists()
    assert [(r["level"], r["seed"]) for r in result_rows(config.load(None, [*tiny, "--seed=1"]).run_dir())] == [(0, 1)]


@pytest.mark.slow
def test_a_control_started_before_its_ticket_waits_for_it(tiny, tmp_path):
    """A sweep starts a ticket's job and its controls' together; the control may reach its check first."""
    args = ["run", QUICKSTART, *tiny, "--prune.levels=1"]
    control = subprocess.Popen([sys.executable, "-m", "lth.cli", *args, "--arms=[reinit]"], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(1.0)
    ticket = _lth([*args, "--arms=[ticket]"], tmp_path)
    assert ticket.returncode == 0, ticket.stderr[-2000:]
    assert control.wait(timeout=LIMIT) == 0, control.stderr.read()[-2000:]
    assert {(r["level"], r["arm"]) for r in result_rows(config.load(None, tiny).run_dir())} == {(0, "ticket"), (1, "ticket"), (1, "reinit")}


# A stand-in for a slow stretch of a command (`owner.name` in `module`): where it says "ready", the signal is sent.
PAUSE = """
import importlib, sys, time
owner = importlib.import_module({module!r})
for part in {owner!r}.split(".")[:-1]:
    owner = getattr(owner, part)
real = getattr(owner, {owner!r}.split(".")[-1])
def slow(*given, **named):
    print("ready", file=sys.stderr, flush=True)
    time.sleep(60)
    return real(*given, **named)
setattr(owner, {owner!r}.split(".")[-1], slow)
from lth import cli
sys.exit(cli.main(sys.argv[1:]))
"""
STOPPED = "lth: stopped by {} with nothing in training to checkpoint; rerun the same command to resume"


CODES = {signal.SIGUSR1: 3, signal.SIGINT: 130, signal.SIGTERM: 143}
STRETCHES = {"checking-the-data": ("lth.data", "DataModule.check", "run"), "writing-the-report": ("lth.report", "write", "run"),
             "sensitivity": ("lth.sensitivity", "evaluate", "sensitivity")}


@pytest.mark.slow
@pytest.mark.parametrize("stop, stretch", [(stop, stretch) for stretch in STRETCHES for stop in CODES
                                           # SLURM's warning after training is ignored: the results are recorded (test_preemption)
                                           if (stop, stretch) != (signal.SIGUSR1, "writing-the-report")])
def test_a_signal_outside_training_exits_with_its_code_and_one_line(tiny, tmp_path, stop, stretch):
    (module, owner, command), code = STRETCHES[stretch], CODES[stop]
    args = ["run", QUICKSTART, *tiny, "--prune.levels=0"]
    if command == "sensitivity":
        assert _lth(args, tmp_path).returncode == 0
        args = ["sensitivity", str(config.load(None, tiny).run_dir()), "--fractions=[0.5]"]
    process = subprocess.Popen([sys.executable, "-c", PAUSE.format(module=module, owner=owner), *args], stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               env={**os.environ, "WANDB_MODE": "disabled"})
    lines = []
    for line in process.stderr:  # until the command reaches the stretch
        lines.append(line)
        if line.strip() == "ready":
            break
    assert lines and lines[-1].strip() == "ready", "".join(lines)[-2000:]
    process.send_signal(stop)
    assert process.wait(timeout=LIMIT) == code
    rest = process.stderr.read()
    assert _said(rest) == [STOPPED.format(stop.name)] and "Traceback" not in rest, rest[-2000:]


def test_a_signal_while_the_configuration_is_read_exits_with_its_code_and_one_line(tmp_path):
    """The handlers are the command's first act, before the configuration is read and torch imported."""
    script = ("import os, signal, sys; import lth.config as c; real = c.load_seeds; "
              "c.load_seeds = lambda *a: (os.kill(os.getpid(), signal.SIGUSR1), real(*a))[1]; from lth import cli; sys.exit(cli.main(['run', 'x.yaml']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=LIMIT)
    assert done.returncode == 3 and _said(done.stderr) == [STOPPED.format("SIGUSR1")], done.stderr[-2000:]


FILE_SIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as a full disk fails with ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
from lth import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_checkpoint_write_that_meets_a_disk_limit_is_one_line_and_the_rerun_resumes(tiny, tmp_path):
    """torch.save writing to a file turns the write's OSError into a RuntimeError of its zip writer (a 90-line
    traceback); lth serialises first and writes the bytes itself. A file-size limit stands in for a full disk."""
    args = ["run", QUICKSTART, *tiny, "--prune.levels=1"]
    limited = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, *args], capture_output=True, text=True, cwd=tmp_path, timeout=LIMIT)
    assert limited.returncode == 1 and "Traceback" not in limited.stderr, limited.stderr[-2000:]
    (said,) = _said(limited.stderr)
    assert "File too large; every file written before is whole" in said
    run_dir = config.load(None, tiny).run_dir()
    assert not [p for p in run_dir.rglob(".*~*")], "no temporary file left"
    assert _lth(args, tmp_path).returncode == 0
    assert [(r.level, r.arm) for r in RunDir(run_dir).rows()] == [(0, "ticket"), (1, "ticket")]


def test_unusable_arguments_are_one_line(capsys):
    for argv, message in ((["report"], "give run directories"), (["export", "x"], "the following arguments are required: --level, --out"),
                          (["frobnicate"], "unknown command 'frobnicate' (one of run, ")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_the_report_of_a_run_whose_only_level_diverged_says_so(tiny, tmp_path, capsys):
    args = [*tiny, "--train.lr=1e6", "--prune.levels=0"]
    assert cli.main(["run", QUICKSTART, *args]) == cli.DIVERGED
    capsys.readouterr()
    assert cli.main(["report", str(config.load(None, args).run_dir()), "--out", str(tmp_path / "report")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no level of it finished: seed 0 ticket at level 0 diverged at step" in line
    shutil.rmtree(tmp_path / "runs")


KILL_BETWEEN = """
import os, signal, sys
from lth.run_dir import RunDir
save = RunDir.save
def killing(obj, path):
    save(obj, path)
    if path.name == "last.ckpt" and path.parent.name == "ticket" and path.parent.parent.name == "level_01" and obj["global_step"] == 20:
        os.kill(os.getpid(), signal.SIGKILL)  # the ticket has its new last.ckpt, the reinit of its pack not yet
RunDir.save = staticmethod(killing)
from lth import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_kill_between_two_members_checkpoint_writes_resumes_them_from_one_step(tiny, tmp_path):
    """The members of a pack go on from one common step, so they train as the same pack and the rerun equals the
    uninterrupted run bit for bit (as two packs of one they would round differently)."""
    args = ["run", QUICKSTART, *tiny[:-2], "--prune.levels=1", "--arms=[ticket,reinit]", "--pack=2", "--name=tiny"]
    reference = _lth([*args, f"--out_dir={tmp_path / 'reference'}"], tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]
    killed = subprocess.run([sys.executable, "-c", KILL_BETWEEN, *args, f"--out_dir={tmp_path / 'runs'}"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=LIMIT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = config.load(None, tiny).run_dir()
    steps = {arm: torch.load(run_dir / "level_01" / arm / "last.ckpt", weights_only=False)["global_step"] for arm in ("ticket", "reinit")}
    assert steps["ticket"] == 20 > steps["reinit"], "the kill came between the two writes"
    done = _lth([*args, f"--out_dir={tmp_path / 'runs'}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(a pack of 2)" in done.stderr.split("level 1:")[1]
    expected = config.load(None, [*tiny[:-2], f"--out_dir={tmp_path / 'reference'}", "--name=tiny"]).run_dir()
    assert without_timing(result_rows(run_dir)) == without_timing(result_rows(expected))
    for arm in ("ticket", "reinit"):
        ours, theirs = (torch.load(d / "level_01" / arm / FINAL, weights_only=False)["state_dict"] for d in (run_dir, expected))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), arm
