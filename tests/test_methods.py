"""Pruning methods and schedules beyond iterative magnitude pruning, under the same arms and controls."""

import signal

import pytest
import torch
from conftest import prune, result_rows, signal_after_step, without_timing

from lth import cli, config, imp
from lth import masks as M
from lth.imp import Run, train_levels
from lth.methods import METHODS
from lth.preemption import REQUEUE
from lth.schedules import gradual

GRADUAL = ["--prune.schedule=gradual", "--prune.target=0.2", "--prune.levels=1", "--prune.begin_step=10", "--prune.end_step=30", "--prune.frequency=5"]


def test_nm_keeps_exactly_n_of_every_m_along_the_input_dimension():
    g = torch.Generator().manual_seed(0)
    weights = {"fc.weight": torch.randn(6, 16, generator=g), "conv.weight": torch.randn(5, 8, 3, 3, generator=g), "out.weight": torch.randn(3, 6, generator=g)}
    fractions = {"fc.weight": 0.5, "conv.weight": 0.5, "out.weight": 0.0}
    masks = prune("nm", weights, M.ones_like(weights), fractions)
    assert masks["fc.weight"].view(6, 4, 4).sum(-1).eq(2).all()
    per_group = masks["conv.weight"].permute(0, 2, 3, 1).reshape(5, 3, 3, 2, 4).sum(-1)  # input channels in fours
    assert per_group.eq(2).all()
    assert masks["out.weight"].all(), "a dense layer stays dense"
    # The kept two are the two largest of their four.
    groups = weights["fc.weight"].abs().view(6, 4, 4)
    kept = masks["fc.weight"].view(6, 4, 4)
    assert (groups[kept].view(6, 4, 2).min(-1).values >= groups[~kept].view(6, 4, 2).max(-1).values).all()
    # Pruning again only removes: a group with fewer than N remaining keeps what it has.
    previous = dict(masks)
    previous["fc.weight"] = masks["fc.weight"].clone()
    previous["fc.weight"][0, :4] = torch.tensor([True, False, False, False])
    again = prune("nm", weights, previous, fractions)
    assert all(not (again[n] & ~previous[n]).any() for n in again) and again["fc.weight"][0, :4].sum() == 1


def test_oneshot_is_one_level_of_iterative_at_the_same_sparsity(tiny, tmp_path):
    runs = {}
    for name, extra in {"oneshot": ["--prune.schedule=oneshot", "--prune.target=0.3"], "iterative": ["--prune.fraction=0.7"]}.items():
        run = Run.open(config.load(None, tiny + ["--prune.levels=1", f"--out_dir={tmp_path / name}", "--arms=[ticket,reinit]", *extra]), progress=False)
        train_levels([run], pack=1)
        runs[name] = run
    one, it = ([{k: v for k, v in r.items() if k != "run_id"} for r in without_timing(result_rows(r.dir.root))] for r in runs.values())
    assert one == it
    assert one[1]["weights_remaining"] == pytest.approx(0.3, abs=0.01)
    assert M.sha256(runs["oneshot"].dir.load(runs["oneshot"].dir.mask(1))) == M.sha256(runs["iterative"].dir.load(runs["iterative"].dir.mask(1)))


def test_every_arm_trains_on_a_2_4_mask(tiny):
    arms = "--arms=[ticket,reinit,random_prune,scratch_b,finetune,lr_rewind]"
    args = tiny + ["--prune.method=nm", "--prune.nm=[2,4]", "--prune.schedule=oneshot", "--prune.target=0.5", "--prune.levels=1", arms]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    rows = {r["arm"]: r for r in result_rows(run_dir) if r["level"] == 1}
    assert len(rows) == 6 and all(r["weights_remaining"] == 0.5 for r in rows.values())
    ticket = torch.load(run_dir / "level_01" / "mask.pt")
    for name, mask in ticket.items():
        assert mask.view(mask.shape[0], -1, 4).sum(-1).eq(2).all(), name
    final = torch.load(run_dir / "level_01" / "ticket" / "final.ckpt", weights_only=False)["state_dict"]
    for name, mask in ticket.items():
        assert torch.all(final[f"model.{name}"][~mask] == 0)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prune.method=nm", "--prune.nm=[2,4]", "--model=resnet20"], "prune.nm: conv.weight has input dimension 3, not a multiple of m = 4"),
        (["--prune.method=nm", "--prune.nm.n=0"], "prune.nm: the method nm needs 0 < n < m"),
        (["--prune.method=nm", "--prune.nm={n: 4, m: 2}"], "prune.nm: the method nm needs 0 < n < m"),
        (["--prune.method=nm", "--prune.nm=[2,4,8]"], "prune.nm: expected a mapping of n, m, or a list of at most 2"),
        (["--prune.nm=[2,4]"], "prune.nm: only the method nm uses it"),
        (["--prune.schedule=oneshot", "--prune.levels=1", "--prune.target=1.0"], "prune.oneshot.target: the oneshot schedule needs the fraction of weights"),
        (["--prune.schedule=oneshot", "--prune.levels=1", "--prune.target=0"], "in (0, 1), got 0.0"),
        (["--prune.schedule=oneshot", "--prune.target=0.2"], "prune.levels: the oneshot schedule has one pruned level"),
        (["--prune.target=0.2"], "prune.target: only the schedule earlybird, gradual or oneshot uses it, not iterative"),
        (GRADUAL[:-1], "prune.gradual.begin_step, end_step, frequency: the gradual schedule needs all three"),
        ([*GRADUAL[:3], "--prune.begin_step=3", "--prune.end_step=30", "--prune.frequency=5"], "need rewind step (7) <= begin (3)"),
        ([*GRADUAL[:4], "--prune.end_step=99", "--prune.frequency=5"], "<= the end of training (36)"),
        ([*GRADUAL[:5], "--prune.frequency=0"], "prune.gradual.frequency: must lie in [1, end_step - begin_step = 20], got 0"),
        ([*GRADUAL, "--prune.method=nm", "--prune.nm=[2,4]"], "prune.method: the gradual schedule prunes by magnitude, not nm"),
        (["--prune.frequency=5"], "prune.frequency: only the schedule gradual uses it, not iterative"),
    ],
)
def test_bad_combinations_stop_before_any_training(tiny, tmp_path, capsys, extra, message):
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--data.name=synthetic", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()



