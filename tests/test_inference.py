"""benchmarks/inference.py: dense against CSR copies of an exported network, figures checked and complete."""

import json
import sys
from pathlib import Path

import pytest
from conftest import result_rows

from lth import cli, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import inference  # noqa: E402


def test_the_benchmark_checks_outputs_and_its_json_carries_every_figure(tiny, tmp_path, capsys):
    args = tiny + ["--model=lenet_300_100", "--prune.levels=1"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    assert cli.main(["export", str(run_dir), "--level=1", f"--out={tmp_path / 'sparse.pt'}", "--sparse"]) == 0
    assert cli.main(["export", str(run_dir), "--level=1", f"--out={tmp_path / 'plain.pt'}"]) == 0
    capsys.readouterr()
    assert inference.main([str(tmp_path / "sparse.pt"), "--repeats=8", f"--json={tmp_path / 'out.json'}"]) == 0
    printed = capsys.readouterr().out.splitlines()[1].split()
    (result,) = json.loads((tmp_path / "out.json").read_text())["results"]
    assert result["weights_kept"] == pytest.approx(0.5, abs=0.001) and result["macs_kept"] < result["macs_dense"]
    assert result["max_output_difference"] <= 1e-5
    assert result["export"] == "sparse.pt", "the JSON names the file, never this machine's path"
    r = result
    assert printed == [
        "sparse.pt", "csr", f"{r['weights_kept']:.2%}", f"{r['macs_kept'] / r['macs_dense']:.2%}",
        f"{r['latency_ms_dense']:.3f}", "/", f"{r['latency_ms_pruned']:.3f}", f"{r['latency_speedup']:.2f}",
        f"{r['images_per_s_dense']:,.0f}", "/", f"{r['images_per_s_pruned']:,.0f}", f"{r['throughput_speedup']:.2f}",
    ]
    with pytest.raises(SystemExit, match="no sparse copies"):
        inference.main([str(tmp_path / "plain.pt")])


def test_the_export_of_a_users_own_network_is_benchmarked_too(tiny, tmp_path, capsys, monkeypatch):
    """The benchmark built the dense network from lth's registry alone: a model named by import path failed."""
    (tmp_path / "wide.py").write_text("from torch import nn\n\n\ndef Wide(input_shape, num_classes):\n"
                                      "    return nn.Sequential(nn.Flatten(), nn.Linear(192, 64), nn.ReLU(), nn.Linear(64, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [*(a for a in tiny if not a.startswith("--model=")), "--model.name=wide:Wide", "--prune.levels=1"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    assert cli.main(["export", str(run_dir), "--level=1", f"--out={tmp_path / 'wide.pt'}", "--sparse"]) == 0
    assert inference.main([str(tmp_path / "wide.pt"), "--repeats=4", f"--json={tmp_path / 'out.json'}"]) == 0
    (result,) = json.loads((tmp_path / "out.json").read_text())["results"]
    assert result["max_output_difference"] <= 1e-5 and result["weights_kept"] == pytest.approx(0.5, abs=0.001)


def test_a_channel_pruned_export_is_timed_narrow_against_its_full_widths(tiny, tmp_path, capsys):
    args = tiny + ["--model=mnist1d_cnn_bn", "--prune.method=channel", "--prune.levels=1", "--prune.fraction=0.75"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    run_dir = config.load("experiments/quickstart.yaml", args).run_dir()
    assert cli.main(["export", str(run_dir), "--level=1", f"--out={tmp_path / 'narrow.pt'}"]) == 0
    assert inference.main([str(tmp_path / "narrow.pt"), "--repeats=8", f"--json={tmp_path / 'out.json'}"]) == 0
    (result,) = json.loads((tmp_path / "out.json").read_text())["results"]
    assert result["kind"] == "narrow" and result["macs_kept"] < result["macs_dense"] / 4
    assert result["weights_kept"] == pytest.approx(result_rows(run_dir)[-1]["weights_remaining"])
