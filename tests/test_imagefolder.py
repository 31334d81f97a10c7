"""`data.name: imagefolder`: class folders of image files, served from a decoded cache or streamed from the files."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, result_rows, without_timing
from PIL import Image

from lth import cli, config, data, imagefolder

QUICKSTART = "experiments/quickstart.yaml"  # the settings args() leaves alone
CLASSES = ("bee", "ant", "cat")  # written unsorted: labels follow the sorted names


def write_tree(root: Path, train: int = 12, test: int = 4, size: int = 8) -> Path:
    """A tiny learnable image folder: class c's images lean to colour channel c, with noise."""
    g = np.random.default_rng(0)
    for split, count in (("train", train), ("val", test)):
        for c in CLASSES:
            folder = root / split / c
            folder.mkdir(parents=True)
            label = sorted(CLASSES).index(c)
            for i in range(count):
                pixels = g.integers(0, 120, (size, size, 3))
                pixels[..., label] += 120
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=95)
    return root


def args(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--seed=0", "--arms=[ticket]", "--model=mnist1d_mlp", "--data.name=imagefolder", f"--data.root={root}",
        f"--data.cache={tmp_path / 'cache'}", "--data.image_size=8", "--data.batch_size=8", "--data.workers=1",
        "--train.optimizer=sgd", "--train.lr=0.05", "--train.duration=3ep", "--train.eval_every=2it", "--train.checkpoint_every=2it",
        "--prune.fraction=0.5", "--prune.levels=1",
        "--prune.rewind=3it", f"--out_dir={tmp_path / 'runs'}", "--name=folder", *extra,
    ]


def module(tmp_path, root, seeds, *extra) -> data.DataModule:
    cfg = config.load(QUICKSTART, args(tmp_path, root, *extra))
    steps = config.steps(cfg)
    return data.DataModule(data.dataset(cfg.data), cfg.data.root, cfg.data.batch_size, steps.val_size, seeds)


def test_a_folder_loads_with_sorted_class_labels_and_the_run_records_the_class_map(tmp_path, capsys):
    root = write_tree(tmp_path / "tree")
    spec = data.dataset(config.load(QUICKSTART, args(tmp_path, root)).data)
    assert spec.folder.classes == ("ant", "bee", "cat") and spec.num_classes == 3 and spec.input_shape == (3, 8, 8)
    assert spec.stream is None  # 144 KB decoded: the cache path
    x_train, y_train, x_test, y_test = spec.load(root)
    names = [n for n, _ in spec.folder.files["test"]]
    assert y_test.tolist() == [sorted(CLASSES).index(n.split("/")[1]) for n in names]
    for i in (0, 5, 11):  # the pixels are the files' own, in the listed order
        assert np.array_equal(x_test[i], np.asarray(Image.open(root / names[i]).convert("RGB")).transpose(2, 0, 1))
    # What the images say agrees with the labels: class c's channel c is the brightest.
    assert (x_train.astype(float).mean((2, 3)).argmax(1) == y_train).all()

    assert cli.main(["run", QUICKSTART, *args(tmp_path, root)]) == 0
    run_dir = config.load(QUICKSTART, args(tmp_path, root)).run_dir()
    recorded = json.loads((run_dir / "dataset.json").read_text())
    assert recorded["classes"] == ["ant", "bee", "cat"] and (recorded["train"], recorded["test"]) == (36, 12)
    assert result_rows(run_dir)[0]["test_acc"] > 1 / 3  # it learns the colours


def test_the_run_refuses_to_continue_on_other_images(tmp_path, capsys):
    root = write_tree(tmp_path / "tree")
    assert cli.main(["run", QUICKSTART, *args(tmp_path, root)]) == 0
    (root / "train" / "ant" / "000.jpg").rename(root / "train" / "ant" / "999.jpg")
    data._folder_dataset.cache_clear()  # as a new process would list the folder again
    capsys.readouterr()
    assert cli.main(["run", QUICKSTART, *args(tmp_path, root)]) == 2
    assert "the run was trained on other data (files_sha256 differs" in capsys.readouterr().err


