"""APoZ (Hu et al. 2016): each channel's share of zero activations, as the next layer reads them, counted by hand."""

import torch

from lth import cli, config
from lth.imp import Run
from lth.methods import METHODS


def test_apoz_equals_a_hand_count_of_zeros_on_a_fixed_batch(tiny):
    args = tiny + ["--model=mnist1d_cnn_bn", "--prune.method=apoz", "--prune.levels=1"]
    run = Run.open(config.load(None, args), progress=False)
    module = run.build_module(0)
    state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    masks = module.masks()
    state["norms.0.bias"][:8] = -5.0  # channels 0-7 of conv 0 rarely fire: their ReLU is mostly zero
    scoring = run.scoring(state, masks, {n: 0.5 for n in masks})
    scores = METHODS["apoz"].scores(scoring, METHODS["apoz"].Params(batches=1))

    network, seen = run.net.plain(state).eval(), []
    for i in (1, 2):
        network.convs[i].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    network.fc.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    (x, _), = run.first_batches(1)
    with torch.no_grad():
        network(x)
    for layer, activation in zip(["convs.0.weight", "convs.1.weight"], seen):
        by_hand = torch.tensor([float((activation[:, c] == 0).sum()) / activation[:, c].numel() for c in range(32)])
        assert torch.allclose(scores[layer], 1 - by_hand), layer
    fc_input = seen[2].reshape(len(x), 32, -1)  # conv 2's channels, flattened into fc's columns
    by_hand = torch.tensor([float((fc_input[:, c] == 0).sum()) / fc_input[:, c].numel() for c in range(32)])
    assert torch.allclose(scores["convs.2.weight"], 1 - by_hand)
    assert scores["convs.0.weight"][:8].max() < scores["convs.0.weight"][8:].min()


def test_apoz_prunes_the_channels_that_rarely_fire_and_checks_its_setting(tiny, capsys):
    args = tiny + ["--model=mnist1d_cnn_bn", "--prune.method=apoz", "--prune.levels=1", "--arms=[ticket,random_prune]"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    rows = {r.arm: r for r in Run.open(config.load(None, args), progress=False).dir.rows() if r.level == 1}
    assert rows["ticket"].weights_remaining == rows["random_prune"].weights_remaining < 1
    capsys.readouterr()
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--model=mnist1d_cnn_bn", "--prune.method=apoz", "--prune.apoz.batches=0"]) == 2
    err = capsys.readouterr().err
    assert "prune.apoz.batches: must be at least 1, got 0" in err and err.count("\n") == 1
