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

from lth import cli, config, data, export, plugins, user_dataset
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


class Keyed(Blobs):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return {"x": x}, y


def keyed():
    return {"train": Keyed(600, 0), "test": Keyed(200, 1), "num_classes": 3}


class Sequences(Dataset):
    """Token sequences from 3..9 (0 pads), of 4 to 8 tokens and every 40th of 24; the class: whether 7 occurs more
    often than 8."""

    def __init__(self, n, seed, drop=None):
        g = torch.Generator().manual_seed(seed)
        lengths = [24 if i % 40 == 0 else int(k) for i, k in enumerate(torch.randint(4, 9, (n,), generator=g))]
        self.tokens = [torch.randint(3, 10, (k,), generator=g) for k in lengths]
        self.drop = drop

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        t = self.tokens[i]
        x = {"input_ids": t, "attention_mask": torch.ones_like(t)}
        if i == self.drop:
            del x["attention_mask"]
        return x, int((t == 7).sum() > (t == 8).sum())


PADDED = []  # the lengths of the batches `pad` made


def pad(inputs):
    longest = max(len(x["input_ids"]) for x in inputs)
    PADDED.append(longest)
    return {key: torch.stack([torch.nn.functional.pad(x[key], (0, longest - len(x[key]))) for x in inputs]) for key in inputs[0]}


def sequences():
    return {"train": Sequences(800, 0), "test": Sequences(200, 1), "num_classes": 2, "collate": pad}


def many_sequences():
    return {"train": Sequences(3000, 0), "test": Sequences(200, 1), "num_classes": 2, "collate": pad}


def unpadded():
    return {"train": Sequences(800, 0), "test": Sequences(200, 1), "num_classes": 2}


def missing_key():
    return {"train": Sequences(800, 0, drop=300), "test": Sequences(200, 1), "num_classes": 2, "collate": pad}


def collate_not_callable():
    return {"train": Sequences(800, 0), "test": Sequences(200, 1), "num_classes": 2, "collate": "pad"}


class Bag(torch.nn.Module):
    """The mean of the unpadded tokens' embeddings, then an MLP: called with the batch's fields as keywords."""

    def __init__(self, num_classes, width=32):
        super().__init__()
        self.embed = torch.nn.Embedding(10, width)
        self.hidden = torch.nn.Linear(width, width)
        self.out = torch.nn.Linear(width, num_classes)

    def forward(self, input_ids, attention_mask):
        kept = attention_mask[..., None].float()
        mean = (self.embed(input_ids) * kept).sum(1) / kept.sum(1)
        return self.out(torch.relu(self.hidden(mean)))