def test_cache_and_stream_draw_the_same_examples_at_every_step():
    """The stream's batch sampler and the in-memory batches, over indices as images: the same examples at every step
    of a pack of two seeds, from a mid-epoch start and across an epoch boundary."""
    n, b, seeds, step = 37, 8, [3, 11], {"now": 6}
    # The order is drawn first, so it does not depend on the augmentation drawn after it.
    memory = data.TrainBatches(torch.arange(n)[:, None], torch.zeros(n, dtype=torch.long), b, seeds, False, lambda x: x, lambda: step["now"])
    stream = imagefolder.StepBatches(n, b, seeds, True, lambda: step["now"])
    assert len(memory) == len(stream) == 4
    for start in (6, 8):  # mid-epoch 1, then the start of epoch 2
        step["now"] = start
        served = list(stream)
        for (x, _), batch in zip(memory, served):
            indices = [i for i, _ in batch]
            assert x.T.flatten().tolist() == indices  # x [B, K]: run k's B examples; the stream lists them run-major
        assert len(served) == len(stream) - start % len(stream)
    # Each example carries its own augmentation seed: the same in every batch that draws it in this epoch.
    step["now"] = 0
    first = [item for batch in stream for item in batch]
    assert len({s for _, s in first}) == len(first)


def test_the_two_paths_give_the_same_labels_per_step_and_the_stream_decodes_in_workers(tmp_path):
    root = write_tree(tmp_path / "tree")
    cached, streamed = module(tmp_path, root, [0, 1]), module(tmp_path, root, [0, 1], "--data.cache_bytes=0")
    assert cached.spec.stream is None and streamed.spec.stream.workers == 1
    for batch_memory, batch_stream in zip(cached.train_dataloader(), streamed.train_dataloader()):
        x, y = streamed.on_after_batch_transfer(batch_stream, 0)
        assert torch.equal(batch_memory[1], y) and x.shape == batch_memory[0].shape == (8, 6, 8, 8)
    val_memory, test_memory, train_memory = cached.val_dataloader()
    val_stream, test_stream, train_stream = streamed.val_dataloader()
    for memory, stream in ((val_memory, val_stream), (test_memory, test_stream), (train_memory, train_stream)):
        assert torch.equal(torch.cat([y for _, y in memory]), torch.cat([y for _, y in stream]))
    # The stream's evaluation transform, resize to round(8 / 0.875) = 9 and centre crop 8, recomputed by hand.
    x0, _ = next(iter(test_stream))
    name = streamed.spec.folder.files["test"][0][0]
    by_hand = np.asarray(Image.open(root / name).convert("RGB").resize((9, 9), Image.BILINEAR))[0:8, 0:8].transpose(2, 0, 1)
    assert torch.equal(x0[0], torch.from_numpy(by_hand.copy()))


def test_a_random_resized_crop_is_a_function_of_its_seed_and_stays_inside_the_image():
    crops = [imagefolder.random_resized_crop(500, 375, torch.Generator().manual_seed(s)) for s in range(200)]
    assert crops == [imagefolder.random_resized_crop(500, 375, torch.Generator().manual_seed(s)) for s in range(200)]
    for left, top, w, h in crops:
        assert left >= 0 and left + w <= 500 and top >= 0 and top + h <= 375
        assert 0.08 * 500 * 375 * 0.9 <= w * h <= 500 * 375  # scale (0.08, 1), up to rounding
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    assert len(set(crops)) > 190
    assert imagefolder.random_resized_crop(1000, 10, torch.Generator().manual_seed(0)) == (493, 0, 13, 10)  # no try fits: centre, ratio 4/3


def _truncated(root: Path) -> None:
    path = root / "train" / "bee" / "003.jpg"
    path.write_bytes(path.read_bytes()[:200])


BAD = [
    ("a file that is no image", lambda root: (root / "train" / "ant" / "002.jpg").write_bytes(b"not a jpeg"), "train/ant/002.jpg is not a readable image ("),
    ("a truncated JPEG", _truncated, "train/bee/003.jpg is not a readable image ("),
    ("an empty class folder", lambda root: [p.unlink() for p in (root / "val" / "cat").iterdir()], "val/cat is a class folder with no images"),
    ("a missing held-out split", lambda root: (root / "val").rename(root / "elsewhere"), "has neither val/ nor test/"),
    ("a class missing from one split", lambda root: (root / "val" / "ant").rename(root / "elsewhere"), "class folder ant is in"),
    ("a root with no images", lambda root: [(root / s).rename(root / f"{s}.old") for s in ("train", "val")], "has no train/ folder of class folders"),
]


