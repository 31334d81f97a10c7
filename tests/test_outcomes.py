"""Honest outcomes: a run that cannot go on says why in one line and keeps what it finished; a finished level
keeps only what later work reads; a kill's leftovers are cleaned up; a full disk costs nothing but time."""

import errno
import multiprocessing
import os
import socket

import pytest
from conftest import held_by_another_process, result_rows, without_timing

from lth import cli, config, ranking
from lth.files import atomic_write
from lth.run_dir import RunDir

RUN = ["run", "experiments/quickstart.yaml"]


def test_levels_that_would_empty_a_layer_are_refused_before_any_work(tiny, tmp_path, capsys):
    """Layerwise 90% per level: the 4-class output layer's 400 weights keep 40, then 4, then none."""
    assert cli.main([*RUN, *tiny, "--prune.strategy=layerwise", "--prune.fraction=0.9", "--prune.levels=5"]) == 2
    assert capsys.readouterr().err.splitlines() == ["lth: error: prune.levels: level 3 would remove all 4 weights left in layers.2.weight (fraction 0.9); "
                                                    "at most 2 levels, got 5, or prune it more slowly (prune.layer_fractions)"]
    assert not (tmp_path / "runs").exists()


def test_a_level_that_would_empty_a_layer_stops_with_the_levels_before_it_recorded(tiny, capsys, monkeypatch):
    """As a global threshold can empty one layer of its group, which the configuration cannot foresee: the same
    layerwise run with that check left out meets the driver's own."""
    monkeypatch.setattr(ranking.Weights, "check_levels", lambda *given: None)
    args = tiny + ["--prune.strategy=layerwise", "--prune.fraction=0.9", "--prune.levels=5"]
    assert cli.main([*RUN, *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lth:")]
    assert err == ["lth: error: level 3 would leave layers.2.weight with no weights: the levels before it are recorded; lower prune.levels to 2 or "
                   "prune that layer more slowly (prune.layer_fractions)"]
    run_dir = RunDir(config.load(None, args).run_dir())
    assert [r.level for r in run_dir.rows()] == [0, 1, 2] and not run_dir.mask(3).exists()
    assert cli.main([*RUN, *tiny, "--prune.strategy=layerwise", "--prune.fraction=0.9", "--prune.levels=2"]) == 0  # the same run, finished


def test_a_finished_level_keeps_its_final_checkpoint_and_not_its_last_position(tiny):
    assert cli.main([*RUN, *tiny, "--prune.levels=1", "--arms=[ticket,reinit]"]) == 0
    run_dir = RunDir(config.load(None, tiny).run_dir())
    for level, arm in ((0, "ticket"), (1, "ticket"), (1, "reinit")):
        files = sorted(p.name for p in run_dir.arm(level, arm).iterdir())
        assert files == (["final.ckpt"] if level == 0 else ["final.ckpt", "start.ckpt"]), (level, arm, files)


def _dead_pid() -> int:
    process = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    process.start()
    process.join()
    return process.pid


def test_temporary_files_of_killed_writers_are_removed_and_those_of_live_ones_kept(tiny):
    run_dir = config.load(None, tiny).run_dir()
    host = socket.gethostname()
    orphan = run_dir / "level_00" / "ticket" / f".last.ckpt~{host}~{_dead_pid()}~abc123"
    live = run_dir / f".results.jsonl~{host}~{os.getpid()}~def456"
    elsewhere = run_dir / f".mask.pt~another-host~{_dead_pid()}~ghi789"
    for path in (orphan, live, elsewhere):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    assert cli.main([*RUN, *tiny, "--prune.levels=0"]) == 0
    assert not orphan.exists() and live.exists() and elsewhere.exists()


def test_a_full_disk_stops_in_one_line_and_the_rerun_ends_as_an_uninterrupted_run(tiny, tmp_path, capsys, monkeypatch):
    reference = tiny[:-2] + [f"--out_dir={tmp_path / 'reference'}", "--name=tiny"]
    assert cli.main([*RUN, *reference, "--prune.levels=1"]) == 0
    save, calls = RunDir.save, []

    def filling(obj, path):
        calls.append(path)
        if len(calls) == 9:  # mid-level 0: a last.ckpt after some evaluations
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        save(obj, path)

    monkeypatch.setattr(RunDir, "save", staticmethod(filling))
    assert cli.main([*RUN, *tiny, "--prune.levels=1"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lth:")]
    assert len(err) == 1 and "No space left on device; every file written before is whole" in err[0] and "resumes" in err[0]
    monkeypatch.setattr(RunDir, "save", staticmethod(save))
    assert cli.main([*RUN, *tiny, "--prune.levels=1"]) == 0
    expected = without_timing(result_rows(config.load(None, reference).run_dir()))
    assert without_timing(result_rows(config.load(None, tiny).run_dir())) == expected


@pytest.mark.slow
def test_arms_beside_one_another_process_trains_are_trained_not_skipped(tiny, capsys):
    """`--arms=[ticket,reinit]` while another process holds the ticket: this one trains reinit on the ticket's
    masks (here already made) instead of exiting 0 with nothing done."""
    assert cli.main([*RUN, *tiny, "--prune.levels=1"]) == 0
    run_dir = config.load(None, tiny).run_dir()
    holder = held_by_another_process(run_dir / "locks" / "ticket.lock")  # as another process training the ticket would
    try:
        assert cli.main([*RUN, *tiny, "--prune.levels=1", "--arms=[ticket,reinit]"]) == 0
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert "ticket of" in err and "this process trains reinit" in err
    assert {(r["level"], r["arm"]) for r in result_rows(run_dir)} == {(0, "ticket"), (1, "ticket"), (1, "reinit")}


def test_atomic_writes_leave_nothing_behind_when_the_target_cannot_be_replaced(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        atomic_write(tmp_path / "taken", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
