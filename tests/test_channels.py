"""Channel pruning (L1 filters, Network Slimming): whole channels, coupled channels left alone, the masked wide
network equal to the physically narrow one, and every arm under both methods."""

import os
import signal

import pytest
import torch
from conftest import prune, result_rows, without_timing

from lth import channels, cli, config, export, imp
from lth import masks as M
from lth.architecture import Architecture
from lth.arms import ARMS
from lth.flops import macs, parameters
from lth.methods import METHODS
from lth.models import MODELS
from lth.module import MaskedModule
from lth.preemption import REQUEUE
from lth.ranking import Channels
from lth.run_dir import FINAL, RunDir

CIFAR = (3, 8, 8)  # the networks' structure, at a size a test can run


def _network(name, shape, seed=0):
    torch.manual_seed(seed)
    model = MODELS[name](shape, 10)
    structure = channels.removable(Architecture(name, shape, 10))
    module = MaskedModule(model, config.TrainConfig(), None, 10, followers=channels.followers(structure))
    return module, structure


def test_l1_channel_pruning_removes_whole_channels_and_leaves_residual_channels_alone():
    module, structure = _network("resnet20", CIFAR)
    # Li et al. 2017 §4.2: only the first conv of each residual block; the stem, second convs and shortcuts
    # write into the residual stream.
    assert sorted(structure) == sorted(f"blocks.{i}.conv1.weight" for i in range(9))
    weights = {n: w.detach() for n, w in module.weights().items()}
    fractions = {n: 0.5 for n in weights}
    masks = prune("channel", weights, M.ones_like(weights), fractions, "layerwise", structure=structure)
    for name, mask in masks.items():
        if name in structure:
            rows = mask.flatten(1)
            assert (rows.all(1) | ~rows.any(1)).all(), f"{name}: a channel is either whole or gone"
            alive = M.channels_alive(mask)
            assert int(alive.sum()) == len(alive) - round(0.5 * len(alive))
            norms = weights[name].abs().flatten(1).sum(1)
            assert norms[alive].min() >= norms[~alive].max(), "the lowest L1 norms go"
            consumer = name.replace("conv1", "conv2")
            assert torch.equal(masks[consumer].any(0).flatten(1).any(1), alive), "the next conv reads only kept channels"
        elif "conv2" not in name:
            assert mask.all(), f"{name} is not pruned"
    # Pruning again removes from what remains: 16 -> 8 -> 4 channels in the first stage.
    again = prune("channel", weights, masks, fractions, "layerwise", structure=structure)
    assert int(M.channels_alive(again["blocks.0.conv1.weight"]).sum()) == 4
    assert all(not (again[n] & ~masks[n]).any() for n in masks)


def test_global_channel_pruning_ranks_norms_relative_to_their_layer_and_keeps_every_layer():
    module, structure = _network("vgg16", (3, 32, 32))
    weights = {n: w.detach() for n, w in module.weights().items()}
    weights["features.0.weight"] = weights["features.0.weight"] * 100  # a layer of large norms is not spared
    fractions = {n: (0.0 if n == "fc.weight" else 0.9) for n in weights}
    masks = prune("channel", weights, M.ones_like(weights), fractions, "global", structure=structure)
    kept = {n: int(M.channels_alive(masks[n]).sum()) for n in structure}
    total = sum(len(M.channels_alive(masks[n])) for n in structure)
    assert sum(kept.values()) == total - round(0.9 * total)
    assert min(kept.values()) >= 1 and kept["features.0.weight"] < 64
    # The last conv feeds the unpruned output layer (VGG's `dense_layers`), whose columns still follow it.
    last = M.channels_alive(masks["features.40.weight"])
    assert not last.all() and torch.equal(masks["fc.weight"].any(0), last)


NETWORKS = [("resnet20", CIFAR), ("vgg16", (3, 32, 32)), ("conv2", CIFAR), ("lenet_300_100", (1, 28, 28)), ("mnist1d_cnn_bn", (1, 40))]