def test_the_agp_formula():
    """Zhu & Gupta (2017), eq. 1 with s_i = 0: s_t = s_f (1 - (1 - (t - t0)/(n Δt))³) at the pruning steps only."""
    assert gradual.sparsity(10, 10, 30, 5, 0.8) == 0.0
    assert gradual.sparsity(15, 10, 30, 5, 0.8) == pytest.approx(0.8 * (1 - 0.75**3))
    assert gradual.sparsity(30, 10, 30, 5, 0.8) == pytest.approx(0.8)
    assert gradual.sparsity(12, 10, 30, 5, 0.8) is None and gradual.sparsity(35, 10, 30, 5, 0.8) is None


def test_gradual_pruning_follows_the_formula_and_every_arm_trains_on_its_final_mask(tiny, monkeypatch):
    seen, prune = [], gradual.GradualPruning.on_train_batch_end

    def record(self, trainer, pl_module, *args):
        prune(self, trainer, pl_module, *args)
        masks = pl_module.masks()
        seen.append((trainer.global_step, sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())))

    monkeypatch.setattr(gradual.GradualPruning, "on_train_batch_end", record)
    scored, magnitude = [], METHODS["magnitude"].scores

    def read(scoring, params):  # what a criterion called mid-training is given
        scored.append(set(scoring.trained))
        return magnitude(scoring, params)

    monkeypatch.setattr(METHODS["magnitude"], "scores", read)
    arms = "--arms=[ticket,reinit,random_prune,scratch_b,finetune,lr_rewind]"
    args = tiny + GRADUAL + [arms]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    module = Run.open(config.load(None, args)).build_module(0)
    total = sum(p.numel() for p in module.weights().values())
    network = module.model
    # The network's whole state, biases and masks included, as at a level boundary: a criterion may build the network from it.
    assert scored and all(keys == set(network.state_dict()) for keys in scored)
    pruning_steps = {step: kept for step, kept in seen if gradual.sparsity(step, 10, 30, 5, 0.8) is not None}
    assert sorted(pruning_steps) == [10, 15, 20, 25, 30]  # the ticket of level 1 trains steps 8 to 36
    for step, kept in pruning_steps.items():
        assert kept == pytest.approx(1 - gradual.sparsity(step, 10, 30, 5, 0.8), abs=1.5 / total), step
    assert all(kept == pytest.approx(0.2, abs=1.5 / total) for step, kept in seen if step >= 30)

    rows = {(r["level"], r["arm"]): r for r in result_rows(config.load("experiments/quickstart.yaml", args).run_dir())}
    ticket = rows[1, "ticket"]
    assert ticket["weights_remaining"] == pytest.approx(0.2, abs=1.5 / total) and rows[0, "ticket"]["weights_remaining"] == 1.0
    assert ticket["early_stop_step"] >= 30, "early stopping may only choose the network with its final mask"
    for arm in ["reinit", "scratch_b", "finetune", "lr_rewind"]:
        assert rows[1, arm]["mask_sha256"] == ticket["mask_sha256"], arm
    assert rows[1, "random_prune"]["weights_remaining_per_layer"] == ticket["weights_remaining_per_layer"]


@pytest.mark.slow
def test_a_run_stopped_mid_gradual_pruning_resumes_to_identical_results(tiny, tmp_path, monkeypatch, capsys):
    args = ["run", "experiments/quickstart.yaml", *tiny, *GRADUAL]
    assert cli.main(args[:-len(GRADUAL) - 2] + [f"--out_dir={tmp_path / 'reference'}", "--name=tiny", *GRADUAL]) == 0
    expected = result_rows(config.load(None, tiny[:-2] + [f"--out_dir={tmp_path / 'reference'}", "--name=tiny"] + GRADUAL).run_dir())
    undo = signal_after_step(monkeypatch, lambda member, step: member.level == 1 and step == 17)  # after pruning steps 10 and 15, before 20
    assert cli.main(args) == REQUEUE
    undo()
    assert cli.main(args) == 0
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    assert without_timing(result_rows(config.load(None, tiny + GRADUAL).run_dir())) == without_timing(expected)


def test_early_stopping_of_a_gradually_pruned_ticket_looks_only_at_its_final_mask():
    history = [{"step": s, "val_loss": loss} for s, loss in [(10, 0.9), (20, 0.5), (30, 0.7), (40, 0.6), (50, 0.6)]]
    assert imp.early_stop(history)["step"] == 20
    assert imp.early_stop([h for h in history if h["step"] >= 30])["step"] == 40  # the earliest of the tied best
