"""Instability analysis: the barrier, interpolation under masks, the two copies, batch-norm recomputation,
the replayed rewind state, resume and bad input."""

import json
import os
import signal

import pytest
import torch
from conftest import result_rows

from lth import cli, config, imp, stability
from lth.models import MODELS
from lth.module import MaskedModule
from lth.preemption import REQUEUE
from lth.run_dir import FINAL, START, RunDir


def test_the_barrier_is_the_peak_above_the_mean_of_the_ends():
    assert stability.barrier([0.2, 0.2, 0.2]) == 0.0
    assert stability.barrier([0.1, 0.3, 0.25, 0.2]) == pytest.approx(0.3 - 0.15)
    assert stability.barrier([0.3, 0.2, 0.1]) == pytest.approx(0.3 - 0.2), "a monotone curve peaks at an end"


def test_interpolation_keeps_pruned_weights_at_zero_and_is_exact_at_its_ends():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(8, 8, generator=g) > 0.5
    a = {"w": torch.randn(8, 8, generator=g) * mask, "w_mask": mask, "steps": torch.tensor(3)}
    b = {"w": torch.randn(8, 8, generator=g) * mask, "w_mask": mask, "steps": torch.tensor(5)}
    for alpha in (0.0, 0.3, 1.0):
        mid = stability.interpolate(a, b, alpha)
        assert not mid["w"][~mask].any() and torch.equal(mid["w_mask"], mask)
    assert torch.equal(stability.interpolate(a, b, 0.0)["w"], a["w"]) and torch.allclose(stability.interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.equal(stability.interpolate(a, a, 0.5)["w"], a["w"])


def test_batch_norm_recomputation_changes_the_statistics_and_not_the_weights():
    torch.manual_seed(0)
    model = MODELS["resnet20"]((3, 8, 8), 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(16, 3, 8, 8) * 3 + 1, None) for _ in range(3)]
    stability.recompute_batch_norm(model, batches)
    after = model.state_dict()
    assert not model.training
    assert all(torch.equal(after[k], before[k]) for k, _ in model.named_parameters())
    assert not torch.equal(after["bn.running_mean"], before["bn.running_mean"])
    assert model.bn.momentum == 0.1, "PyTorch's running-average momentum is restored afterwards"


def _study(tiny, *extra):
    return ["stability", "experiments/quickstart.yaml", *tiny, "--prune.levels=1", "--alphas=3", *extra]


@pytest.mark.slow
def test_two_copies_start_alike_under_the_masks_and_see_different_data(tiny):
    assert cli.main(_study(tiny, "--levels=[0,1]", "--rewind=[7it]")) == 0
    cfg = config.load("experiments/quickstart.yaml", [*tiny, "--prune.levels=1"])
    run_dir = RunDir(cfg.run_dir())
    rows = [json.loads(line) for line in (run_dir.root / "stability.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["level"], r["rewind_step"]) for r in rows] == [("copies", 0, 7), ("copies", 1, 7)]
    ticket_mask = run_dir.load(run_dir.mask(1))
    for row in rows:
        assert len(set(row["data_order_seeds"])) == 2 and row["alpha"] == [0.0, 0.5, 1.0]
        assert row["test_barrier"] == pytest.approx(stability.barrier(row["test_error"]))
        copies = [run_dir.root / "stability" / f"level_{row['level']:02d}" / "rewind_7" / f"copy_{c}" for c in (0, 1)]
        starts = [run_dir.load(c / START)["state_dict"] for c in copies]
        finals = [run_dir.load(c / FINAL)["state_dict"] for c in copies]
        assert all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])
        assert starts[0]["model.layers.0.weight"].ne(run_dir.load(run_dir.rewind)["state_dict"]["model.layers.0.weight"]).any() == (row["level"] == 1)
        assert not torch.equal(finals[0]["model.layers.0.weight"], finals[1]["model.layers.0.weight"]), "different data orders"
        for final in finals:
            for name, mask in ticket_mask.items():
                expected = mask if row["level"] == 1 else torch.ones_like(mask)
                assert torch.equal(final[f"model.{name}_mask"], expected) and not final[f"model.{name}"][~expected].any()
    report = (run_dir.root.parent / "stability_report" / "report.md").read_text()
    assert f"| 1 | {rows[1]['weights_remaining']:.2%} | 7 | {rows[1]['test_barrier']:+.4f} | {rows[1]['train_barrier']:+.4f} | 1 |" in report
    assert (run_dir.root / "stability" / "barrier.png").stat().st_size > 0
    # The ticket's chain was trained once, and a second call measures nothing again.
    assert [r["arm"] for r in result_rows(run_dir.root)] == ["ticket", "ticket"]
    before = (run_dir.root / "stability.jsonl").read_bytes()
    assert cli.main(_study(tiny, "--levels=[0,1]", "--rewind=[7it]")) == 0
    assert (run_dir.root / "stability.jsonl").read_bytes() == before


