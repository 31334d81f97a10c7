"""benchmarks/throughput.py: the study it costs out, and a --json that carries every figure it prints."""

import json
import math
import multiprocessing
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import throughput  # noqa: E402

NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?%?(?![\w])")


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) or isinstance(value, str) and value.isdigit():  # precision "32"
        yield float(value)


def _carried(token: str, leaves: list[float]) -> bool:
    percent = token.endswith("%")
    text = token.rstrip("%").replace(",", "")
    printed = float(text)
    mantissa = text.split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    tolerance = 0.5 * 10 ** (-decimals) * (10 ** int(text.split("e")[1]) if "e" in text else 1) + 1e-12
    return any(math.isclose(v * (100 if percent else 1), printed, abs_tol=tolerance) for v in leaves)


def test_the_json_carries_every_figure_printed_and_every_configuration(tmp_path, capsys):
    out = tmp_path / "throughput.json"
    args = ["--model=mnist1d_mlp", "--device=cpu", "--steps=30", "--warmup=2", "--packs=2", "--workers=0", f"--json={out}"]
    assert throughput.main(args) == 0
    printed = capsys.readouterr().out.splitlines()[1:]  # the first line names the machine and torch's version
    saved = json.loads(out.read_text())
    (result,) = saved["results"]
    assert [r["config"] for r in result["rows"]] == ["reference", "plain", "lth", "lth-pack2", "lth-pack2-nomask"]
    assert [r["runs"] for r in result["rows"]] == [1, 1, 1, 2, 2]
    for r in result["rows"]:
        assert r["images_per_s"] > 0 and r["study_hours"] == pytest.approx(result["study"]["images"] / r["images_per_s"] / 3600)
        assert (r["train_share"] is None) == (r["config"] == "reference") and (r["train_share"] is None or 0 < r["train_share"] <= 1)
        assert r["evaluations"] == 30 // 25  # the quickstart's cadence, the same for every loop
    assert result["overhead"] == pytest.approx(result["rows"][1]["images_per_s"] / result["rows"][2]["images_per_s"])
    leaves = list(_leaves(saved))
    figures = [token for line in printed for token in NUMBER.findall(line)]
    assert len(figures) > 40
    missing = [token for token in figures if not _carried(token, leaves)]
    assert not missing, f"printed but not in the JSON: {missing}"


def test_a_benchmark_stopped_at_its_time_cap_keeps_what_it_measured(tmp_path, monkeypatch):
    """The GPU script stops each part at a cap: on the first lent GPU the JSON, written only at the end, was lost
    with the figures printed before the cap. Here the third configuration stops the benchmark."""

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(throughput, "lth_path", stopped)
    out = tmp_path / "throughput.json"
    with pytest.raises(KeyboardInterrupt):
        throughput.main(["--model=mnist1d_mlp", "--device=cpu", "--steps=30", "--warmup=2", "--packs=2", "--workers=0", f"--json={out}"])
    (result,) = json.loads(out.read_text())["results"]
    assert result["unfinished"] and [r["config"] for r in result["rows"]] == ["reference", "plain"]
    assert all(r["images_per_s"] > 0 for r in result["rows"])


def test_a_study_counts_every_seed_level_and_arm_with_scratch_b_longer():
    lenet = throughput.Study.of("lenet_300_100")  # 3 seeds: the dense run, then 15 levels × 3 arms, 50,000 steps each
    assert lenet.steps == 3 * 50_000 * (1 + 15 * 3) and lenet.images == lenet.steps * 60
    quickstart = throughput.Study.of("mnist1d_mlp")  # 525 steps a level; Scratch-B trains up to twice that (max_factor)
    without_scratch_b = 3 * 525 * (1 + 8 * 3)
    assert 3 * 8 * 525 < quickstart.steps - without_scratch_b <= 3 * 8 * 1050
    assert quickstart.describe()["arms"] == 4 and quickstart.describe()["levels"] == 8


@pytest.mark.parametrize("args, message", [
    (["--precision=fp16"], "--precision fp16"),
    (["--steps=3", "--warmup=3"], "must be more than --warmup"),
    (["--packs=0"], "pack sizes are at least 1"),
])
def test_bad_arguments_stop_before_any_work(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        throughput.main(["--device=cpu", *args])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_busy_mode_measures_each_configuration_beside_a_competing_process_and_stops_it(tmp_path, capsys):
    out = tmp_path / "busy.json"
    args = ["--model=mnist1d_mlp", "--device=cpu", "--steps=12", "--warmup=2", "--packs=", "--workers=0", "--busy", f"--json={out}"]
    before = {p.pid for p in multiprocessing.active_children()}
    assert throughput.main(args) == 0
    assert {p.pid for p in multiprocessing.active_children()} <= before, "the competing process is stopped"
    printed = capsys.readouterr().out.splitlines()[1:]
    quiet, busy = json.loads(out.read_text())["results"]
    assert (quiet["busy"], busy["busy"]) == (False, True)
    assert [r["config"] for r in busy["rows"]] == [r["config"] for r in quiet["rows"]] == ["reference", "plain", "lth"]
    for q, b in zip(quiet["rows"], busy["rows"]):
        assert b["slowdown"] == pytest.approx(q["images_per_s"] / b["images_per_s"]) and b["threads"] == q["threads"]
    assert [r["threads"] for r in quiet["rows"]][1:] == [1, 1], "lth's policy: one thread for the quickstart's MLP"
    leaves = list(_leaves(json.loads(out.read_text())))
    missing = [token for line in printed for token in NUMBER.findall(line) if not _carried(token, leaves)]
    assert not missing, f"printed but not in the JSON: {missing}"


def test_decode_mode_times_the_stream_at_each_worker_count_on_imagenet_sized_jpegs(tmp_path, capsys):
    out = tmp_path / "decode.json"
    assert throughput.main(["--decode", "48", "--workers", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["decode"]
    assert [r["workers"] for r in rows] == [1, 2]
    assert all(r["images_per_s"] > 0 and r["images_per_s_per_worker"] == pytest.approx(r["images_per_s"] / r["workers"]) for r in rows)
    assert 50 < rows[0]["jpeg_kb"] < 300  # ImageNet's JPEGs average about 110 kB
    assert capsys.readouterr().out.count("images/s") == 2


@pytest.mark.slow
def test_devices_mode_compares_one_rank_with_two_and_reports_the_efficiency(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    assert throughput.main(["--devices", "2", "--model", "mnist1d_mlp", "--steps", "60", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["scaling"]
    assert [r["devices"] for r in rows] == [1, 2] and rows[0]["speedup"] == 1.0
    assert rows[1]["efficiency"] == pytest.approx(rows[1]["images_per_s"] / rows[0]["images_per_s"] / 2)
    assert "the ranks share the same cores" in capsys.readouterr().out
