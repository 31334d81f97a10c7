"""`lth sensitivity`: each layer pruned alone at each fraction, no retraining (Li et al. 2017, §3.2)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from lth import cli, config, network, sensitivity
from lth.data import dataset, load_split


def test_a_fraction_removes_exactly_the_smallest_kept_weights_of_that_layer_alone():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 10, generator=g)
    weight[0, :5] = 0  # pruned at the level: not counted, not removed again
    state = {"a.weight": weight, "b.weight": torch.randn(4, 6, generator=g), "a.bias": torch.randn(6, generator=g)}
    pruned = sensitivity.prune_one(state, "a.weight", 0.3, "magnitude")
    kept = weight != 0
    removed = kept & (pruned["a.weight"] == 0)
    assert int(removed.sum()) == round(0.3 * int(kept.sum())) == 16
    assert weight[removed].abs().max() <= weight[kept & ~removed].abs().min()  # the smallest ones
    assert torch.equal(pruned["a.weight"][~removed], weight[~removed])
    assert pruned["b.weight"] is state["b.weight"] and pruned["a.bias"] is state["a.bias"]
    channels = sensitivity.prune_one(state, "a.weight", 0.5, "channel")["a.weight"]
    gone = (channels == 0).all(1)
    norms = weight.abs().sum(1)
    assert int(gone.sum()) == 3 and norms[gone].max() <= norms[~gone].min()


def test_a_model_without_removable_channels_is_refused(tiny, monkeypatch):
    args = tiny + ["--prune.levels=0"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    monkeypatch.setattr(sensitivity.channels, "removable", lambda *a: {})
    with pytest.raises(config.ConfigError, match="has no layer whose output channels can be removed alone"):
        sensitivity.check(run_dir, 0, [0.5], "channel")


def test_copies_evaluated_packed_or_one_at_a_time_measure_the_same_networks(tiny, monkeypatch):
    """A CPU evaluates networks over `CPU_PACK_MACS` one at a time (`auto_pack`): packing may round differently, but
    each (layer, fraction) must still be the network it names."""
    args = tiny + ["--prune.levels=0"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    cfg = config.load(run_dir / "config.yaml")
    tests = len(load_split(dataset(cfg.data), cfg.data.root, config.steps(cfg).val_size).arrays["y_test"])
    ledgers = {}
    for size in (16, 1):
        monkeypatch.setattr(network, "auto_pack", lambda macs, size=size: size)  # what `Network.pack` packs by
        (run_dir / "sensitivity.jsonl").unlink(missing_ok=True)
        sensitivity.run(run_dir, 0, [0.5, 0.9], "magnitude")
        ledgers[size] = [json.loads(line) for line in (run_dir / "sensitivity.jsonl").read_text().splitlines()]
    assert [(r["layer"], r["fraction"]) for r in ledgers[16]] == [(r["layer"], r["fraction"]) for r in ledgers[1]]
    assert len({r["test_acc"] for r in ledgers[1]}) > 2  # the networks differ, so a copy measured as another would show
    assert all(abs(a["test_acc"] - b["test_acc"]) <= 1 / tests + 1e-9 for a, b in zip(ledgers[16], ledgers[1]))


@pytest.mark.slow
def test_killed_and_rerun_it_writes_the_same_ledger_and_a_finished_one_is_left_alone(tiny, tmp_path):
    args = tiny + ["--prune.levels=1"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    killed = tmp_path / "killed"
    shutil.copytree(run_dir, killed)
    assert cli.main(["sensitivity", str(run_dir), "--level=1"]) == 0
    reference = (run_dir / "sensitivity.jsonl").read_bytes()
    assert len(reference.splitlines()) == 3 * 9
    # Killed mid-way through recording the second pack (of 16).
    kill = ("import os, signal, sys; from lth import cli, sensitivity; append = sensitivity.RunDir.append_line\n"
            "def counting(self, *a, n=[0]):\n    out = append(self, *a); n[0] += 1\n"
            "    if n[0] == 20: os.kill(os.getpid(), signal.SIGKILL)\n    return out\n"
            "sensitivity.RunDir.append_line = counting; sys.exit(cli.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", kill, "sensitivity", str(killed), "--level=1"], env={**os.environ, "WANDB_MODE": "disabled"})
    assert done.returncode == -9 and len((killed / "sensitivity.jsonl").read_bytes().splitlines()) == 20
    assert cli.main(["sensitivity", str(killed), "--level=1"]) == 0
    assert (killed / "sensitivity.jsonl").read_bytes() == reference
    stamp = (run_dir / "sensitivity.jsonl").stat().st_mtime_ns
    assert cli.main(["sensitivity", str(run_dir), "--level=1"]) == 0
    assert (run_dir / "sensitivity.jsonl").stat().st_mtime_ns == stamp  # nothing measured again
