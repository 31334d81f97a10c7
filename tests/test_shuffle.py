"""The `shuffle` control (Frankle et al. 2021): the ticket's mask, its kept values permuted within each layer."""

import torch
from test_signs import starts


def test_shuffle_keeps_the_mask_and_each_layers_values_and_moves_them(tiny):
    ticket, shuffled, rows = starts(tiny, "shuffle")
    assert rows["shuffle"]["mask_sha256"] == rows["ticket"]["mask_sha256"]
    for name in ("model.layers.0.weight", "model.layers.1.weight", "model.layers.2.weight"):
        kept = ticket[name + "_mask"]
        assert torch.equal(shuffled[name + "_mask"], kept)
        assert torch.equal(shuffled[name][kept].sort().values, ticket[name][kept].sort().values)  # the same multiset
        moved = (shuffled[name][kept] != ticket[name][kept]).float().mean()
        assert moved > 0.9  # nearly every kept value now sits elsewhere
    assert rows["shuffle"]["init_seed"] == rows["ticket"]["init_seed"]
