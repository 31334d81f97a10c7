import dataclasses
import gzip
import hashlib
import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED

from lth import cli, config, data, datasets
from lth.datasets import DATASETS, DatasetSpec
from lth.datasets.base import read_idx
from lth.datasource import MissingDataError
from lth.imp import Run


def _module(name, root, **overrides):
    args = [f"--data.name={name}", f"--data.root={root}"] + [f"--{k}={v}" for k, v in overrides.items()]
    cfg = config.load(None, args + ["--train.duration=1ep"])
    return Run.open(cfg).data([cfg.seed])


@pytest.mark.skipif(not (SHARED / "data" / "mnist").is_dir(), reason="real MNIST lives in ../shared/data/mnist, absent in this clone")
def test_mnist_reader_on_the_real_files():
    x, y, x_test, y_test = DATASETS["mnist"].load(SHARED / "data")
    assert x.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist()[:3] == [5923, 6742, 5958] and np.bincount(y_test)[0] == 980
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the famous first labels of the training set
    module = _module("mnist", SHARED / "data")
    module.check()
    (xb, yb) = next(iter(module.val_dataloader()[0]))
    assert xb.shape == (1000, 1, 28, 28) and xb.dtype == torch.float32


@pytest.mark.skipif(not (SHARED / "data" / "mnist").is_dir(), reason="real MNIST lives in ../shared/data/mnist, absent in this clone")
def test_labels_reach_the_step_as_int64_which_the_compiled_cuda_step_needs():
    """MNIST's IDX labels are uint8. Eager cross-entropy takes them on a CPU; torch.compile's tracing of the CUDA step
    refused them on the first GPU run of LeNet-300-100. The "eager" backend traces as that step does, here."""
    cfg = config.load("experiments/lenet300_mnist.yaml", [f"--data.root={SHARED / 'data'}", "--seed=0"])
    run = Run.open(cfg)
    with warnings.catch_warnings():  # the reader's array is read-only; torch.from_numpy warned of it at every run
        warnings.simplefilter("error", UserWarning)
        xb, yb = next(iter(run.data([0]).val_dataloader()[0]))
    assert yb.dtype == torch.int64
    losses = torch.compile(run.build_module(0).losses, backend="eager", fullgraph=True)(xb, yb[:, None])
    assert losses.shape == (1,) and torch.isfinite(losses).all()


