"""train.precision: bf16-mixed trains under autocast with fp32 weights and masks, resumes bit for bit, and keeps
pruned weights exactly 0."""

import os
import signal

import pytest
import torch
from conftest import result_rows, without_timing

from lth import cli, config, imp
from lth.module import MaskedModule
from lth.preemption import REQUEUE
from lth.run_dir import FINAL, RunDir

BF16 = ["--train.precision=bf16-mixed", "--prune.levels=1"]


def _final(args, level=1):
    run_dir = RunDir(config.load("experiments/quickstart.yaml", args).run_dir())
    return run_dir.load(run_dir.arm(level, "ticket") / FINAL)["state_dict"]


def test_bf16_changes_the_arithmetic_and_keeps_weights_masks_and_zeros_exact(tiny, tmp_path):
    fp32 = [*tiny[:-2], f"--out_dir={tmp_path / 'fp32'}", "--name=tiny", "--prune.levels=1"]
    assert cli.main(["run", "experiments/quickstart.yaml", *fp32]) == 0
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, *BF16]) == 0
    assert config.load(None, [*tiny, *BF16]).run_id() != config.load(None, fp32).run_id(), "a different computation, a different run"
    assert "precision" not in config.load(None, fp32).identity()["train"], "fp32 runs keep their earlier directories"
    ours, theirs = _final([*tiny, *BF16]), _final(fp32)
    weight = "model.layers.0.weight"
    assert ours[weight].dtype == torch.float32 and not torch.equal(ours[weight], theirs[weight])
    for name, mask in ours.items():
        if name.endswith("_mask"):
            assert not ours[name[: -len("_mask")]][~mask].any(), f"a pruned weight of {name} moved"


@pytest.mark.slow
def test_a_bf16_run_stopped_mid_level_resumes_bit_for_bit(tiny, tmp_path, monkeypatch):
    reference = [*tiny[:-2], f"--out_dir={tmp_path / 'reference'}", "--name=tiny", *BF16]
    assert cli.main(["run", "experiments/quickstart.yaml", *reference]) == 0
    step, level, train = MaskedModule.optimizer_step, {}, imp.train_pack

    def tracked(members, *rest):
        level["now"] = members[0].level
        return train(members, *rest)

    def signalling_step(self, *a, **k):
        step(self, *a, **k)
        if level["now"] == 1 and self.global_step == 17:  # between the checkpoints at 15 and 20
            os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(imp, "train_pack", tracked)
    monkeypatch.setattr(MaskedModule, "optimizer_step", signalling_step)
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, *BF16]) == REQUEUE
    monkeypatch.setattr(MaskedModule, "optimizer_step", step)
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, *BF16]) == 0
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "run_id"} for r in without_timing(rows)]  # noqa: E731
    assert strip(result_rows(config.load(None, [*tiny, *BF16]).run_dir())) == strip(result_rows(config.load(None, reference).run_dir()))
    ours, theirs = _final([*tiny, *BF16]), _final(reference)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_an_unknown_precision_stops_before_training(tiny, capsys):
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--train.precision=16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.precision: one of 32, bf16-mixed, got '16'" in err[0]
