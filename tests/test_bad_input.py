"""Bad input: one clear line on stderr, exit code 2, before any work, and nothing on disk changed. The cases are
one table (`CASES`): a new one is one line."""

import gzip
import hashlib
import json
import os
import urllib.error
from pathlib import Path

import pytest
import yaml
from conftest import TINY

from lth import cli, config, data


def _config(tmp: Path, text: bytes) -> str:
    path = tmp / "bad.yaml"
    path.write_bytes(text)
    return str(path)


def _file(tmp: Path) -> Path:
    path = tmp / "a_file"
    path.write_text("not a directory")
    return path


def _mnist(tmp: Path) -> Path:
    """An MNIST folder whose training images are truncated and whose other files are not gzip at all."""
    folder = tmp / "data" / "mnist"
    folder.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / f"{stem}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 64)[:30] if stem.startswith("train-images") else b"plain")
    return tmp / "data"


def _results(run: Path, text: str) -> str:
    (run / "results.jsonl").write_text(text)
    return str(run)


def _edited(run: Path, section: str, key: str, value) -> str:
    """The finished run with one setting of its config.yaml changed by hand; the case's check restores it."""
    settings = yaml.safe_load((run / "config.yaml").read_text())
    settings[section][key] = value
    (run / "config.yaml").write_text(yaml.safe_dump(settings))
    return str(run)


def _line(run: Path, **changed) -> str:
    """The finished run's first results line with some fields changed, as a hand edit would."""
    first = json.loads((run / "results.jsonl").read_text().splitlines()[0])
    return json.dumps(first | changed) + "\n"