'''
RUN = ["--model=mnist1d_mlp", "--seed=0", "--arms=[ticket,reinit]", "--prune.levels=1", "--train.duration=4ep", "--train.eval_every=10it",
       "--train.checkpoint_every=10it", "--data.batch_size=50", "--train.lr=0.01"]
SEQUENCES = [*RUN, "--data.name=mydata:sequences", "--model=mydata:Bag", "--arms=[ticket,reinit,random_prune]", "--train.optimizer=adam",
             "--train.lr=0.01", "--data.batch_size=32", "--train.eval_every=25it", "--train.checkpoint_every=25it"]


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


@pytest.mark.parametrize("args, said", [
    (["--data.name=mydata:missing_key"], "data.name: mydata:missing_key's train example has keys ['input_ids'], the first example "
                                         "['attention_mask', 'input_ids'] ('attention_mask' differs)"),
    (["--data.name=mydata:collate_not_callable"], "data.name: mydata:collate_not_callable's collate is a str, not a function of a list of inputs"),
    (["--data.name=mydata:unpadded"], "data.name: mydata:unpadded's train examples differ in shape: {'input_ids': (8,), 'attention_mask': (8,)} against "
                                      "{'input_ids': (24,), 'attention_mask': (24,)} (a batch of the model's inputs needs them equal; a dataset of "
                                      "sequences gives a collate that pads them)"),
    (["--prune.method=channel"], "prune: channel removes channels, found by tracing the network on one input tensor; mydata:sequences's examples "
                                 "are batched by their collate (dict or padded inputs): prune its weights"),
    (["--model=mnist1d_mlp"], "model: mnist1d_mlp takes one input tensor; mydata:sequences's examples are dicts of attention_mask, input_ids: name "
                                   "a model that takes them as keywords"),
])
def test_bad_dict_data_are_one_line_and_exit_2_before_any_work(mydata, capsys, args, said):
    assert cli.main(["run", QUICKSTART, *SEQUENCES, *args, "--data.workers=0", f"--out_dir={mydata / 'runs'}"]) == 2
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


def test_dict_batches_padded_by_the_data_s_collate_train_and_evaluate(mydata):
    """Token sequences of 4 to 24 tokens, padded to each batch's longest by the dataset's collate, fed to a model of the
    user's that takes `input_ids` and `attention_mask` as keywords: IMP and its controls train and evaluate on them."""
    assert cli.main(["run", QUICKSTART, *SEQUENCES, "--data.workers=2", f"--out_dir={mydata / 'runs'}"]) == 0
    rows = _rows(mydata / "runs")
    assert [(r["level"], r["arm"]) for r in rows] == [(0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "random_prune")]
    assert rows[0]["test_acc"] > 0.75 and all(r["train_acc"] is not None for r in rows)  # counting 7s against 8s; a guess is 0.6
    assert {8, 24} <= set(sys.modules["mydata"].PADDED)  # padded to each batch's longest, not one length
    assert rows[1]["weights_remaining"] < 1 and rows[1]["macs"] < rows[0]["macs"]
    # What reads a trained run works on its dict inputs too: the export's check of its outputs, and the sensitivity scan.
    (run_dir,) = (path.parent for path in (mydata / "runs").rglob("results.jsonl"))
    assert cli.main(["export", str(run_dir), "--level=1", f"--out={mydata / 'ticket.pt'}"]) == 0
    network = export.load(mydata / "ticket.pt")
    batch = sys.modules["mydata"].pad([sys.modules["mydata"].Sequences(3, 5)[i][0] for i in range(3)])
    assert network(**batch).shape == (3, 2)
    assert cli.main(["sensitivity", str(run_dir), "--level=1", "--fractions=[0.5]"]) == 0


def test_dict_examples_are_drawn_in_the_order_of_the_same_data_as_arrays(mydata):
    """Step t's examples are a function of (seed, t) whatever the examples are: the same data as dicts and as arrays
    give the same batches, across an epoch's end."""
    batches = {}
    for name in ("blobs", "keyed"):
        spec = data.dataset(config.load(QUICKSTART, [*RUN, f"--data.name=mydata:{name}", "--data.workers=0", "--model=mydata:Bag"]).data)
        module = data.DataModule(spec, "data", 50, 60, [3])
        stream, split = module.train_dataloader(), module.split()
        batches[name] = []
        for step in (0, 5, 10, 11, 20):  # 10 steps an epoch
            stream.global_step = lambda step=step: step
            x, y = next(iter(stream))
            batches[name].append((x["x"] if name == "keyed" else x * split.std + split.mean, y))  # the arrays' inputs are normalised
    for (arrays, y), (records, y_records) in zip(batches["blobs"], batches["keyed"]):
        assert torch.equal(y, y_records) and torch.allclose(arrays, records, atol=1e-5)
    assert not torch.equal(batches["keyed"][0][1], batches["keyed"][1][1])


def test_dict_examples_neither_augment_nor_pack(mydata, capsys):
    for extra, said in ((["--data.augment=true"], "data.augment: the augmentation crops and flips images [C, H, W]; mydata:sequences's inputs are not those"),
                        (["--pack=2"], "pack: mydata:sequences's examples are batched by their collate, one run at a time")):
        assert cli.main(["run", QUICKSTART, *SEQUENCES, *extra, "--data.workers=0", f"--out_dir={mydata / 'runs'}"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and said in err, err


def test_many_dict_examples_read_in_workers_do_not_exhaust_file_descriptors(mydata):
    """A tensor crossing from a DataLoader worker is a shared-memory file, one descriptor each: 3,000 dict examples
    of two fields under a limit of 256 descriptors ran out, the worker's queue dropped a batch, and the reader waited
    for it for ever (found on a 9,514-sentence corpus). Bounded: a hang fails here."""
    script = ("import resource, sys; from pathlib import Path; from lth import user_dataset\n"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
              "x, y, x_test, y_test = user_dataset._read('mydata:many_sequences', 2, Path('data'))\n"
              "print(len(x), len(x_test))")
    done = subprocess.run([sys.executable, "-c", script], cwd=mydata, env={"PYTHONPATH": f"{mydata}:{Path.cwd()}"}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["3000", "200"], done.stderr[-2000:]
