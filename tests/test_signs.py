"""The `signs` control (Zhou et al. 2019): the ticket's mask and signs, fresh magnitudes."""

import torch
from conftest import result_rows

from lth import cli, config


def starts(tiny, arm):
    args = tiny + ["--prune.levels=1", f"--arms=[ticket,{arm}]"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    state = lambda a: torch.load(run_dir / "level_01" / a / "start.ckpt", map_location="cpu", weights_only=False)["state_dict"]  # noqa: E731
    rows = {r["arm"]: r for r in result_rows(run_dir) if r["level"] == 1}
    return state("ticket"), state(arm), rows


def test_signs_keeps_the_mask_and_every_kept_sign_and_draws_new_magnitudes(tiny):
    ticket, signs, rows = starts(tiny, "signs")
    assert rows["signs"]["mask_sha256"] == rows["ticket"]["mask_sha256"]
    for name in ("model.layers.0.weight", "model.layers.1.weight", "model.layers.2.weight"):
        kept = ticket[name + "_mask"]
        assert torch.equal(signs[name + "_mask"], kept)
        assert torch.equal(torch.sign(signs[name][kept]), torch.sign(ticket[name][kept]))
        assert not torch.allclose(signs[name][kept].abs(), ticket[name][kept].abs())
        assert (signs[name][~kept] == 0).all()
    assert torch.equal(signs["model.layers.0.bias"], ticket["model.layers.0.bias"])  # the rest is the rewind point's
    assert rows["signs"]["init_seed"] != rows["ticket"]["init_seed"]  # its magnitudes come from its own init