@pytest.mark.parametrize("name, shape", NETWORKS)
def test_the_masked_wide_network_is_the_narrow_network(name, shape):
    """Outputs within 1e-5, MACs (a removed channel also removes the next layer's input MACs) and parameters."""
    module, structure = _network(name, shape)
    with torch.no_grad():
        for parameter in module.model.parameters():
            if parameter.dim() == 1:  # biases and batch-norm scales and shifts: not 0 and 1, so they matter
                parameter.uniform_(0.5, 1.5)
    weights = {n: w.detach() for n, w in module.weights().items()}
    masks = prune("channel", weights, M.ones_like(weights), {n: 0.6 for n in weights}, "layerwise", structure=structure)
    module.set_masks(masks)
    plain = MODELS[name](shape, 10)
    plain.load_state_dict({k: v for k, v in module.model.state_dict().items() if not k.endswith("_mask")})
    narrow = channels.narrow(plain, masks, structure, shape)
    assert narrow.training, "in the mode it was given: it trains on batch statistics"
    x = torch.randn(16, *shape)
    for mode in (True, False):  # batch statistics, then running ones
        module.train(mode), narrow.train(mode)
        with torch.no_grad():
            reference = module(x)[:, 0]
            assert (narrow(x) - reference).abs().max() <= 1e-5 * max(1.0, float(reference.abs().max())), "within float rounding of a different sum order"
    assert macs(module.model, shape, masks) == macs(narrow, shape) < macs(plain, shape)
    assert parameters(module.model, module.followers, masks) == sum(p.numel() for p in narrow.parameters())


def test_random_channel_control_keeps_each_layers_channel_count_at_random():
    module, structure = _network("resnet20", CIFAR)
    weights = {n: w.detach() for n, w in module.weights().items()}
    ticket = prune("channel", weights, M.ones_like(weights), {n: 0.5 for n in weights}, "layerwise", structure=structure)
    shuffled = channels.random_like(ticket, torch.Generator().manual_seed(1), structure)
    for name in structure:
        assert M.channels_alive(shuffled[name]).sum() == M.channels_alive(ticket[name]).sum()
        rows = shuffled[name].flatten(1)
        assert (rows.all(1) | ~rows.any(1)).all()
    assert M.weights_remaining(shuffled)[0] == M.weights_remaining(ticket)[0]
    assert M.sha256(shuffled) != M.sha256(ticket)


def test_slimming_penalty_reaches_the_batch_norm_scales_and_the_threshold_is_global():
    module, structure = _network("mnist1d_cnn_bn", (1, 40))
    module._train_losses = module.losses
    module.on_train_start()
    x, y = torch.randn(8, 1, 40), torch.randint(0, 10, (8, 1))
    optimizer = torch.optim.SGD(module.model.parameters(), lr=0.0)
    grads = {}
    for l1 in (0.0, 1e-2):
        module.penalty = METHODS["slimming"].penalty(METHODS["slimming"].Params(l1=l1), None)
        module._step(optimizer, x, y)
        grads[l1] = {n: p.grad.clone() for n, p in module.model.named_parameters()}
    for name in grads[0.0]:
        difference = grads[1e-2][name] - grads[0.0][name]
        expected = 1e-2 * module.model.get_parameter(name).detach().sign() if name.startswith("norms.") and name.endswith("weight") else 0
        assert torch.allclose(difference, torch.as_tensor(expected, dtype=difference.dtype).expand_as(difference), atol=1e-7), name

    trained = dict(module.model.state_dict())
    trained["norms.0.weight"] = torch.linspace(0.01, 0.32, 32)
    trained["norms.1.weight"] = torch.linspace(1.0, 2.0, 32)
    masks = prune("slimming", trained, M.ones_like(module.weights()), {n: 0.25 for n in module.prunable}, "global", structure=structure)
    # 64 channels in the two pruned layers (the last conv feeds the output layer and is pruned too: 96), a
    # quarter go, all from the layer of small scales.
    alive = {n: int(M.channels_alive(masks[n]).sum()) for n in structure}
    assert sum(alive.values()) == 96 - 24 and alive["convs.0.weight"] == 32 - 24 and alive["convs.1.weight"] == 32


