"""Controls on the ticket's masks (Frankle & Carbin 2019; Liu et al. 2019; Renda et al. 2020)."""


import torch
from conftest import result_rows

from lth import cli, config, locks
from lth.arms import ARMS
from lth.flops import macs
from lth.imp import Run
from lth.models import MODELS

ALL_ARMS = ["ticket", "reinit", "random_prune", "scratch_b", "finetune", "lr_rewind"]
ALL = f"--arms=[{','.join(ALL_ARMS)}]"




def test_every_control_trains_on_the_tickets_masks(tiny):
    args = ["run", "experiments/quickstart.yaml"] + tiny + ["--prune.levels=1", ALL]
    assert cli.main(args) == 0
    cfg = config.load("experiments/quickstart.yaml", tiny + ["--prune.levels=1", ALL])
    run_dir = cfg.run_dir()
    rows = {(r["level"], r["arm"]): r for r in result_rows(run_dir)}
    assert sorted(rows) == [(0, "ticket")] + [(1, a) for a in sorted(["ticket", "reinit", "random_prune", "scratch_b", "finetune", "lr_rewind"])]
    ticket = rows[1, "ticket"]
    for arm in ["reinit", "scratch_b", "finetune", "lr_rewind"]:
        assert rows[1, arm]["mask_sha256"] == ticket["mask_sha256"], arm
    shuffled = rows[1, "random_prune"]
    assert shuffled["mask_sha256"] != ticket["mask_sha256"]
    assert shuffled["weights_remaining_per_layer"] == ticket["weights_remaining_per_layer"]

    # Fresh inits differ from the ticket's and from each other; random pruning keeps the ticket's init.
    seeds = {arm: rows[1, arm]["init_seed"] for arm in ["ticket", "reinit", "scratch_b", "random_prune"]}
    assert seeds["random_prune"] == seeds["ticket"] == cfg.seed and len({seeds["reinit"], seeds["scratch_b"], cfg.seed}) == 3
    start = lambda arm: torch.load(run_dir / "level_01" / arm / "start.ckpt", map_location="cpu", weights_only=False)  # noqa: E731
    name = "model.layers.0.weight"
    kept = start("ticket")["state_dict"][name + "_mask"]
    assert not torch.equal(start("reinit")["state_dict"][name][kept], start("ticket")["state_dict"][name][kept])
    # `prune.rewind_optimizer: fresh` (the default): one policy, an empty optimizer for every arm at the rewind step.
    assert all(start(arm)["optimizer_states"][0]["state"] == {} for arm in ["ticket", "reinit", "random_prune", "lr_rewind"])
    assert {rows[1, arm]["rewind_optimizer"] for arm in ALL_ARMS} == {"fresh"}
    rewound = torch.load(run_dir / "rewind.ckpt", map_location="cpu", weights_only=False)["state_dict"][name]
    random_mask = start("random_prune")["state_dict"][name + "_mask"]
    assert torch.equal(start("random_prune")["state_dict"][name], rewound * random_mask)

    # LR rewinding: the weights level 1 was pruned from, masked, at the rewind step's LR position.
    trained = torch.load(run_dir / "level_00" / "ticket" / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"][name]
    assert torch.equal(start("lr_rewind")["state_dict"][name], trained * kept)
    assert start("lr_rewind")["global_step"] == 7

    # Step budgets: fine-tuning and LR rewinding train as long as the ticket after the rewind point;
    # Scratch-B as long as the dense run's MACs allow, capped at 2x (half the weights: exactly 2x).
    assert rows[1, "finetune"]["steps_trained"] == rows[1, "lr_rewind"]["steps_trained"] == ticket["steps_trained"] == 36 - 7
    assert rows[1, "scratch_b"]["steps_trained"] == 72
    assert rows[1, "scratch_b"]["macs"] == ticket["macs"] < rows[0, "ticket"]["macs"]


def test_scratch_b_budget_follows_macs_and_the_cap(tiny):
    cfg = config.load(None, tiny + ["--scratch_b.max_factor=null", "--train.milestones=[2ep]"])
    run = Run.open(cfg, progress=False)
    module = run.build_module(0)
    masks = {n: torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) < 0.25 for n, w in module.weights().items()}
    shape = (3, 8, 8)
    factor = macs(module.model, shape) / macs(module.model, shape, masks)
    steps, _ = ARMS["scratch_b"].own_steps(run.level_context(1, ARMS["scratch_b"], module.model, masks))
    assert 3.5 < factor < 4.5 and steps.total_steps == round(36 * factor)
    assert steps.milestone_steps == (round(24 * factor),)
    capped = Run.open(config.load(None, tiny + ["--scratch_b.max_factor=2"]), progress=False)
    assert ARMS["scratch_b"].own_steps(capped.level_context(1, ARMS["scratch_b"], module.model, masks))[0].total_steps == 72


def test_controls_fan_out_over_an_existing_run_without_retraining_the_ticket(tiny, capsys, monkeypatch):
    base = ["run", "experiments/quickstart.yaml"] + tiny + ["--prune.levels=1"]
    monkeypatch.setattr(locks, "START_SECONDS", 0.2)  # no process will take up the ticket: no need to allow it a minute
    assert cli.main(base + ["--arms=[reinit]"]) == 2
    err = capsys.readouterr().err
    assert "waiting up to 0 s for a process to take up the ticket" in err and "train the ticket arm first" in err
    assert cli.main(base) == 0
    run_dir = config.load("experiments/quickstart.yaml", tiny).run_dir()
    ticket_files = {p: p.stat().st_mtime_ns for p in run_dir.rglob("ticket/*")}
    assert cli.main(base + ["--arms=[reinit]"]) == 0
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("ticket/*")} == ticket_files
    assert [(r["level"], r["arm"]) for r in result_rows(run_dir)] == [(0, "ticket"), (1, "ticket"), (1, "reinit")]


def test_macs_against_hand_counts():
    lenet = MODELS["lenet_300_100"]((1, 28, 28), 10)
    assert macs(lenet, (1, 28, 28)) == 784 * 300 + 300 * 100 + 100 * 10
    half = {n: torch.arange(p.numel()).view(p.shape) % 2 == 0 for n, p in lenet.named_parameters() if n.endswith("weight")}
    assert macs(lenet, (1, 28, 28), half) == (784 * 300 + 300 * 100 + 100 * 10) // 2
    # ResNet-20: 3x3 convs at 32x32 (first + 6 in stage 1), 16x16 (6) and 8x8 (6), two 1x1 shortcuts, fc.
    hand = (
        32 * 32 * 27 * 16 + 6 * 32 * 32 * 16 * 16 * 9
        + 16 * 16 * (16 * 32 * 9 + 5 * 32 * 32 * 9 + 16 * 32)
        + 8 * 8 * (32 * 64 * 9 + 5 * 64 * 64 * 9 + 32 * 64)
        + 64 * 10
    )
    assert macs(MODELS["resnet20"]((3, 32, 32), 10), (3, 32, 32)) == hand == 40_813_184
