"""Pruning methods and schedules beyond iterative magnitude pruning, under the same arms and controls."""

import pytest
import torch
from conftest import result_rows, without_timing

from lth import cli, config
from lth import masks as M
from lth.imp import Run, train_levels
from lth.methods import nm


def test_nm_keeps_exactly_n_of_every_m_along_the_input_dimension():
    g = torch.Generator().manual_seed(0)
    weights = {"fc.weight": torch.randn(6, 16, generator=g), "conv.weight": torch.randn(5, 8, 3, 3, generator=g), "out.weight": torch.randn(3, 6, generator=g)}
    fractions = {"fc.weight": 0.5, "conv.weight": 0.5, "out.weight": 0.0}
    masks = nm.prune(weights, M.ones_like(weights), fractions, 2, 4)
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
    again = nm.prune(weights, previous, fractions, 2, 4)
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
        (["--prune.method=nm", "--prune.nm=[2,4]", "--model=resnet20"], "prune.nm: conv.weight has input dimension 3, not a multiple of M = 4"),
        (["--prune.method=nm"], "prune.nm: the method nm needs [N, M] with 0 < N < M"),
        (["--prune.method=nm", "--prune.nm=[4,2]"], "prune.nm: the method nm needs [N, M] with 0 < N < M"),
        (["--prune.nm=[2,4]"], "prune.nm: only the method nm uses it"),
        (["--prune.schedule=oneshot", "--prune.levels=1", "--prune.target=1.0"], "prune.target: the oneshot schedule needs the fraction of weights"),
        (["--prune.schedule=oneshot", "--prune.levels=1", "--prune.target=0"], "in (0, 1), got 0.0"),
        (["--prune.schedule=oneshot", "--prune.target=0.2"], "prune.levels: the oneshot schedule has one pruned level"),
        (["--prune.target=0.2"], "prune.target: only the oneshot schedule prunes to a target"),
    ],
)
def test_bad_combinations_stop_before_any_training(tiny, tmp_path, capsys, extra, message):
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--data.name=synthetic", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
