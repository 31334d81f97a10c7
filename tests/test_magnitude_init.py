"""Magnitude at initialisation (Frankle et al. 2021): the init's largest weights kept, not the trained network's."""

import pytest
import torch
from conftest import prune_at_initialisation

from lth import masks as M


@pytest.mark.slow
def test_it_keeps_the_init_s_largest_weights_and_every_arm_trains_on_its_masks(tiny):
    run, rows = prune_at_initialisation(tiny, "magnitude_init")
    assert rows["ticket"].weights_remaining == pytest.approx(0.1, abs=1e-3)
    masks = run.dir.load(run.dir.mask(1))
    init = run.rewound_weights()  # rewind 0: the init
    everything = torch.cat([init[n].abs().flatten() for n in masks])
    threshold = everything.kthvalue(len(everything) - round(0.1 * len(everything))).values
    for name, mask in masks.items():  # one global threshold on |w| at init
        assert (init[name].abs()[mask] >= threshold).all() and (init[name].abs()[~mask] <= threshold).all(), name
    trained = run.trained_weights(0, "ticket")
    ones = {n: torch.ones_like(m) for n, m in masks.items()}
    from_trained = run.net.unit.keep({n: trained[n].abs() for n in masks}, ones, {n: 0.9 for n in masks}, "global")
    assert M.sha256(from_trained) != M.sha256(masks)
