"""Dynamic sparse training (`rigl`, `set`): the drop-and-grow update by hand, ERK's densities, and the arms on a run:
their counts kept, their masks moved and enforced, their hooks confined to their own pack, a stop at an update step
resumed to the same results."""

import math
import signal
import sys
import types

import pytest
import torch
from conftest import result_rows, signal_after_step, without_timing

from lth import cli, config
from lth import masks as M
from lth.arms import ARMS
from lth.data import seeded_generator
from lth.dynamic_sparse import Params, drop_and_grow, drop_fraction, erk_counts
from lth.preemption import REQUEUE
from lth.run_dir import FINAL, RunDir

ARGS = ["--rigl.update_every=4", "--set.update_every=4", "--prune.levels=2"]


def test_rigl_drops_the_smallest_active_weights_and_grows_the_largest_gradients():
    weight = torch.tensor([0.5, -0.1, 0.0, 0.0, 0.3, 0.05])
    gradient = torch.tensor([0.0, 0.0, 0.9, 0.2, 0.0, 0.7])
    mask = torch.tensor([True, True, False, False, True, True])
    new, grown = drop_and_grow(weight, gradient, mask, 0.5, ARMS["rigl"].grow, torch.Generator())
    # Four active, int(0.5 × 4) = 2 move: 0.05 and -0.1 drop; of the five inactive after that, |g| 0.9 and 0.7 grow.
    assert new.tolist() == [True, False, True, False, True, True]
    assert grown.tolist() == [False, False, True, False, False, False]  # position 5 was active before: not new
    assert int(new.sum()) == int(mask.sum())


def test_set_grows_at_random_among_the_inactive_drawn_from_its_generator():
    weight, mask = torch.randn(200), torch.rand(200) < 0.3
    draws = [drop_and_grow(weight, torch.zeros(200), mask, 0.3, ARMS["set"].grow, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(draws[0][0], draws[1][0]) and not torch.equal(draws[0][0], draws[2][0])  # its seed decides, alone
    new, grown = draws[0]
    assert int(new.sum()) == int(mask.sum()) and not (grown & mask).any() and grown.sum() > 0
    moved = int(0.3 * int(mask.sum()))
    smallest = weight.abs().masked_fill(~mask, math.inf).argsort()[:moved]  # only these may go (a dropped one may grow back)
    assert set((mask & ~new).nonzero().flatten().tolist()) <= set(smallest.tolist()) and grown.sum() <= moved


def test_one_update_equals_rigl_torch_s(monkeypatch):
    """Against a maintained PyTorch implementation, rigl-torch 0.5.2 (McCreary, after Evci et al.'s code): the same
    drop fraction at the same step, and the same mask from the same weights, dense gradient and mask."""
    if "torchvision" not in sys.modules:  # rigl-torch imports it for two isinstance checks on ResNet blocks alone
        models = types.SimpleNamespace(resnet=types.SimpleNamespace(Bottleneck=type("Bottleneck", (), {}), BasicBlock=type("BasicBlock", (), {})))
        monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))
    from rigl_torch.RigL import RigLScheduler

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 30))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    reference = RigLScheduler(model, optimizer, dense_allocation=0.3, T_end=100, delta=10, alpha=0.3, grad_accumulation_n=1,
                              ignore_linear_layers=False)
    weight, mask = model[0].weight.detach().clone(), reference.backward_masks[0].clone()
    model(torch.randn(5, 40)).sum().backward()  # it masks the gradient it holds after its update
    gradient = torch.randn_like(weight)
    reference.backward_hook_objects[0].dense_grad = gradient  # the dense gradient its backward hook keeps
    reference.step = 20
    params = Params(update_every=10, drop_fraction=0.3, end=1.0)
    assert drop_fraction(20, params, 100) == pytest.approx(reference.cosine_annealing())
    reference._rigl_step()
    new, grown = drop_and_grow(weight, gradient, mask, drop_fraction(20, params, 100), ARMS["rigl"].grow, torch.Generator())
    assert torch.equal(new, reference.backward_masks[0].bool()) and grown.any()
    assert torch.equal(model[0].weight[grown], torch.zeros(int(grown.sum())))  # a new connection starts at 0 there too


def test_the_drop_fraction_anneals_by_a_cosine_and_stops_at_its_end():
    params = Params(update_every=10, drop_fraction=0.3, end=0.5)
    assert [drop_fraction(t, params, 100) for t in (0, 5, 50, 60)] == [None] * 4  # t < T_end (Evci et al. 2020, Algorithm 1)
    assert drop_fraction(10, params, 100) == pytest.approx(0.15 * (1 + math.cos(math.pi * 10 / 50)))
    assert drop_fraction(40, params, 100) < drop_fraction(10, params, 100)
    assert drop_fraction(25 * 2, Params(update_every=25, end=1.0), 100) == pytest.approx(0.15)  # half way, half of α


def test_erk_densities_follow_the_layer_shapes_and_keep_the_total():
    shapes = {"wide": (300, 100), "narrow": (100, 10), "out": (10, 10)}
    kept = 3_000
    counts = erk_counts(shapes, kept)
    assert counts["out"] == 100  # its density would pass 1: kept dense, the others scaled again
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    densities = {n: counts[n] / math.prod(s) for n, s in shapes.items()}
    assert densities["wide"] / densities["narrow"] == pytest.approx(raw["wide"] / raw["narrow"], rel=1e-3)
    assert abs(sum(counts.values()) - kept) <= len(shapes) / 2