CHANNEL_METHODS = sorted(name for name, m in METHODS.items() if isinstance(m.unit(m.Params() if m.Params else None, dict), Channels))


@pytest.mark.slow
@pytest.mark.parametrize("method", CHANNEL_METHODS)
def test_every_arm_runs_under_every_channel_method_with_the_scratch_arms_narrow(tiny, method):
    # Every arm but those that move single connections as they train (rigl, set), which a channel method refuses.
    channel_arms = [a for a in ARMS if not ARMS[a].moves_masks]
    arms = f"--arms=[{','.join(channel_arms)}]"
    args = tiny + ["--model=mnist1d_cnn_bn", "--prune.levels=2", "--prune.fraction=0.5", arms, f"--prune.method={method}", *METHODS[method].example]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = RunDir(config.load("experiments/quickstart.yaml", args).run_dir())
    rows = {(r["level"], r["arm"]): r for r in result_rows(run_dir.root)}
    assert len(rows) == 1 + 2 * len(channel_arms)
    for level in (1, 2):
        ticket = rows[level, "ticket"]
        for arm in ("reinit", "random_prune", "scratch_e", "scratch_b"):
            assert rows[level, arm]["weights_remaining"] == ticket["weights_remaining"] < 1
            assert rows[level, arm]["macs"] == ticket["macs"] and rows[level, arm]["parameters"] == ticket["parameters"]
        for arm in channel_arms:
            state = run_dir.load(run_dir.arm(level, arm) / FINAL)["state_dict"]
            convs = [state[f"model.convs.{i}.weight"] for i in range(3)]
            if arm in ("scratch_e", "scratch_b"):  # physically narrower, and dense
                assert convs[0].shape[0] < 32 and all(state[f"model.convs.{i}.weight_mask"].all() for i in range(3))
                continue
            assert convs[0].shape[0] == 32
            for i, weight in enumerate(convs):
                mask = state[f"model.convs.{i}.weight_mask"]
                assert not weight[~mask].any()
                dead = ~M.channels_alive(mask)
                assert not state[f"model.norms.{i}.weight"][dead].any() and not state[f"model.norms.{i}.bias"][dead].any()
    assert all(isinstance(r["inference_speedup"], float) for r in rows.values()), "measured for every channel-pruned line"
    steps = {arm: rows[1, arm]["steps_trained"] for arm in ("ticket", "scratch_e", "scratch_b")}
    dense = rows[0, "ticket"]
    assert steps["scratch_e"] == dense["steps_trained"]
    assert steps["scratch_b"] == min(round(dense["steps_trained"] * dense["macs"] / rows[1, "ticket"]["macs"]), 2 * dense["steps_trained"])

    out = run_dir.root / "ticket2.pt"
    summary = export.export(run_dir.root, 2, "ticket", out, sparse=False)
    network = export.load(out)
    assert summary["max_output_difference"] <= 1e-5
    assert summary["parameters"] == sum(p.numel() for p in network.parameters()) == rows[2, "ticket"]["parameters"]
    assert network.convs[0].weight.shape[0] < 32
    assert export.export(run_dir.root, 2, "scratch_b", run_dir.root / "sb.pt", sparse=False)["parameters"] == rows[2, "scratch_b"]["parameters"]


