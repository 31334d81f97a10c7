"""One run across processes (Lightning's DDP over gloo, 2 processes on this CPU): the same experiment as on one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, result_rows, without_timing

from lth import config, data
from lth.run_dir import RunDir

RUNNER = str(Path(__file__).with_name("ddp_run.py"))
QUICKSTART = str(Path("experiments/quickstart.yaml").resolve())
# A few hundred steps: 10 epochs of 12 per level, three levels, a pack of the ticket and its control.
LONGER = [*TINY, "--arms=[ticket,reinit]", "--train.duration=10ep", "--train.eval_every=12it", "--train.checkpoint_every=12it"]


def lth(tmp_path, out_dir, *extra, hooks=(), devices=1):
    command = [sys.executable, RUNNER, *hooks, "run", QUICKSTART, *LONGER, f"--out_dir={out_dir}", "--name=ddp", f"--train.devices={devices}", *extra]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, start_new_session=True)


def run_dir(out_dir, *extra):
    return config.load(QUICKSTART, [*LONGER, f"--out_dir={out_dir}", "--name=ddp", *extra]).run_dir()


def checkpoints(directory: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {str(p.relative_to(directory)): RunDir.load(p)["state_dict"] for p in sorted(directory.glob("level_*/*/final.ckpt"))}


@pytest.mark.slow
def test_two_ranks_train_the_experiment_of_one_in_float64(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for out_dir, devices in ((one, 1), (two, 2)):
        done = lth(tmp_path, out_dir, hooks=["--float64"], devices=devices)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = result_rows(run_dir(one)), result_rows(run_dir(two))
    assert len(a) == len(b) == 5 and sum(r["steps_trained"] for r in a) > 300
    assert [r["world_size"] for r in a] == [1] * 5 and [r["world_size"] for r in b] == [2] * 5
    for x, y in zip(a, b):
        assert x["mask_sha256"] == y["mask_sha256"] and x["early_stop_step"] == y["early_stop_step"]
        for key in ("test_acc", "test_acc_at_early_stop", "best_val_acc", "early_stop_val_acc"):
            assert x[key] == pytest.approx(y[key], abs=1e-6)
    ours, theirs = checkpoints(run_dir(one)), checkpoints(run_dir(two))
    assert ours.keys() == theirs.keys() and len(ours) == 5
    for name in ours:
        for key, tensor in ours[name].items():
            if tensor.is_floating_point():
                assert tensor.dtype == torch.float64 and torch.allclose(tensor, theirs[name][key], rtol=0, atol=1e-10), (name, key)
            else:
                assert torch.equal(tensor, theirs[name][key]), (name, key)


def test_the_ranks_batches_together_are_the_single_process_batch():
    n, b, seeds = 40, 8, [5, 9]
    x, y = torch.arange(n)[:, None], torch.arange(n) % 3
    whole = data.TrainBatches(x, y, b, seeds, False, lambda v: v, lambda: 6)
    shares = [data.TrainBatches(x, y, b, seeds, False, lambda v: v, lambda: 6, (rank, 2)) for rank in (0, 1)]
    for (wx, wy), *parts in zip(whole, *shares):
        assert torch.equal(torch.cat([px for px, _ in parts]), wx) and torch.equal(torch.cat([py for _, py in parts]), wy)
        assert all(len(px) == b // 2 for px, _ in parts)
    val = [data.EvalBatches(x, y, 7, lambda v: v, (rank, 2)) for rank in (0, 1)]
    evaluated = sorted(int(v) for e in val for xs, _ in e for v in xs.flatten())
    assert evaluated == list(range(n))  # every example once, over the ranks


@pytest.mark.slow
def test_rank0_alone_writes_and_masks_that_differ_across_ranks_stop_the_run(tmp_path):
    out_dir = tmp_path / "runs"
    done = lth(tmp_path, out_dir, "--prune.levels=1", "--train.duration=2ep", hooks=["--forbid-writes-off-rank0", str(out_dir)], devices=2)
    assert done.returncode == 0, done.stderr[-3000:]  # rank 1 never opened a file for writing there
    assert len(result_rows(run_dir(out_dir, "--prune.levels=1", "--train.duration=2ep"))) == 3

    corrupted = lth(tmp_path, tmp_path / "corrupt", "--prune.levels=1", hooks=["--corrupt-masks-on-rank1"], devices=2)
    assert corrupted.returncode == 2, corrupted.stderr[-3000:]
    errors = [line for line in corrupted.stderr.splitlines() if line.startswith("lth: error")]
    assert len(errors) == 1 and "level 0 ticket: rank 1 holds other masks than rank 0" in errors[0]
    assert not list((tmp_path / "corrupt").rglob("final.ckpt"))  # stopped before training


@pytest.mark.slow
def test_sigkill_of_the_job_or_of_one_rank_mid_level_then_rerun_gives_the_uninterrupted_results(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert lth(tmp_path, reference, devices=2).returncode == 0
    # The whole job mid-level 0 after a checkpoint (every 12 steps); rank 1 alone mid-level 1 after the rewind,
    # which takes rank 0 down with it (Lightning's launcher watches the ranks it started).
    for point in ("0:30", "1:70:1"):
        stopped = lth(tmp_path, killed, hooks=["--kill-at", point], devices=2)
        assert stopped.returncode != 0 and not (run_dir(killed) / "level_01" / "ticket" / "final.ckpt").exists(), stopped.stderr[-3000:]
    finished = lth(tmp_path, killed, devices=2)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert without_timing(result_rows(run_dir(killed))) == without_timing(result_rows(run_dir(reference)))


def test_every_rank_joins_the_rewind_save_rank_0_decides_on(tmp_path, monkeypatch):
    """Saving the rewind point is collective. A rank that checked for the file after rank 0 had written it skipped
    the save and left rank 0 in its barrier for ever (a two-rank CI run hung). The decision is now rank 0's."""
    from lth import distributed
    from lth.rewinding import RewindCapture

    path = tmp_path / "rewind.ckpt"
    path.write_bytes(b"written by rank 0 a moment ago")  # what this rank sees when it looks
    monkeypatch.setattr(distributed, "broadcast", lambda value: True)  # rank 0 looked before it wrote: missing

    class Trainer:
        global_step, saved = 0, []

        def save_checkpoint(self, name):
            self.saved.append(name)

    trainer = Trainer()
    RewindCapture(0, [path]).on_train_start(trainer, None)
    assert trainer.saved == ["rewind.ckpt"]
    monkeypatch.setattr(distributed, "broadcast", lambda value: False)  # rank 0 found it: nobody saves
    RewindCapture(0, [tmp_path / "absent.ckpt"]).on_train_start(trainer, None)
    assert trainer.saved == ["rewind.ckpt"]
