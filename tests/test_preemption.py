"""SIGUSR1 (SLURM's requeue signal), and several processes pointed at the same run directory."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import held_by_another_process, result_rows, without_timing

from lth import cli, config, imp, locks, report
from lth.module import MaskedModule


@pytest.mark.slow
@pytest.mark.parametrize("stop, code", [(signal.SIGUSR1, 3), (signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGUSR1", "SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_the_exact_step_exits_non_zero_and_the_rerun_matches_an_uninterrupted_run(tiny, tmp_path, monkeypatch, capsys, stop, code):
    """SIGUSR1 (SLURM's warning, requeued on 3), SIGTERM (its time limit and scancel: 143) and SIGINT (130) each
    checkpoint, say so in one line and exit non-zero; the rerun ends as an uninterrupted run."""
    args = ["run", "experiments/quickstart.yaml", *tiny]
    assert cli.main(args[:-2] + [f"--out_dir={tmp_path / 'reference'}", "--name=tiny"]) == 0
    expected = result_rows(config.load(None, tiny[:-2] + [f"--out_dir={tmp_path / 'reference'}", "--name=tiny"]).run_dir())
    run_dir = config.load(None, tiny).run_dir()

    step, level = MaskedModule.optimizer_step, {}
    train = imp.train_pack

    def tracked_train(members, *rest):
        level["now"] = members[0].level
        return train(members, *rest)

    monkeypatch.setattr(imp, "train_pack", tracked_train)
    # Between evaluations (every 5 steps) of level 0, and mid-level 1 after the rewind (step 7).
    for signal_level, signal_step in [(0, 13), (1, 22)]:

        def signalling_step(self, *a, signal_level=signal_level, signal_step=signal_step, **k):
            step(self, *a, **k)
            if level["now"] == signal_level and self.global_step == signal_step:
                os.kill(os.getpid(), stop)

        monkeypatch.setattr(MaskedModule, "optimizer_step", signalling_step)
        assert cli.main(args) == code
        said = capsys.readouterr().err
        if signal_level == 1:  # the second invocation continued level 0 where the first was stopped, and said so
            assert "level 0: training seed 0 ticket with 100.00% of weights remaining, resuming at step 14 where it was stopped" in said
        err = [line for line in said.splitlines() if not line.startswith("[lth]")]  # its own progress lines aside
        assert len(err) == 1 and f"stopped by {stop.name} at step {signal_step + 1}; checkpointed to" in err[0] and "rerun the same command to resume" in err[0]
        last = torch.load(run_dir / f"level_{signal_level:02d}" / "ticket" / "last.ckpt", weights_only=False)
        # Right after the step the signal came in (inside the hook, global_step does not count it yet), not at
        # the last evaluation (every 5 steps).
        assert last["global_step"] == signal_step + 1
    monkeypatch.setattr(MaskedModule, "optimizer_step", step)
    write = report.write

    def late_warning(*given):  # SLURM's warning while the report is written, after training: harmless
        os.kill(os.getpid(), signal.SIGUSR1)
        return write(*given)

    monkeypatch.setattr(report, "write", late_warning)
    assert cli.main(args) == 0
    said = capsys.readouterr().err
    assert "resuming at step 23 where it was stopped" in said and said.count("resuming at step") == 1  # level 2 starts afresh
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL, "main leaves the caller's handlers as they were"
    assert without_timing(result_rows(run_dir)) == without_timing(expected)


def test_an_arm_trained_by_another_process_is_left_alone(tiny, capsys):
    run_dir = config.load(None, tiny).run_dir()
    holder = held_by_another_process(run_dir / "locks" / "ticket.lock")  # as another process training the ticket would
    try:
        assert cli.main(["run", "experiments/quickstart.yaml", *tiny]) == 0
        err = capsys.readouterr().err
        assert "ticket of" in err and f"being trained by another process (host {os.uname().nodename} pid {os.getpid()}" in err
        assert not (run_dir / "results.jsonl").exists() and not (run_dir / "level_00").exists()
    finally:
        holder.close()


@pytest.mark.slow
def test_controls_follow_a_ticket_trained_by_another_process_level_by_level(tiny, monkeypatch, capsys):
    base = ["run", "experiments/quickstart.yaml", *tiny, "--train.duration=20ep", "--train.eval_every=1ep", "--train.checkpoint_every=1ep"]
    run_dir = config.load(None, base[2:]).run_dir()
    ticket = subprocess.Popen([sys.executable, "-m", "lth.cli", *base, "--arms=[ticket]"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not locks.held_elsewhere(run_dir / "locks" / "ticket.lock"):
        assert time.time() < deadline and ticket.poll() is None, "the ticket process never started training"
        time.sleep(0.02)
    monkeypatch.setattr(locks, "WAIT_SECONDS", 0.05)
    assert cli.main([*base, "--arms=[reinit,random_prune]"]) == 0
    assert ticket.wait(timeout=300) == 0, ticket.stderr.read()[-2000:]
    assert "waiting for the ticket's level 0, trained by another process" in capsys.readouterr().err
    rows = {(r["level"], r["arm"]): r for r in result_rows(run_dir)}
    assert sorted(rows) == sorted([(0, "ticket")] + [(lvl, a) for lvl in (1, 2) for a in ("ticket", "reinit", "random_prune")])
    for lvl in (1, 2):
        assert rows[lvl, "reinit"]["mask_sha256"] == rows[lvl, "ticket"]["mask_sha256"]