@pytest.mark.slow
def test_an_exported_narrow_resnet_computes_the_masked_networks_outputs(tiny):
    args = tiny + ["--model=resnet20", "--prune.method=channel", "--prune.levels=1", "--prune.fraction=0.5", "--train.duration=20it",
                   "--train.eval_every=10it", "--train.checkpoint_every=10it"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    summary = export.export(run_dir, 1, "ticket", run_dir / "narrow.pt", sparse=False)
    assert summary["max_output_difference"] <= 1e-5
    network = export.load(run_dir / "narrow.pt")
    # What the method guarantees under global ranking, whatever rounding decides which channels go: each layer's
    # width is the channels its mask keeps (at least one), half the removable channels go, the stream stays.
    masks = torch.load(run_dir / "level_01" / "mask.pt")
    structure = channels.removable(Architecture("resnet20", (3, 8, 8), 4))
    alive = {layer: int(M.channels_alive(masks[layer]).sum()) for layer in structure}
    total = sum(masks[layer].shape[0] for layer in structure)
    assert sum(alive.values()) == total - round(0.5 * total) and min(alive.values()) >= 1
    first = network.blocks[0].conv1.out_channels
    assert first == alive["blocks.0.conv1.weight"] == network.blocks[0].conv2.in_channels
    assert network.blocks[0].conv2.out_channels == 16, "the residual stream keeps its width"


@pytest.mark.parametrize("extra, message", [
    (["--model=mnist1d_mlp", "--prune.method=slimming", "--prune.slimming_l1=1e-4"], "slimming ranks channels by batch-norm scales"),
    (["--model=mnist1d_cnn_bn", "--prune.method=slimming", "--prune.slimming_l1=1e-4", "--prune.strategy=layerwise"], "set prune.strategy: global"),
    (["--model=mnist1d_cnn_bn", "--prune.method=slimming", "--prune.slimming.l1=-1"], "prune.slimming.l1: the L1 penalty on batch-norm scales must be >= 0"),
    (["--prune.slimming_l1=1e-4"], "prune.slimming_l1: only the method slimming uses it"),
])
def test_bad_channel_settings_stop_before_training(tiny, capsys, extra, message):
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.slow
def test_a_narrow_scratch_run_stopped_mid_training_resumes_to_identical_results(tiny, tmp_path, monkeypatch):
    method = ["--model=mnist1d_cnn_bn", "--prune.method=slimming", "--prune.slimming_l1=1e-4", "--prune.levels=1", "--arms=[ticket,scratch_b]"]
    reference = [*tiny[:-2], f"--out_dir={tmp_path / 'reference'}", "--name=tiny", *method]
    assert cli.main(["run", "experiments/quickstart.yaml", *reference]) == 0
    expected = result_rows(config.load("experiments/quickstart.yaml", reference).run_dir())
    step, arm, train = MaskedModule.optimizer_step, {}, imp.train_pack

    def tracked(members, *rest):
        arm["now"] = members[0].arm.name
        return train(members, *rest)

    def signalling_step(self, *a, **k):
        step(self, *a, **k)
        if arm["now"] == "scratch_b" and self.global_step == 17:  # between checkpoints at 15 and 20
            os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(imp, "train_pack", tracked)
    monkeypatch.setattr(MaskedModule, "optimizer_step", signalling_step)
    args = ["run", "experiments/quickstart.yaml", *tiny, *method]
    assert cli.main(args) == REQUEUE
    monkeypatch.setattr(MaskedModule, "optimizer_step", step)
    assert cli.main(args) == 0
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    rows = without_timing(result_rows(config.load("experiments/quickstart.yaml", [*tiny, *method]).run_dir()))
    assert [{k: v for k, v in r.items() if k != "run_id"} for r in rows] == [{k: v for k, v in r.items() if k != "run_id"} for r in without_timing(expected)]


def test_measured_speedup_is_the_ratio_of_forward_times():
    """With forward passes of known duration (sleeping ones: their time does not depend on how busy the CPU is)."""
    import time

    from lth.flops import speedup

    class Takes(torch.nn.Module):
        def __init__(self, seconds):
            super().__init__()
            self.seconds = seconds

        def forward(self, x):
            time.sleep(self.seconds)
            return x

    slow, fast = Takes(0.04), Takes(0.004)  # 10×; a busy scheduler may add a few ms to each
    assert 4 < speedup(slow, fast, (8,), 4, torch.device("cpu")) < 10.5
    assert 1 / 10.5 < speedup(fast, slow, (8,), 4, torch.device("cpu")) < 1 / 4