def test_between_levels_interpolates_under_the_later_levels_mask(tiny):
    assert cli.main(_study(tiny, "--prune.levels=2", "--levels=[2]", "--rewind=[7it]", "--between_levels=true")) == 0
    run_dir = RunDir(config.load("experiments/quickstart.yaml", [*tiny, "--prune.levels=2"]).run_dir())
    rows = [json.loads(line) for line in (run_dir.root / "stability.jsonl").read_text().splitlines()]
    pairs = [r for r in rows if r["kind"] == "levels"]
    assert [(r["from_level"], r["level"]) for r in pairs] == [(0, 1), (1, 2)]
    results = {r["level"]: r for r in result_rows(run_dir.root)}
    for pair in pairs:
        # α = 1 is the later level's own trained network: its test error is the one its results line reports.
        assert pair["test_error"][-1] == pytest.approx(1 - results[pair["level"]]["test_acc"])
        assert pair["weights_remaining"] == results[pair["level"]]["weights_remaining"]
    report = (run_dir.root / "stability" / "report.md").read_text()
    assert "| 0 → 1 |" in report and "| 1 → 2 |" in report


def test_a_replayed_rewind_state_is_the_dense_runs_own(tiny, tmp_path):
    """The run rewinds to step 7; a study of step 7 on the same run with `rewind: 0` replays the dense run."""
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--prune.levels=0"]) == 0
    own = RunDir(config.load("experiments/quickstart.yaml", [*tiny, "--prune.levels=0"]).run_dir()).rewind
    other = [*tiny[:-2], f"--out_dir={tmp_path / 'other'}", "--name=tiny", "--prune.rewind=0"]
    assert cli.main(["stability", "experiments/quickstart.yaml", *other, "--prune.levels=0", "--rewind=[7it]", "--alphas=2"]) == 0
    replayed = RunDir(config.load("experiments/quickstart.yaml", other).run_dir()).root / "stability" / "rewind_7.ckpt"
    a, b = RunDir.load(own), RunDir.load(replayed)
    assert a["global_step"] == b["global_step"] == 7
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.slow
def test_a_study_killed_mid_copy_resumes_to_the_same_lines(tiny, tmp_path, monkeypatch):
    reference = [*tiny[:-2], f"--out_dir={tmp_path / 'reference'}", "--name=tiny"]
    assert cli.main(_study(reference, "--rewind=[0,7it]")) == 0
    expected = (RunDir(config.load("experiments/quickstart.yaml", [*reference, "--prune.levels=1"]).run_dir()).root / "stability.jsonl").read_text()
    step, calls = MaskedModule.optimizer_step, {"copies": 0}
    train = imp.train_pack

    def tracked(members, *rest):
        calls["copies"] += "stability" in members[0].dir.parts
        return train(members, *rest)

    def signalling_step(self, *a, **k):
        step(self, *a, **k)
        if calls["copies"] == 3 and self.global_step == 17:  # the second rewind point's first copy, mid-way
            os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(stability, "train_pack", tracked)
    monkeypatch.setattr(MaskedModule, "optimizer_step", signalling_step)
    # One copy per training call (no packing), so that the signal lands in a known copy.
    assert cli.main(_study(tiny, "--rewind=[0,7it]", "--pack=1")) == REQUEUE
    monkeypatch.setattr(MaskedModule, "optimizer_step", step)
    assert cli.main(_study(tiny, "--rewind=[0,7it]")) == 0
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    got = (RunDir(config.load("experiments/quickstart.yaml", [*tiny, "--prune.levels=1"]).run_dir()).root / "stability.jsonl").read_text()
    strip = lambda text: [{k: v for k, v in json.loads(line).items() if k != "run_id"} for line in text.splitlines()]  # noqa: E731
    assert strip(got) == strip(expected)


@pytest.mark.parametrize("extra, message", [
    (["--alphas=1"], "--alphas: the curve needs at least its two ends"),
    (["--rewind=[99ep]"], "--rewind: 99ep"),
    (["--levels=[4]"], "--levels: the run has levels 0 to 1"),
])
def test_bad_stability_input_stops_before_any_work(tiny, tmp_path, capsys, extra, message):
    assert cli.main(_study(tiny, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "runs").exists(), "nothing written"
