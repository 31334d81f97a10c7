"""He et al. (2017)'s channel pruning by regression: LASSO selects exactly the number of channels a level keeps, and
the next layer is refitted by least squares to the unpruned layer's output on the same sampled activations."""

import torch
from torch.nn import functional as F

from lth import activations, cli, config
from lth import masks as M
from lth.imp import Run
from lth.methods import METHODS
from lth.methods.regression import gram, lasso, reconstruct, select


def _run(tiny, *extra):
    args = tiny + ["--model=mnist1d_cnn_bn", "--prune.method=regression", "--prune.strategy=layerwise", "--prune.levels=1",
                   "--arms=[ticket,finetune]", "--prune.regression.batches=2", *extra]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    return Run.open(config.load(None, args), progress=False)


def test_the_least_squares_refit_equals_torch_lstsq_on_the_same_activations(tiny):
    run = _run(tiny)
    trained = run.trained_weights(0, "ticket")
    masks = run.dir.load(run.dir.mask(1, "finetune"))
    refit = run.dir.load(run.dir.refit(1, "finetune"))

    # The activations, read here with a hook of the test's own: conv 1's input at the sampled receptive fields.
    params = METHODS["regression"].Params(batches=2)
    scoring = run.scoring(trained, {n: trained[f"{n}_mask"] for n in masks}, {n: 0.5 for n in masks})
    # Every pruned layer's readers, as the level read them: one generator draws the locations of all of them.
    (consumer,) = activations.consumers(scoring, params.batches, params.locations)["convs.0.weight"]
    network, inputs = run.net.plain(trained).eval(), []
    network.convs[1].register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    with torch.no_grad():
        for x, _ in run.first_batches(2):
            network(x)
    fields = torch.cat([F.unfold(i.unsqueeze(2), (1, 3), padding=(0, 1), stride=(1, 2)) for i in inputs])  # [N, 32·3, L]
    assert consumer.x.shape == (len(fields) * 10, 96)
    rows = {tuple(r.tolist()) for r in fields.transpose(1, 2).flatten(0, 1)}
    assert all(tuple(r.tolist()) in rows for r in consumer.x[:50])  # the sampled rows are receptive fields of conv 1's input

    kept = M.channels_alive(masks["convs.0.weight"])
    cols = torch.cat([torch.arange(3 * c, 3 * c + 3) for c in kept.nonzero().flatten().tolist()])
    y = consumer.x.double() @ trained["convs.1.weight"].flatten(1).double().T
    expected = torch.zeros(32, 96, dtype=torch.float64)
    expected[:, cols] = torch.linalg.lstsq(consumer.x.double()[:, cols], y).solution.T
    expected *= masks["convs.1.weight"].flatten(1)
    assert torch.allclose(refit["convs.1.weight"].flatten(1).double(), expected.float().double(), atol=1e-6)
    assert torch.equal(reconstruct(consumer, kept), reconstruct(consumer, kept))  # a function of the samples alone


def test_lasso_keeps_exactly_the_count_and_prefers_the_channels_the_output_needs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 6, generator=g, dtype=torch.float64)
    weight[:, [1, 4]] *= 0.01  # two channels whose part of the output is small even after the norm is taken out
    x[:, [1, 4]] = x[:, [0, 3]] + 0.01 * x[:, [1, 4]]  # ... and that copy other channels: LASSO drops them first
    consumer = activations.Consumer("w", x, weight, [torch.tensor([c]) for c in range(6)])
    every = torch.ones(6, dtype=torch.bool)
    g_matrix, b = gram([consumer], every)
    z = [(x[:, [c]] @ weight[:, [c]].T).flatten() for c in range(6)]  # each channel's part of the output, formed
    norms = torch.stack([v.norm() for v in z])
    assert torch.allclose(g_matrix, torch.stack([torch.stack([(u @ v) / (u.norm() * v.norm()) for v in z]) for u in z]))
    assert torch.allclose(b, g_matrix @ norms)
    for keep in (5, 4, 3):
        scores = select(g_matrix, b, keep)
        assert int((scores >= 1).sum()) == keep
    kept = select(g_matrix, b, 4) >= 1
    assert not kept[1] and not kept[4]
    assert torch.allclose(torch.from_numpy(lasso(g_matrix.numpy(), b.numpy(), 0.0)), norms, rtol=1e-5)  # λ = 0: the full output


def test_regression_refuses_a_global_ranking_in_one_line(tiny, capsys):
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--prune.method=regression"]) == 2
    err = capsys.readouterr().err
    assert "prune.strategy: regression keeps a number of channels per layer" in err and err.count("\n") == 1