def test_the_arms_keep_their_counts_move_their_masks_and_stay_in_their_own_pack(tiny, tmp_path):
    args = tiny + ARGS + ["--seed=[0,1]", "--arms=[ticket,scratch_e,rigl,set]"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    for cfg in config.load_seeds(None, args):
        rows = {(r["level"], r["arm"]): r for r in result_rows(cfg.run_dir())}
        run = RunDir(cfg.run_dir())
        for level in (1, 2):
            ticket = rows[level, "ticket"]
            # scratch_e packs with nothing that moves masks: its mask is the ticket's, untouched by rigl's or set's hooks.
            assert rows[level, "scratch_e"]["mask_sha256"] == ticket["mask_sha256"]
            for arm in ("rigl", "set"):
                row = rows[level, arm]
                assert row["weights_remaining_per_layer"] == ticket["weights_remaining_per_layer"], arm  # counts never change
                start = M.random_like(run.load(run.mask(level)), seeded_generator(cfg.seed, arm, level))
                assert row["mask_sha256"] not in (M.sha256(start), ticket["mask_sha256"]), arm  # it moved
                state = run.load(run.arm(level, arm) / FINAL)["state_dict"]
                for name in start:  # exactly enforced: a weight outside its final mask is 0
                    weight, mask = state[f"model.{name}"], state[f"model.{name}_mask"]
                    assert not weight[~mask].any(), (arm, name)


def test_erk_arms_train_at_the_ticket_s_overall_sparsity(tiny):
    args = tiny + ARGS + ["--arms=[ticket,rigl]", "--rigl.distribution=erk", "--prune.levels=1"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    rows = {r["arm"]: r for r in result_rows(config.load(None, args).run_dir()) if r["level"] == 1}
    layers = rows["ticket"]["weights_remaining_per_layer"]
    assert rows["rigl"]["weights_remaining_per_layer"] != layers
    total = sum(RunDir(config.load(None, args).run_dir()).load(RunDir(config.load(None, args).run_dir()).mask(1))[n].numel() for n in layers)
    assert abs(rows["rigl"]["weights_remaining"] - rows["ticket"]["weights_remaining"]) <= len(layers) / total


def test_every_update_keeps_each_layer_s_count_and_starts_new_connections_at_zero(tiny, monkeypatch):
    """Seen from inside training, at each update: per layer as many connections after as before, and each new one
    (inactive before) a weight of exactly 0 with its momentum 0 (Evci et al. 2020, §3: "initialized to zero")."""
    from lth import dynamic_sparse

    seen, update = [], dynamic_sparse.DropAndGrow.on_train_batch_end

    def watched(self, trainer, pl_module, *args):
        before = {n: m.clone() for n, m in pl_module.masks().items()}
        update(self, trainer, pl_module, *args)
        state = trainer.optimizers[0].state
        for name, mask in pl_module.masks().items():
            weight = pl_module.model.get_parameter(name)
            new = mask & ~before[name]
            seen.append((trainer.global_step, int(before[name].sum()), int(mask.sum()), int(new.sum()),
                         bool(weight[new].any()), bool(state[weight]["momentum_buffer"][new].any())))

    monkeypatch.setattr(dynamic_sparse.DropAndGrow, "on_train_batch_end", watched)
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, *ARGS, "--arms=[ticket,rigl,set]", "--prune.levels=1"]) == 0
    updates = [entry for entry in seen if entry[0] % 4 == 0 and entry[0] < 0.75 * 36]
    assert updates and sum(new for *_, new, _, _ in updates) > 0  # connections moved at the update steps
    assert all(before == after for _, before, after, *_ in seen)
    assert not any(weight or momentum for *_, weight, momentum in seen)


@pytest.mark.parametrize("extra, message", [
    (["--arms=[ticket,rigl]", "--prune.method=channel", "--model=mnist1d_cnn"], "arms: rigl moves single connections as it trains"),
    (["--arms=[ticket,set]", "--set.distribution=uniform"], "set.distribution: one of ticket, erk, got 'uniform'"),
    (["--arms=[ticket,rigl]", "--rigl.drop_fraction=0"], "rigl.drop_fraction: must lie in (0, 1]"),
])
def test_bad_dynamic_sparse_settings_stop_before_any_work(tiny, tmp_path, capsys, extra, message):
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_stop_at_an_update_step_resumes_to_identical_results(tiny, tmp_path, monkeypatch):
    """The stop's checkpoint once held the masks from before that step's update, which the resumed run, continuing
    from the next step, never made: its masks then moved differently."""
    args = ["run", "experiments/quickstart.yaml", *tiny, *ARGS, "--arms=[ticket,rigl]", "--prune.levels=1"]
    assert cli.main([*args, f"--out_dir={tmp_path / 'reference'}"]) == 0
    expected = result_rows(config.load(None, tiny + ARGS + ["--arms=[ticket,rigl]", "--prune.levels=1", f"--out_dir={tmp_path / 'reference'}"]).run_dir())
    # The step counted after step 7 is 8 = 2 × update_every, an update step.
    undo = signal_after_step(monkeypatch, lambda member, step: member.arm.name == "rigl" and step == 7)
    assert cli.main(args) == REQUEUE
    undo()
    assert cli.main(args) == 0
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    got = result_rows(config.load(None, tiny + ARGS + ["--arms=[ticket,rigl]", "--prune.levels=1"]).run_dir())
    assert without_timing(got) == without_timing(expected)
