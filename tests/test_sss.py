"""Sparse Structure Selection for residual blocks (Huang & Wang 2018): the blocks found, the penalty on their factors,
the blocks of smallest factor removed whole, and the shallower network computing what the masked one computes."""

import torch

from lth import blocks, cli, config, export
from lth.architecture import Architecture
from lth.imp import Run
from lth.methods import METHODS
from lth.models import MODELS

RESNET = ["--model=resnet20", "--prune.method=sss", "--prune.fraction=0.34", "--prune.levels=1", "--train.duration=20it",
          "--train.eval_every=10it", "--train.checkpoint_every=10it"]


def test_the_residual_blocks_of_a_resnet_are_found_with_the_batch_norm_after_each_branch_layer():
    found = blocks.of(Architecture("resnet20", (3, 8, 8), 4))
    assert list(found) == [f"blocks.{i}" for i in range(9)]
    assert found["blocks.3"] == blocks.Block("blocks.3", ("blocks.3.conv1.weight", "blocks.3.conv2.weight"), ("blocks.3.bn1", "blocks.3.bn2"))
    assert blocks.of(Architecture("mnist1d_cnn_bn", (40,), 10)) == {}


def test_the_penalty_is_the_group_norm_of_each_block_s_last_batch_norm_for_each_run_of_a_pack():
    unit = METHODS["sss"].unit(None, dict, lambda: blocks.of(Architecture("resnet20", (3, 8, 8), 4)))
    penalty = METHODS["sss"].penalty(METHODS["sss"].Params(penalty=0.5), unit)
    packed = MODELS["resnet20"]((3, 8, 8), 4, pack=2)
    for module in packed.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(module.weight)
            torch.nn.init.normal_(module.bias)
    by_hand = 0.0
    for i in range(9):
        bn = packed.blocks[i].bn2
        for run in range(2):
            half = slice(run * bn.num_features // 2, (run + 1) * bn.num_features // 2)
            by_hand += torch.cat([bn.weight[half], bn.bias[half]]).norm()
    value = penalty(packed, 2)
    assert torch.allclose(value, 0.5 * by_hand)
    value.backward()
    assert packed.blocks[0].bn2.weight.grad is not None and packed.blocks[0].bn1.weight.grad is None  # only the branch's last norm


def test_sss_removes_whole_blocks_of_smallest_factor_and_the_shallower_network_computes_what_the_masked_one_computes(tiny):
    args = tiny + RESNET + ["--arms=[ticket,random_prune,scratch_b]"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run = Run.open(config.load(None, args), progress=False)
    found = run.net.unit.found
    masks = run.dir.load(run.dir.mask(1))
    removed = [name for name, block in found.items() if not blocks.alive(masks, block)]
    assert len(removed) == round(0.34 * 9) == 3
    assert all(not masks[layer].any() for name in removed for layer in found[name].layers)
    assert all(masks[layer].all() for name in found if name not in removed for layer in found[name].layers)
    trained = run.trained_weights(0, "ticket")
    factor = {name: torch.cat([trained[f"{b.norms[-1]}.weight"], trained[f"{b.norms[-1]}.bias"]]).norm() for name, b in found.items()}
    assert sorted(removed) == sorted(sorted(found, key=lambda n: float(factor[n]))[:3])

    rows = {r.arm: r for r in run.dir.rows() if r.level == 1}
    random_masks = run.dir.load(run.dir.arm(1, "random_prune") / "final.ckpt")["state_dict"]
    random_dead = [n for n, b in found.items() if not random_masks[f"model.{b.layers[0]}_mask"].any()]
    assert len(random_dead) == 3

    summary = export.export(run.dir.root, 1, "ticket", run.dir.root / "shallow.pt", sparse=False)
    assert summary["max_output_difference"] <= 1e-5  # the masked ticket against the network without its removed blocks
    network = export.load(run.dir.root / "shallow.pt")
    assert [i for i in range(9) if isinstance(network.blocks[i], blocks.Skip)] == [int(n.split(".")[1]) for n in removed]
    assert summary["parameters"] == rows["ticket"].parameters == sum(p.numel() for p in network.parameters())
    scratch = run.dir.load(run.dir.arm(1, "scratch_b") / "final.ckpt")["state_dict"]
    assert not any(k.startswith(f"model.{removed[0]}.conv") for k in scratch)  # trained shallow, from its own init
    assert export.export(run.dir.root, 1, "scratch_b", run.dir.root / "sb.pt", sparse=False)["parameters"] == rows["scratch_b"].parameters


def test_sss_refuses_a_network_without_residual_blocks_in_one_line(tiny, capsys):
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--model=mnist1d_cnn_bn", "--prune.method=sss"]) == 2
    err = capsys.readouterr().err
    assert "prune.method: sss removes residual blocks" in err and err.count("\n") == 1