def _write_cifar(root, n_per_batch=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    written = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": g.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8), b"labels": g.integers(0, 10, n_per_batch).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        written.append(batch)
    return written


def test_cifar_reader_on_files_in_the_distributed_pickle_format(tmp_path):
    written = _write_cifar(tmp_path)
    x, y, x_test, y_test = DATASETS["cifar10"].load(tmp_path)
    assert x.shape == (100, 3, 32, 32) and x_test.shape == (20, 3, 32, 32) and x.dtype == np.uint8
    # The row layout is 1024 red, then green, then blue values, each row-major.
    assert x[0, 1, 0, 5] == written[0][b"data"][0, 1024 + 5]
    assert x[21, 2, 3, 4] == written[1][b"data"][1, 2048 + 3 * 32 + 4]
    assert y.tolist() == sum((b[b"labels"] for b in written[:5]), []) and y_test.tolist() == written[5][b"labels"]


def test_missing_dataset_names_the_download_command(tmp_path, capsys):
    args = [f"--out_dir={tmp_path}", "--data.name=cifar10", "--model=resnet20", f"--data.root={tmp_path}/nowhere"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 2
    err = capsys.readouterr().err
    assert f"lth data download cifar10 --root {tmp_path}/nowhere" in err and err.count("\n") == 1
    assert not any(tmp_path.glob("quickstart"))


def test_crop_and_flip_is_a_padded_crop_and_a_mirror():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    out = data.crop_and_flip(x, torch.tensor([[4, 4], [0, 8]]), torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(-1))  # offset 4 is the identity crop
    padded = torch.nn.functional.pad(x[1], (4, 4, 4, 4))
    assert torch.equal(out[1], padded[:, 0:32, 8:40])
    assert torch.all(out[1][:, :4] == 0)


def test_split_is_seeded_disjoint_and_the_same_for_every_run_seed():
    a = _module("synthetic", "unused", seed=0).split()
    b = _module("synthetic", "unused", seed=5).split()
    arrays_a, arrays_b = a.arrays, b.arrays
    assert torch.equal(arrays_a["x_val"], arrays_b["x_val"])
    assert len(arrays_a["x_train"]) == 768 and len(arrays_a["x_val"]) == 256
    train_rows = {tuple(r.flatten()[:4].tolist()) for r in arrays_a["x_train"]}
    assert not any(tuple(r.flatten()[:4].tolist()) in train_rows for r in arrays_a["x_val"])
    # Normalisation uses statistics of the training split: its inputs have mean 0 and std 1 per channel.
    normalised = a.normalise(arrays_a["x_train"])
    assert torch.allclose(normalised.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(normalised.std((0, 2, 3)), torch.ones(3), atol=1e-4)


def test_data_order_depends_on_seed_and_epoch_only():
    a = _module("synthetic", "unused", seed=0).split().arrays
    stream = lambda seeds, step: data.TrainBatches(a["x_train"], a["y_train"], 64, seeds, True, lambda x: x, lambda: step)  # noqa: E731
    epoch0 = [y for _, y in stream([0], 0)]
    assert [y for _, y in stream([0], 0)][3].tolist() == epoch0[3].tolist()
    assert [y for _, y in stream([1], 0)][0].tolist() != epoch0[0].tolist()
    assert [y for _, y in stream([0], 12)][0].tolist() != epoch0[0].tolist()  # the next epoch reshuffles
    assert len(list(stream([0], 12 + 5))) == 12 - 5
    # A resumed epoch serves exactly the batches the uninterrupted epoch serves from that step on, not merely as many.
    epoch1 = list(stream([0], 12))
    resumed = list(stream([0], 12 + 5))
    assert all(torch.equal(x, xe) and torch.equal(y, ye) for (x, y), (xe, ye) in zip(resumed, epoch1[5:], strict=True))
    # A pack's batch holds each member's own batch, side by side in the channel dimension.
    x0, y0 = next(iter(stream([0], 0)))
    x1, y1 = next(iter(stream([1], 0)))
    x01, y01 = next(iter(stream([0, 1], 0)))
    assert torch.equal(x01, torch.cat([x0, x1], 1)) and torch.equal(y01, torch.cat([y0, y1], 1))


def test_download_checks_md5_and_keeps_nothing_on_mismatch(tmp_path, monkeypatch):
    source = tmp_path / "mirror" / "t10k-labels-idx1-ubyte.gz"
    source.parent.mkdir()
    source.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02\x07\x03"))
    good = hashlib.md5(source.read_bytes()).hexdigest()
    spec = data.DATASETS["mnist"]
    for md5, ok in [("0" * 32, False), (good, True)]:
        files = ((source.as_uri(), md5, "mnist/t10k-labels-idx1-ubyte.gz"),)
        monkeypatch.setitem(data.DATASETS, "mnist", DatasetSpec(**{**spec.__dict__, "files": files}))
        root = tmp_path / "root"
        code = cli.main(["data", "download", "mnist", "--root", str(root)])
        assert code == (0 if ok else 2)
        kept = list((root / "mnist").iterdir())
        assert [p.name for p in kept] == (["t10k-labels-idx1-ubyte.gz"] if ok else [])
    assert read_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz", "mnist").tolist() == [7, 3]


def _mnist_copy(root, labels=lambda y: y, train_examples=None):
    """A copy of real MNIST under root/mnist: its training labels mapped by `labels`, its training split cut to
    `train_examples`; the test split as it is."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    source = SHARED / "data" / "mnist"
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / f"{stem}.gz").symlink_to(source / f"{stem}.gz")
    x, y = read_idx(source / "train-images-idx3-ubyte.gz", "mnist"), labels(read_idx(source / "train-labels-idx1-ubyte.gz", "mnist"))
    for stem, array, magic in (("train-images-idx3-ubyte", x, 0x803), ("train-labels-idx1-ubyte", y.astype(np.uint8), 0x801)):
        array = array[:train_examples]
        header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
        with gzip.open(folder / f"{stem}.gz", "wb", compresslevel=1) as f:
            f.write(header + array.tobytes())
    return root


def _lenet(root, tmp_path, levels):
    return ["run", "experiments/lenet300_mnist.yaml", f"--data.root={root}", f"--out_dir={tmp_path / 'runs'}", "--seed=0", "--arms=[ticket]",
            f"--prune.levels={levels}", "--train.duration=20it", "--train.eval_every=10it", "--train.checkpoint_every=10it", "--data.val_size=500"]


@pytest.mark.skipif(not (SHARED / "data" / "mnist").is_dir(), reason="real MNIST lives in ../shared/data/mnist, absent in this clone")
def test_a_run_continued_on_other_data_is_refused_and_the_same_data_elsewhere_continue_it(tmp_path, capsys):
    """A LeNet-300-100 run stopped at level 0 and continued with data.root at a copy of MNIST with other training
    labels once continued the same run (its test accuracy fell from 0.94 to 0.01). Where the data live is not the
    data: the same files in another folder continue it."""
    assert cli.main(_lenet(SHARED / "data", tmp_path, 0)) == 0
    run_dir = next((tmp_path / "runs").rglob("results.jsonl")).parent
    before = (run_dir / "results.jsonl").read_bytes()
    assert json.loads((run_dir / "dataset.json").read_text())["train_size"] == 60000
    capsys.readouterr()
    shifted = _mnist_copy(tmp_path / "shifted", labels=lambda y: (y + 1) % 10)
    assert cli.main(_lenet(shifted, tmp_path, 1)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "the run was trained on other data (sha256 differs" in err
    assert (run_dir / "results.jsonl").read_bytes() == before and not (run_dir / "level_1").exists()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "mnist").mkdir(parents=True)
    for file in (SHARED / "data" / "mnist").iterdir():
        (elsewhere / "mnist" / file.name).symlink_to(file)
    assert cli.main(_lenet(elsewhere, tmp_path, 1)) == 0
    assert "level 0/1 ticket: done earlier" in capsys.readouterr().err
    assert [json.loads(line)["level"] for line in (run_dir / "results.jsonl").read_text().splitlines()] == [0, 1]


@pytest.mark.skipif(not (SHARED / "data" / "mnist").is_dir(), reason="real MNIST lives in ../shared/data/mnist, absent in this clone")
def test_a_copy_smaller_than_its_dataset_stops_before_any_work(tmp_path, capsys):
    """A 6,000-example copy of MNIST once trained "1ep" as 550 steps, 55 of its epochs, under the full dataset's run id."""
    part = _mnist_copy(tmp_path / "part", train_examples=6000)
    assert cli.main(_lenet(part, tmp_path, 0)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "holds 6,000 training examples where the dataset has 60,000" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("bad, said", [
    (lambda a: (a[0], a[1] + 10, a[2], a[3]), "its training labels span [10, 19], outside [0, 10)"),
    (lambda a: (a[0], a[1], a[2][:, :, :20], a[3]), "its test inputs have shape (1, 20), the dataset's are (1, 40)"),
    (lambda a: (a[0], a[1][:-1], a[2], a[3]), "its training split has 4,000 inputs and 3,999 labels"),
], ids=["labels outside the classes", "inputs of another shape", "fewer labels than inputs"])
def test_data_that_disagree_with_their_dataset_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, bad, said):
    spec = data.DATASETS["mnist1d"]
    monkeypatch.setitem(data.DATASETS, "mnist1d", dataclasses.replace(spec, load=lambda root: bad(spec.load(root))))
    data.load_split.cache_clear()
    assert cli.main(["run", "experiments/quickstart.yaml", f"--out_dir={tmp_path}", "--seed=0", "--prune.levels=0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and said in err, err
    assert not any(tmp_path.rglob("results.jsonl"))


def _write_idx(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    magic = (0x800 + array.ndim).to_bytes(4, "big")
    path.write_bytes(gzip.compress(magic + b"".join(n.to_bytes(4, "big") for n in array.shape) + array.astype(np.uint8).tobytes()))


def test_each_built_in_dataset_is_its_own_file_and_download_offers_every_one_with_files(capsys):
    """Adding a dataset is adding its file: nothing else lists it (`lth/datasets/`)."""
    folder = Path(datasets.__file__).parent
    files = {p.stem for p in folder.glob("*.py")} - {"__init__", "base"}
    assert files <= set(DATASETS) and {"mnist", "fashion_mnist", "cifar10", "mnist1d"} <= files
    with pytest.raises(SystemExit):
        cli.main(["data", "download", "--help"])
    offered = capsys.readouterr().out
    assert all(name in offered for name in files if DATASETS[name].files) and "mnist1d" not in offered and "synthetic" not in offered
    assert cli.main(["data", "download", "mnist1d", "--root", "x"]) == 2  # generated, nothing to fetch: not offered


def test_fashion_mnist_is_mnist_s_format_in_a_folder_of_its_own(tmp_path):
    g = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": g.integers(0, 256, (6, 28, 28)), "train-labels-idx1-ubyte": np.arange(6) % 10,
              "t10k-images-idx3-ubyte": g.integers(0, 256, (2, 28, 28)), "t10k-labels-idx1-ubyte": np.array([9, 3])}
    for stem, array in arrays.items():
        _write_idx(tmp_path / "fashion_mnist" / f"{stem}.gz", array)
    spec = DATASETS["fashion_mnist"]
    x, y, x_test, y_test = spec.load(tmp_path)
    assert x.shape == (6, 1, 28, 28) and np.array_equal(x[:, 0], arrays["train-images-idx3-ubyte"]) and y_test.tolist() == [9, 3]
    assert [relative for _, _, relative in spec.files] == [f"fashion_mnist/{stem}.gz" for stem in arrays]
    with pytest.raises(MissingDataError, match=f"dataset fashion_mnist not found .* lth data download fashion_mnist --root {tmp_path / 'elsewhere'}$"):
        spec.load(tmp_path / "elsewhere")


@pytest.mark.skipif(not (SHARED / "data" / "mnist").is_dir(), reason="real MNIST lives in ../shared/data/mnist, absent in this clone")
def test_a_run_is_measured_only_on_the_data_it_was_trained_on(tmp_path, capsys):
    """`lth sensitivity` evaluates a trained run on the data at its recorded data.root: changed there since, its
    numbers would describe other data."""
    copy = _mnist_copy(tmp_path / "copy")
    assert cli.main(_lenet(copy, tmp_path, 1)) == 0
    run_dir = next((tmp_path / "runs").rglob("results.jsonl")).parent
    shutil.rmtree(copy / "mnist")
    _mnist_copy(copy, labels=lambda y: (y + 1) % 10)
    data.load_split.cache_clear()  # as a new process would read the files anew
    capsys.readouterr()
    assert cli.main(["sensitivity", str(run_dir), "--level", "1", "--fractions=[0.5]"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "the run was trained on other data (sha256 differs" in err
    assert not (run_dir / "sensitivity.jsonl").exists()
