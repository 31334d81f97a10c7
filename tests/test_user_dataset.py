"""Your own data, by import path (issue 33): `data.name: package.module:callable` returning map-style datasets trains
with no edit to lth, lth keeps owning the order (a kill mid-epoch resumes onto the same batches), the data's own
validation split is used, what the data are is the run's, and bad data are one line and exit 2 before any work."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import without_timing

from lth import cli, config, data, plugins, user_dataset
from lth.imp import Run

QUICKSTART = str(Path("experiments/quickstart.yaml").resolve())
KILL_AT = str(Path("tests/kill_at.py").resolve())
DATA = '''
import numpy as np
import torch
from torch.utils.data import Dataset

SHIFT = 0.0


class Blobs(Dataset):
    """Three Gaussian blobs in 16 dimensions, one per class, drawn from `seed`."""

    def __init__(self, n, seed, classes=3):
        g = np.random.default_rng(seed)
        self.y = g.integers(0, classes, n)
        centres = np.random.default_rng(7).standard_normal((classes, 16)) * 1.5
        self.x = (centres[self.y % 3] + g.standard_normal((n, 16)) + SHIFT).astype(np.float32)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i])[None], int(self.y[i])


class Ragged(Blobs):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return (x[:, :8] if i == 300 else x), y


class Dicts(Blobs):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return {"input_ids": x, "labels": y}


def blobs(root):
    return {"train": Blobs(600, 0), "test": Blobs(200, 1), "num_classes": 3}


def blobs_with_val():
    return {"train": Blobs(600, 0), "val": Blobs(100, 2), "test": Blobs(200, 1), "num_classes": 3}


def a_list():
    return [Blobs(600, 0), Blobs(200, 1)]


def no_classes():
    return {"train": Blobs(600, 0), "test": Blobs(200, 1), "num_classes": 1}


def empty():
    return {"train": Blobs(0, 0), "test": Blobs(200, 1), "num_classes": 3}


def ragged():
    return {"train": Ragged(600, 0), "test": Blobs(200, 1), "num_classes": 3}


def dicts():
    return {"train": Dicts(600, 0), "test": Blobs(200, 1), "num_classes": 3}


def labels_beyond():
    return {"train": Blobs(600, 0, classes=5), "test": Blobs(200, 1), "num_classes": 3}


def fails():
    raise FileNotFoundError("no such corpus")
'''
RUN = ["--model=mnist1d_mlp", "--seed=0", "--arms=[ticket,reinit]", "--prune.levels=1", "--train.duration=4ep", "--train.eval_every=10it",
       "--train.checkpoint_every=10it", "--data.batch_size=50", "--train.lr=0.01"]


@pytest.fixture
def mydata(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(DATA)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for cached in (user_dataset.splits, user_dataset.spec, data.load_split, plugins._digest):
        cached.cache_clear()
    sys.modules.pop("mydata", None)
    return tmp_path


def _rows(root: Path) -> list[dict]:
    return without_timing([json.loads(line) for path in sorted(root.rglob("results.jsonl")) for line in path.read_text().splitlines()])


def test_a_dataset_of_the_user_s_own_trains_with_no_edit_to_lth(mydata):
    assert cli.main(["run", QUICKSTART, *RUN, "--data.name=mydata:blobs", "--data.workers=2", f"--out_dir={mydata / 'runs'}"]) == 0
    rows = _rows(mydata / "runs")
    assert [(r["level"], r["arm"]) for r in rows] == [(0, "ticket"), (1, "ticket"), (1, "reinit")]
    assert all(r["test_acc"] > 0.6 for r in rows)  # three blobs: chance is a third
    recorded = json.loads(next((mydata / "runs").rglob("dataset.json")).read_text())
    assert recorded["train_size"] == 600 and recorded["test_size"] == 200 and len(recorded["sha256"]) == 64


def test_the_data_s_own_validation_split_is_the_one_held_out(mydata, capsys):
    cfg = config.load(QUICKSTART, [*RUN, "--data.name=mydata:blobs_with_val", "--data.workers=0", f"--out_dir={mydata / 'runs'}"])
    split = data.load_split(Run.open(cfg).net.spec, cfg.data.root, 100)
    given = sys.modules["mydata"].Blobs(100, 2)
    assert torch.equal(split.arrays["x_val"][:, 0], torch.from_numpy(given.x)) and len(split.arrays["x_train"]) == 600
    assert cli.main(["run", QUICKSTART, *RUN, "--data.name=mydata:blobs_with_val", "--data.val_size=50", f"--out_dir={mydata / 'runs'}"]) == 2
    assert "gives its own validation split of 100 examples; leave data.val_size unset" in capsys.readouterr().err


def test_editing_the_data_s_code_gives_another_run(mydata):
    args = [*RUN, "--data.name=mydata:blobs"]
    before = config.load(QUICKSTART, args).run_id()
    (mydata / "mydata.py").write_text(DATA.replace("SHIFT = 0.0", "SHIFT = 0.5"))
    plugins._digest.cache_clear()  # a new process reads the file anew; this one cached it
    assert config.load(QUICKSTART, args).run_id() != before


@pytest.mark.slow
def test_a_kill_mid_epoch_resumes_onto_the_same_batches_with_workers(mydata):
    args = ["run", QUICKSTART, *RUN, "--data.name=mydata:blobs", "--data.workers=2"]
    env = {"WANDB_MODE": "disabled", "PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(mydata)}
    whole = subprocess.run([sys.executable, "-m", "lth.cli", *args, f"--out_dir={mydata / 'whole'}"], cwd=mydata, env=env, capture_output=True,
                           text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = subprocess.run([sys.executable, KILL_AT, "0:25", *args, f"--out_dir={mydata / 'killed'}"], cwd=mydata, env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]  # step 25 of 40: mid-epoch (10 steps an epoch), after the checkpoint at 20
    again = subprocess.run([sys.executable, "-m", "lth.cli", *args, f"--out_dir={mydata / 'killed'}"], cwd=mydata, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _rows(mydata / "killed") == _rows(mydata / "whole") != []


@pytest.mark.parametrize("name, said", [
    ("nomodule:blobs", "data.name: cannot import nomodule (ModuleNotFoundError"),
    ("mydata:nothing", "data.name: mydata has no callable 'nothing'"),
    ("mydata:fails", "data.name: mydata:fails failed (FileNotFoundError: no such corpus)"),
    ("mydata:a_list", "data.name: mydata:a_list returned list, not a mapping with train, test"),
    ("mydata:no_classes", "data.name: mydata:no_classes's num_classes is 1; an integer of 2 or more"),
    ("mydata:empty", "data.name: mydata:empty's train split is empty"),
    ("mydata:dicts", "data.name: mydata:dicts's train examples are dicts, not (input, label) pairs"),
    ("mydata:ragged", "data.name: mydata:ragged's train examples differ in shape: (1, 8) against (1, 16)"),
    ("mydata:labels_beyond", "its training labels span [0, 4], outside [0, 3)"),
])
def test_bad_data_are_one_line_and_exit_2_before_any_work(mydata, capsys, name, said):
    assert cli.main(["run", QUICKSTART, *RUN, f"--data.name={name}", "--data.workers=0", f"--out_dir={mydata / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and said in err, err
    assert not any((mydata / "runs").rglob("results.jsonl")) if (mydata / "runs").exists() else True


def test_ragged_examples_read_in_worker_processes_are_one_line_too(mydata, capsys):
    assert cli.main(["run", QUICKSTART, *RUN, "--data.name=mydata:ragged", "--data.workers=2", f"--out_dir={mydata / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "examples differ in shape" in err, err


def test_the_examples_are_read_in_index_order_whatever_the_workers(mydata):
    made = user_dataset.splits("mydata:blobs", "data")
    for workers in (0, 2):
        x, y, x_test, y_test = user_dataset._read("mydata:blobs", workers, Path("data"))
        assert np.array_equal(x[:, 0], made["train"].x) and np.array_equal(y, made["train"].y) and np.array_equal(y_test, made["test"].y)