@pytest.mark.parametrize("damage, says", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
@pytest.mark.parametrize("path", ["cache", "stream"])
def test_bad_folders_stop_the_run_before_training_with_one_line(tmp_path, capsys, damage, says, path):
    root = write_tree(tmp_path / "tree")
    damage(root)
    given = args(tmp_path, root, *(["--data.cache_bytes=0"] if path == "stream" else []))
    assert cli.main(["run", QUICKSTART, *given]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "runs").exists()


def test_the_cache_is_never_written_under_the_data_root(tmp_path, capsys):
    root = write_tree(tmp_path / "tree")
    before = sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*"))
    for p in [root, *root.rglob("*")]:  # read-only, as CI lays ../shared out
        p.chmod(0o444 if p.is_file() else 0o555)
    try:
        assert cli.main(["run", QUICKSTART, *args(tmp_path, root)]) == 0
        assert cli.main(["run", QUICKSTART, *args(tmp_path, root, f"--data.cache={root / 'cache'}")]) == 2
        assert "lies under data.root" in capsys.readouterr().err
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*")) == before
    assert list((tmp_path / "cache" / "imagefolder").glob("*/x_train.npy"))


def test_an_archive_of_the_layout_is_read_whole_into_the_cache(tmp_path):
    root = write_tree(tmp_path / "tree")
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "val"):
            tar.add(root / split, arcname=split)
    from_folder = data.dataset(config.load(QUICKSTART, args(tmp_path, root)).data)
    from_archive = data.dataset(config.load(QUICKSTART, args(tmp_path, archive)).data)
    assert from_archive.folder.classes == from_folder.folder.classes
    for a, b in zip(from_folder.load(root), from_archive.load(archive)):
        assert np.array_equal(a, b)
    with pytest.raises(config.ConfigError, match="an archive can only be read whole: extract it"):
        config.load(QUICKSTART, args(tmp_path, archive, "--data.cache_bytes=0"))


@pytest.mark.slow
def test_sigkill_mid_epoch_through_the_worker_path_then_rerun_gives_identical_results(tmp_path):
    root = write_tree(tmp_path / "tree")
    given = args(tmp_path, root, "--data.cache_bytes=0")
    reference = [*given, f"--out_dir={tmp_path / 'reference'}"]
    assert cli.main(["run", QUICKSTART, *reference]) == 0
    expected = without_timing(result_rows(config.load(QUICKSTART, reference).run_dir()))
    env = {**os.environ, "WANDB_MODE": "disabled"}
    kill_at = str(Path(__file__).with_name("kill_at.py"))
    for point in ("0:5", "1:7"):  # mid-epoch 2 (4 steps an epoch) of the dense run, then mid-level 1 after the rewind
        killed = subprocess.run([sys.executable, kill_at, point, "run", QUICKSTART, *given], capture_output=True, text=True, env=env, timeout=300)
        assert killed.returncode == -9, killed.stderr[-2000:]
    finished = subprocess.run([sys.executable, "-m", "lth.cli", "run", QUICKSTART, *given], capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert without_timing(result_rows(config.load(QUICKSTART, given).run_dir())) == expected


@pytest.mark.skipif(not (SHARED / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz").exists(), reason="../shared/data/cifar10-jpeg is absent (a user's clone)")
def test_the_cifar10_jpeg_copy_lists_as_cifar10(tmp_path):
    archive = SHARED / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
    cfg = config.load("experiments/conv2_cifar10.yaml", ["--data.name=imagefolder", f"--data.root={archive}", f"--data.cache={tmp_path}"])
    spec = data.dataset(cfg.data)
    assert spec.folder.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert (spec.train_size, len(spec.folder.files["test"]), spec.default_val_size, spec.input_shape) == (50_000, 10_000, 5_000, (3, 32, 32))
    assert spec.stream is None  # 184 MB decoded, within the default 4 GiB


def test_a_folder_checked_for_the_stream_then_served_from_the_cache_decodes_into_its_own_entry(tmp_path):
    root = write_tree(tmp_path / "tree")
    streamed, cached = module(tmp_path, root, [0], "--data.cache_bytes=0"), module(tmp_path, root, [0])
    streamed.check()  # records that every file decodes, without the pixels
    cached.check()
    x_train, *_ = cached.spec.load(root)
    assert x_train.shape == (36, 3, 8, 8)
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "cache" / "imagefolder").iterdir()) == ["arrays", "verified"]
