"""The generalisation gap: train accuracy on a fixed training subset minus test accuracy, per level and arm."""

import pytest
import torch
from conftest import result_rows

from lth import cli, config
from lth.data import dataset, load_split
from lth.models import MODELS


def test_the_gap_is_train_minus_test_accuracy_of_the_final_weights_computed_by_hand(tiny):
    args = tiny + ["--arms=[ticket,reinit]", "--prune.levels=1"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    cfg = config.load("experiments/quickstart.yaml", args)
    spec = dataset(cfg.data)
    split = load_split(spec, cfg.data.root, config.steps(cfg).val_size)
    a = split.arrays
    n = len(a["x_test"])
    for row in result_rows(cfg.run_dir()):
        state = torch.load(cfg.run_dir() / f"level_{row['level']:02d}" / row["arm"] / "final.ckpt", weights_only=False)["state_dict"]
        weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.") and not k.endswith("_mask")}
        network = MODELS[cfg.model.name](spec.input_shape, spec.num_classes)
        network.load_state_dict(weights)
        with torch.no_grad():
            splits = ((a["x_train"][:n], a["y_train"][:n]), (a["x_test"], a["y_test"]))
            train, test = ((network(split.normalise(x)).argmax(1) == y).float().mean().item() for x, y in splits)
        assert row["train_subset"] == n
        assert row["train_acc"] == pytest.approx(train, abs=1e-6) and row["test_acc"] == pytest.approx(test, abs=1e-6)
        assert row["gap"] == pytest.approx(row["train_acc"] - row["test_acc"], abs=1e-12)
        assert row["gap_at_early_stop"] == pytest.approx(row["train_acc_at_early_stop"] - row["test_acc_at_early_stop"], abs=1e-12)
    text = (cfg.run_dir().parent / "report" / "report.md").read_text()
    assert "## Generalisation gap at the early-stopping step" in text and (cfg.run_dir().parent / "report" / "gap.png").exists()
