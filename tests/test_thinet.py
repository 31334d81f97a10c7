"""ThiNet (Luo et al. 2017): the greedy choice of Algorithm 1 against an exhaustive search, its order of removal against
the algorithm run to each target, and the least-squares rescaling of the next layer."""

import itertools

import torch
from torch.nn import functional as F

from lth import cli, config
from lth import masks as M
from lth.arms import ARMS
from lth.imp import Run
from lth.methods import METHODS
from lth.methods.thinet import removal_order


def _cost(x, removed):
    return float((x[:, list(removed)].sum(1) ** 2).sum()) if removed else 0.0


def _algorithm_1(x, k):
    """Luo et al. (2017), Algorithm 1, as printed: grow T by the channel of smallest Σ (Σ_{j∈T∪{i}} x̂_j)² until |T| = k."""
    removed, candidates = [], list(range(x.shape[1]))
    while len(removed) < k:
        best = min(candidates, key=lambda i: _cost(x, removed + [i]))
        removed.append(best)
        candidates.remove(best)
    return set(removed)


def test_the_greedy_choice_equals_an_exhaustive_search_on_a_layer_small_enough_to_enumerate():
    g = torch.Generator().manual_seed(0)
    every = torch.ones(6, dtype=torch.bool)
    # Shares that do not interact (orthogonal across samples): the cost of a set is the sum of its members', and the
    # greedy choice is the optimum at every size.
    basis = torch.linalg.qr(torch.randn(40, 6, generator=g, dtype=torch.float64)).Q * torch.rand(6, generator=g, dtype=torch.float64)
    # Shares that do interact: at size 1 greedy is exhaustive search by definition; the test checks it is that.
    correlated = torch.randn(40, 6, generator=g, dtype=torch.float64) + torch.randn(40, 1, generator=g, dtype=torch.float64)
    for x, sizes in ((basis, range(1, 6)), (correlated, [1])):
        order = removal_order(x, every)
        for k in sizes:
            exhaustive = min(itertools.combinations(range(6), k), key=lambda t: _cost(x, t))
            assert set(order.argsort()[:k].tolist()) == set(exhaustive), k


def test_the_order_of_removal_is_algorithm_1_run_to_each_target_and_skips_channels_already_gone():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 7, generator=g, dtype=torch.float64) @ torch.randn(7, 7, generator=g, dtype=torch.float64)
    alive = torch.tensor([True, True, False, True, True, True, True])
    x[:, 2] = 0  # a channel removed at an earlier level contributes nothing
    order = removal_order(x, alive)
    assert order[2] == -1 and sorted(order[alive].tolist()) == list(range(6))
    index = alive.nonzero().flatten().tolist()
    for k in range(1, 6):
        by_order = set(order.masked_fill(~alive, 10**6).argsort()[:k].tolist())
        assert by_order == {index[j] for j in _algorithm_1(x[:, alive], k)}, k


def test_a_thinet_level_keeps_the_fraction_per_layer_and_its_rescaled_next_layer_rebuilds_the_output_better(tiny):
    args = tiny + ["--model=mnist1d_cnn_bn", "--prune.method=thinet", "--prune.strategy=layerwise", "--prune.levels=1",
                   "--arms=[ticket,finetune]", "--prune.thinet.batches=2"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run = Run.open(config.load(None, args), progress=False)
    trained = run.trained_weights(0, "ticket")
    masks = run.dir.load(run.dir.mask(1))
    alive = {layer: int(M.channels_alive(masks[layer]).sum()) for layer in run.net.unit.structure}
    assert alive == {f"convs.{i}.weight": 16 for i in range(3)}  # half of each conv's 32 channels, layer by layer

    refit = run.dir.load(run.dir.refit(1, "finetune"))
    assert sorted(refit) == ["convs.1.weight", "convs.2.weight", "fc.weight"]
    assert not run.dir.refit(1).exists()  # the ticket's chain rewinds: nothing of it starts from a refit
    finetune_masks = run.dir.load(run.dir.mask(1, "finetune"))
    # The next layer's input as the pruned network computes it, against the unpruned layer's output.
    network = run.net.plain(trained).eval()
    seen = {}
    network.convs[1].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    x, _ = run.first_batches(1)[0]
    with torch.no_grad():
        network(x)
        full = F.conv1d(seen["x"], trained["convs.1.weight"], padding=1, stride=2)
        kept = seen["x"] * M.channels_alive(finetune_masks["convs.0.weight"])[None, :, None]
        plain = F.conv1d(kept, trained["convs.1.weight"] * finetune_masks["convs.1.weight"], padding=1, stride=2)
        rescaled = F.conv1d(kept, refit["convs.1.weight"], padding=1, stride=2)
    assert float(((rescaled - full) ** 2).sum()) < float(((plain - full) ** 2).sum())
    assert not refit["convs.1.weight"][~finetune_masks["convs.1.weight"]].any()

    # Fine-tuning starts from the rescaled weights; the ticket rewinds, as ever.
    start = ARMS["finetune"].start(run.level_context(1, ARMS["finetune"], run.net.build(0), finetune_masks))
    assert torch.equal(start.weights["convs.1.weight"], refit["convs.1.weight"])
    assert "rescaled by least squares (Luo et al. 2017, §3.3)" in (run.dir.root.parent / "report" / "report.md").read_text()


def test_thinet_refuses_a_global_ranking_in_one_line(tiny, capsys):
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--prune.method=thinet"]) == 2
    err = capsys.readouterr().err
    assert "prune.strategy: thinet's scores are an order of removal within a layer" in err and err.count("\n") == 1
    assert METHODS["thinet"].Params().locations == 10


def test_a_2d_conv_s_sampled_rows_are_receptive_fields_of_its_input_and_its_output_is_the_conv_s(tiny):
    """The 2-D path of `lth.activations` (ResNet-20's block convs): each sampled row is one 3×3 field of the next conv's
    input, and row @ Wᵀ is that conv's output at that field."""
    from lth import activations

    run = Run.open(config.load(None, tiny + ["--model=resnet20", "--prune.method=thinet", "--prune.strategy=layerwise"]), progress=False)
    module = run.build_module(0)
    state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    masks = module.masks()
    scoring = run.scoring(state, masks, {n: 0.5 if n in run.net.unit.structure else 0.0 for n in masks})
    samples = activations.consumers(scoring, 1, 5)
    (consumer,) = samples["blocks.4.conv1.weight"]
    assert consumer.name == "blocks.4.conv2.weight" and consumer.x.shape[1] == 32 * 9

    network, seen = run.net.plain(state).eval(), {}
    network.blocks[4].conv2.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    (x, _), = run.first_batches(1)
    with torch.no_grad():
        network(x)
        out = network.blocks[4].conv2(seen["x"]).flatten(2).transpose(1, 2).flatten(0, 1)
    fields = F.unfold(seen["x"], 3, padding=1).transpose(1, 2).flatten(0, 1)
    index = {tuple(r.tolist()): i for i, r in enumerate(fields)}
    for row, y in zip(consumer.x[:20], consumer.output()[:20]):
        assert tuple(row.tolist()) in index
        assert torch.allclose(y, out[index[tuple(row.tolist())]], atol=1e-5)