RUN = ["run", "experiments/quickstart.yaml"]
SWEEP = b"program: x\nmethod: grid\ncommand: [no-such-program, run]\nparameters: {seed: {values: [0]}}\n"
# (id, the command given the test's folder and a finished tiny run in it, what the one line says)
CASES = [
    ("non-UTF-8 config", lambda tmp, run: ["run", _config(tmp, b"name: caf\xe9\n")], "not UTF-8 text (byte 9 is 0xe9)"),
    ("a key given twice", lambda tmp, run: ["run", _config(tmp, b"seed: 0\nname: a\nseed: 1\n")], "the key 'seed' is given twice (line 3)"),
    ("negative momentum", lambda tmp, run: [*RUN, "--train.momentum=-0.9"], "train.momentum: must be 0 or more, got -0.9"),
    ("negative weight decay", lambda tmp, run: [*RUN, "--train.weight_decay=-1e-4"], "train.weight_decay: must be 0 or more"),
    ("negative gamma", lambda tmp, run: [*RUN, "--train.gamma=-0.1"], "train.gamma: must be positive, got -0.1"),
    ("a seed beyond 64 bits", lambda tmp, run: [*RUN, f"--seed={2**64}"], "seed: must lie in [0, 2**63)"),
    ("an arm listed twice", lambda tmp, run: [*RUN, "--arms=[ticket,ticket]"], "arms: ticket is listed twice"),
    ("a layer_fractions glob of no layer", lambda tmp, run: [*RUN, "--prune.layer_fractions={'fc*': 0.1}"], "prune.layer_fractions: 'fc*' matches no"),
    ("a dense_layers glob of no layer", lambda tmp, run: [*RUN, "--prune.dense_layers=[out.weight]"], "prune.dense_layers: 'out.weight' matches no"),
    ("every layer dense", lambda tmp, run: [*RUN, "--prune.dense_layers=['*']"], "every prunable layer of mnist1d_mlp is left dense"),
    ("out_dir is a file", lambda tmp, run: [*RUN, f"--out_dir={_file(tmp)}"], "is a file, not a directory"),
    ("out_dir below a file", lambda tmp, run: [*RUN, f"--out_dir={_file(tmp) / 'runs'}"], "a_file is a file, not a directory (the run would be"),
    ("a negative cache budget", lambda tmp, run: [*RUN, "--data.cache_bytes=-1"], "data.cache_bytes: must be at least 0, got -1"),
    ("a warm-up past the end", lambda tmp, run: [*RUN, "--train.warmup=20ep"], "train.warmup: 20ep (700 steps) is not before the end of training (525 steps)"),
    ("an image folder that is not there", lambda tmp, run: [*RUN, "--data.name=imagefolder", f"--data.root={tmp / 'nowhere'}"],
     "nowhere does not exist (expected train/"),
    ("a batch the ranks do not divide", lambda tmp, run: [*RUN, "--train.devices=3"], "data.batch_size: 100 is the batch of all 3 ranks together"),
    ("batch norm across CPU ranks", lambda tmp, run: [*RUN, "--model=mnist1d_cnn_bn", "--train.devices=2"],
     "has batch norm, whose statistics over the whole batch"),
    ("stability across ranks", lambda tmp, run: ["stability", "experiments/quickstart.yaml", "--train.devices=2", "--rewind=[0]", "--levels=[0]"],
     "lth stability: trains its copies on one device each"),
    ("no devices", lambda tmp, run: [*RUN, "--train.num_nodes=0"], "train.num_nodes: must be at least 1, got 0"),
    ("sensitivity of a level not trained", lambda tmp, run: ["sensitivity", str(run), "--level=3"], "--level 3: "),
    ("a sensitivity fraction outside (0, 1)", lambda tmp, run: ["sensitivity", str(run), "--fractions=[0.5,1.0]"], "--fractions: each must lie in (0, 1)"),
    ("an unknown sensitivity method", lambda tmp, run: ["sensitivity", str(run), "--method=nm"], "--method: one of magnitude, channel"),
    ("a damaged MNIST file", lambda tmp, run: [*RUN, "--data.name=mnist", f"--data.root={_mnist(tmp)}", "--model=lenet_300_100"],
     "train-images-idx3-ubyte.gz is damaged ("),
    ("a results line not an object", lambda tmp, run: ["report", _results(run, "[1, 2]\n"), "--out", str(tmp / "report")], ":1 is not a results line"),
    ("a results line's level as text", lambda tmp, run: ["report", _results(run, _line(run, level="0")), "--out", str(tmp / "report")],
     "results.jsonl:1: level is '0', not int; lth wrote no such line"),
    ("a results line's accuracy as text", lambda tmp, run: ["report", _results(run, _line(run, test_acc="0.5")), "--out", str(tmp / "report")],
     "results.jsonl:1: test_acc is '0.5', not float"),
    ("a results line of an unknown arm", lambda tmp, run: ["report", _results(run, _line(run, arm="Reinit")), "--out", str(tmp / "report")],
     "results.jsonl:1: arm 'Reinit' is no arm of this lth"),
    ("a run over a mistyped results line", lambda tmp, run: [*RUN, *TINY, "--prune.levels=1", "--name=tiny", f"--out_dir={run.parents[1]}",
                                                             _results(run, _line(run, level="0")) and "--seed=0"],
     "results.jsonl:1: level is '0', not int"),
    ("export of a run whose config was edited", lambda tmp, run: ["export", _edited(run, "model", "name", "mnist1d_cnn"), "--level=0", f"--out={tmp / 'x.pt'}"],
     "changed since the run was trained: its model, data or seed (mnist1d_cnn-synthetic-seed0, the run's mnist1d_mlp-synthetic-seed0)"),
    ("sensitivity of a run whose config was edited", lambda tmp, run: ["sensitivity", _edited(run, "train", "lr", 0.5)],
     "config.yaml, or the code it names, changed since the run was trained: its settings (digest "),
    ("an empty results file", lambda tmp, run: ["report", _results(run, ""), "--out", str(tmp / "report")], "holds no results line yet: nothing to report"),
    ("a report into a path below a file", lambda tmp, run: ["report", str(run), "--out", str(_file(tmp) / "report")], "a_file/report: Not a directory"),
    ("export to a directory", lambda tmp, run: ["export", str(run), "--level=0", f"--out={tmp}"], "is a directory; name the file to write"),
    ("stability with no level", lambda tmp, run: ["stability", "experiments/quickstart.yaml", *TINY, "--levels=[]"], "--levels: give at least one"),
    ("a sweep of a missing program", lambda tmp, run: ["sweep", _config(tmp, SWEEP), "--index=0"], "'no-such-program', which is not a program on this PATH"),
    ("an empty config file", lambda tmp, run: ["run", _config(tmp, b"")], "bad.yaml is empty: an experiment names at least its model and data"),
    ("a config that is a folder", lambda tmp, run: ["run", str(tmp)], "is a folder; name one of its YAML files"),
    ("a fraction that removes no weight", lambda tmp, run: [*RUN, "--prune.fraction=1e-9"], "a fraction of 1e-09 removes none of the 15000 weights"),
    ("a fraction that removes every weight", lambda tmp, run: [*RUN, "--prune.fraction=0.99999"], "a fraction of 0.99999 removes all 15000 weights"),
    ("a second 2:4 level", lambda tmp, run: [*RUN, "--prune.method=nm", "--prune.levels=2"], "a second removes nothing; set prune.levels: 1 (got 2)"),
    ("an absolute name", lambda tmp, run: [*RUN, f"--name={tmp / 'elsewhere'}"], "must be a folder name inside out_dir"),
    ("a name out of out_dir", lambda tmp, run: [*RUN, "--name=../up"], "must be a folder name inside out_dir"),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (one level), shared by the cases: none may change it."""
    out = tmp_path_factory.mktemp("finished")
    args = [*TINY, "--prune.levels=0", f"--out_dir={out}", "--name=tiny"]
    assert cli.main([*RUN, *args]) == 0
    return config.load(None, args).run_dir()


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_before_any_work(tmp_path, finished, capsys, command, message):
    results, settings = finished / "results.jsonl", finished / "config.yaml"
    kept, kept_settings = results.read_bytes(), settings.read_bytes()
    argv = command(tmp_path, finished)
    if argv[0] == "run" and not any(a.startswith("--out_dir") for a in argv):
        argv.append(f"--out_dir={tmp_path / 'runs'}")
    before = _hashes(tmp_path), _hashes(finished)
    try:
        assert cli.main(argv) == 2
        after = _hashes(tmp_path), _hashes(finished)
    finally:
        results.write_bytes(kept)  # the finished run as the next case expects it
        settings.write_bytes(kept_settings)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lth: error: ") and message in err[0], err
    assert after == before, "nothing on disk changed"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize("existing", ["out_dir", "run"], ids=["a new run", "a run to extend or repeat"])
def test_an_unwritable_out_dir_is_refused_before_any_work(tmp_path, finished, capsys, monkeypatch, existing):
    """As root every folder is writable, so the refusal is checked through what the system would answer."""
    (tmp_path / "ro").mkdir()
    target = tmp_path / "ro" if existing == "out_dir" else finished
    out_dir = tmp_path / "ro" if existing == "out_dir" else finished.parents[1]
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != target)
    before = _hashes(tmp_path), _hashes(finished)
    assert cli.main([*RUN, *TINY, "--name=tiny", f"--out_dir={out_dir}"] + (["--prune.levels=0"] if existing == "run" else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"out_dir: {target} is not writable by this user" in err[0]
    assert (_hashes(tmp_path), _hashes(finished)) == before


def test_a_download_without_network_says_so_and_leaves_no_folder(tmp_path, capsys, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    assert cli.main(["data", "download", "mnist", "--root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "is there a network here?" in err[-1] and err[-1].startswith("lth: error: ") and not (tmp_path / "data").exists()
