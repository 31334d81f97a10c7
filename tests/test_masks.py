import math

import pytest
import torch
from conftest import prune

from lth import masks as M


def _weights(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"l{i}.weight": torch.randn(s, generator=g) for i, s in enumerate(shapes)}


@pytest.mark.parametrize("strategy", ["global", "layerwise"])
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.37])
def test_remaining_follows_geometric_decay_within_the_rounding_bound(strategy, fraction):
    weights = _weights((50, 40), (40, 10), (10,))
    masks = M.ones_like(weights)
    total = sum(w.numel() for w in weights.values())
    fractions = {n: fraction for n in weights}
    for level in range(1, 9):
        # Fresh weights each level, as after retraining: pruning must only ever remove kept weights.
        trained = _weights((50, 40), (40, 10), (10,), seed=level)
        new = prune("magnitude", trained, masks, fractions, strategy)
        for name in masks:
            assert not (new[name] & ~masks[name]).any(), "a pruned weight came back"
        masks = new
        kept = sum(int(m.sum()) for m in masks.values())
        groups = 1 if strategy == "global" else len(weights)
        assert abs(kept - (1 - fraction) ** level * total) <= groups * 0.5 / fraction + 1e-9


def test_layerwise_prunes_each_layer_by_its_own_fraction_and_global_shares_a_threshold():
    big = torch.linspace(1, 2, 100)  # all larger than any weight of `small`
    small = torch.linspace(0.01, 0.5, 100)
    weights = {"a.weight": big, "b.weight": small}
    masks = M.ones_like(weights)
    fractions = {"a.weight": 0.3, "b.weight": 0.3}

    layerwise = prune("magnitude", weights, masks, fractions, "layerwise")
    assert int(layerwise["a.weight"].sum()) == 70 and int(layerwise["b.weight"].sum()) == 70
    assert not layerwise["a.weight"][:30].any() and layerwise["a.weight"][30:].all()

    global_ = prune("magnitude", weights, masks, fractions, "global")
    assert int(global_["a.weight"].sum()) == 100  # the smallest 60 of the 200 all lie in b
    assert int(global_["b.weight"].sum()) == 40


def test_per_group_rates_and_dense_layers():
    names = ["fc1.weight", "fc2.weight", "fc3.weight", "conv.weight"]
    fractions = M.layer_fractions(names, 0.2, {"fc3.*": 0.1, "fc*": 0.25}, dense=["conv.*"])
    assert fractions == {"fc1.weight": 0.25, "fc2.weight": 0.25, "fc3.weight": 0.1, "conv.weight": 0.0}

    weights = {n: torch.randn(1000) for n in names}
    masks = prune("magnitude", weights, M.ones_like(weights), fractions, "global")
    # In global mode the two fc layers at 0.25 share one threshold, so only their sum is fixed.
    assert int(masks["fc1.weight"].sum() + masks["fc2.weight"].sum()) == 1500
    assert int(masks["fc3.weight"].sum()) == 900
    assert bool(masks["conv.weight"].all())


def test_ties_are_broken_by_position_deterministically():
    weights = {"a.weight": torch.ones(10), "b.weight": torch.ones(10)}
    masks = prune("magnitude", weights, M.ones_like(weights), {"a.weight": 0.5, "b.weight": 0.5}, "global")
    assert masks["a.weight"].tolist() == [False] * 10 and masks["b.weight"].all()
    again = prune("magnitude", weights, M.ones_like(weights), {"a.weight": 0.5, "b.weight": 0.5}, "global")
    assert M.sha256(masks) == M.sha256(again)


def test_only_remaining_weights_count_towards_the_fraction():
    w = {"a.weight": torch.arange(1.0, 101.0)}
    first = prune("magnitude", w, M.ones_like(w), {"a.weight": 0.2}, "layerwise")
    second = prune("magnitude", w, first, {"a.weight": 0.2}, "layerwise")
    assert int(first["a.weight"].sum()) == 80 and int(second["a.weight"].sum()) == 64
    assert second["a.weight"][36:].all() and not second["a.weight"][:36].any()


def test_random_masks_keep_per_layer_counts_and_differ_from_magnitude():
    weights = _weights((30, 20), (20, 5))
    masks = prune("magnitude", weights, M.ones_like(weights), {n: 0.6 for n in weights}, "layerwise")
    shuffled = M.random_like(masks, torch.Generator().manual_seed(1))
    for name in masks:
        assert int(shuffled[name].sum()) == int(masks[name].sum())
        assert shuffled[name].shape == masks[name].shape
    assert M.sha256(shuffled) != M.sha256(masks)
    assert M.sha256(M.random_like(masks, torch.Generator().manual_seed(1))) == M.sha256(shuffled)


def test_sha256_depends_on_every_bit_and_name():
    masks = M.ones_like(_weights((4, 4)))
    flipped = {n: m.clone() for n, m in masks.items()}
    flipped["l0.weight"][2, 3] = False
    renamed = {"other.weight": masks["l0.weight"]}
    assert len({M.sha256(masks), M.sha256(flipped), M.sha256(renamed)}) == 3


def test_weights_remaining():
    masks = {"a": torch.tensor([True, False, False, False]), "b": torch.tensor([True, True, True, True])}
    overall, per_layer = M.weights_remaining(masks)
    assert math.isclose(overall, 5 / 8) and per_layer == {"a": 0.25, "b": 1.0}
