import functools
import os
from pathlib import Path

import pytest
import yaml

from lth.run_dir import TIMING_FIELDS, RunDir

os.environ.setdefault("WANDB_MODE", "disabled")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# A run small enough to train in well under a second per level.
TINY = [
    "--seed=0",
    "--arms=[ticket]",
    "--model=mnist1d_mlp",
    "--data.name=synthetic",
    "--data.batch_size=64",
    "--train.optimizer=sgd",
    "--train.lr=0.05",
    "--train.momentum=0.9",
    "--train.weight_decay=0.0005",
    "--train.duration=3ep",
    "--train.eval_every=5it",
    "--train.checkpoint_every=5it",
    "--prune.fraction=0.5",
    "--prune.levels=2",
    "--prune.rewind=7it",
]


@pytest.fixture(scope="session")
def fake_imagenet(tmp_path_factory) -> Path:
    """A folder of ImageNet's shape, for validating its configs: 1,000 class folders of two training images and
    one validation image each (tiny JPEGs: validation reads only the folder names and the first image's size)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    image = Image.new("RGB", (20, 15), (120, 80, 40))
    for c in range(1000):
        for split, count in (("train", 2), ("val", 1)):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                image.save(folder / f"{i}.JPEG")
    return root


def here(config_path, fake_imagenet) -> list[str]:
    """The overrides a shipped config needs to load here: ImageNet's configs read a folder of its shape, the movie
    reviews' a source distribution of their layout (`fake_vader`)."""
    name = yaml.safe_load(Path(config_path).read_text())["data"]["name"]
    return [f"--data.root={fake_imagenet}"] if name == "imagefolder" else [f"--data.root={fake_vader()}"] if name == "examples.movie_reviews:splits" else []


@functools.cache
def fake_vader() -> Path:
    """vaderSentiment 3.3.2's source distribution as `examples/movie_reviews.py` reads it, its snippets file 300 made-up
    lines (the real one is fetched from PyPI by docs/results/reproduce.py, not by the tests)."""
    import io
    import tarfile
    import tempfile

    def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))

    words = ["a", "gorgeous", "dull", "film", "tepid", "splash", "!"]
    snippets = "".join(f"{i}\t{(-1) ** i * (1 + i % 3) / 2}\t{' '.join(words[(i + k) % len(words)] for k in range(3 + i % 5))}\r\n" for i in range(1, 301))
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as resources:
        add(resources, "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt", snippets.encode())
    root = Path(tempfile.mkdtemp(prefix="lth-vader-"))
    with tarfile.open(root / "vaderSentiment-3.3.2.tar.gz", "w:gz") as sdist:
        add(sdist, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner.getvalue())
    return root


def pruned_weights_problems(run_dir: Path) -> list[str]:
    """Where a run's stored networks break the invariant every schedule, method and arm must keep: a weight its mask
    removes is exactly 0 in every checkpoint (start, last, final, rewind), and a results line's weights_remaining is
    the share of nonzero prunable weights in its final.ckpt. Unreadable files and diverged arms are other tests' cases."""
    import torch

    from lth.arms import ARMS
    from lth.masks import sha256
    from lth.run_dir import RunError

    problems = []
    try:
        rows = {(r.level, r.arm): r for r in RunDir(run_dir).rows()}
    except RunError:  # a ledger a test damaged on purpose
        rows = {}
    for path in sorted(run_dir.rglob("*.ckpt")):
        if (path.parent / "diverged.json").exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        except Exception:  # noqa: BLE001 - a file a test damaged on purpose
            continue
        masks = {k[: -len("_mask")]: m for k, m in state.items() if k.endswith("_mask")}
        problems += [f"{path.relative_to(run_dir)}: {int((state[k][~m] != 0).sum())} pruned weights of {k} are not 0"
                     for k, m in masks.items() if k in state and state[k].shape == m.shape and (state[k][~m] != 0).any()]
        level, arm = path.parent.parent.name, path.parent.name
        row = rows.get((int(level[len("level_"):]), arm)) if path.name == "final.ckpt" and level.startswith("level_") else None
        stored = {k[len("model."):]: m for k, m in masks.items()}
        if row and sha256(stored) == row.mask_sha256:  # not a narrow network, whose line describes its wide masks
            nonzero = sum(int((state[k] != 0).sum()) for k in masks) / sum(m.numel() for m in masks.values())
            # A connection a dynamic sparse arm grew starts at 0 and stays there if its gradient is 0 (out of a dead
            # ReLU): kept, yet 0. Under every other arm a kept weight that is exactly 0 would be a masking defect.
            if arm in ARMS and ARMS[arm].moves_masks and nonzero <= row.weights_remaining + 1e-12:
                continue
            if abs(nonzero - row.weights_remaining) > 1e-12:
                problems.append(f"{path.relative_to(run_dir)}: {nonzero:.6f} of the prunable weights are nonzero, its line says {row.weights_remaining:.6f}")
    return problems


@pytest.fixture(autouse=True)
def every_run_keeps_pruned_weights_at_zero(request):
    """After every test, each run it left under its tmp_path is checked (`pruned_weights_problems`): whatever schedule,
    method and arms the test trained, so the invariant is guarded across the registries, not plugin by plugin."""
    root = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None  # set up first, so torn down after
    yield
    if root is None:
        return
    problems = [p for config_file in root.rglob("config.yaml") for p in pruned_weights_problems(config_file.parent)]
    assert not problems, problems[:5]


def held_by_another_process(lock: Path):
    """An open handle holding `lock` as another process would: a flock of its own, which this process's record of the
    locks it holds (`lth.locks.MINE`) does not know. Closing it releases the lock."""
    from lth import locks

    return locks._try(lock)


@pytest.fixture
def tiny(tmp_path):
    """The argument list of a tiny synthetic experiment writing under tmp_path."""
    return TINY + [f"--out_dir={tmp_path / 'runs'}", "--name=tiny"]


def result_rows(run_dir) -> list[dict]:
    """A run directory's results lines."""
    return [row.to_json() for row in RunDir(Path(run_dir)).rows()]


def without_timing(lines: list[dict]) -> list[dict]:
    """Results lines without the fields that time the machine: what a rerun must reproduce exactly."""
    return [{k: v for k, v in line.items() if k not in TIMING_FIELDS} for line in lines]


def prune(method: str, weights, masks, fractions, strategy: str = "global", params=None, structure=None):
    """One level of `method`'s scores ranked by its unit, as the driver prunes (`lth.pruning.level_masks`), for
    a network's weights alone: for criteria that read neither the rewind point, the network nor data."""
    from lth.methods import METHODS
    from lth.methods.base import Scoring

    m = METHODS[method]
    params = params if params is not None else (m.Params() if m.Params else None)
    unit = m.unit(params, lambda: structure)
    scoring = Scoring(weights, masks, fractions, strategy, unit.structure, rewound=lambda: weights, network=None, batches=None, input_shape=None)
    return unit.keep(m.scores(scoring, params), masks, fractions, strategy)


EVERY_ARM = "--arms=[ticket,reinit,random_prune,scratch_b,finetune,lr_rewind]"


def prune_at_initialisation(tiny, method: str, *extra: str):
    """A tiny run that prunes once at initialisation (`rewind: 0`, one-shot to 10%) with `method`, under every
    arm; its run and its level-1 rows by arm, each checked to train on the same masks as the ticket's controls do."""
    from lth import config
    from lth.imp import Run, run_experiments

    args = tiny + [f"--prune.method={method}", "--prune.schedule=oneshot", "--prune.oneshot.target=0.1", "--prune.levels=1", "--prune.rewind=0",
                   EVERY_ARM, *extra]
    (run,) = run_experiments([config.load(None, args)], progress=False)
    rows = {r.arm: r for r in run.dir.rows() if r.level == 1}
    assert len(rows) == 6
    for arm in ("reinit", "scratch_b", "finetune", "lr_rewind"):
        assert rows[arm].mask_sha256 == rows["ticket"].mask_sha256, arm
    assert rows["random_prune"].weights_remaining_per_layer == rows["ticket"].weights_remaining_per_layer
    assert rows["random_prune"].mask_sha256 != rows["ticket"].mask_sha256
    return Run.open(run.cfg, progress=False), rows


def signal_after_step(monkeypatch, when):
    """SIGUSR1 to this process right after the optimizer step at which `when(first member of the pack training,
    its global step before the step counts)` holds, as a scheduler's preemption would arrive; returns what undoes it
    (call it before the rerun)."""
    import os
    import signal

    from lth import imp
    from lth.module import MaskedModule

    step, now = MaskedModule.optimizer_step, {}
    train = imp.train_pack

    def tracked(members, *rest):
        now["member"] = members[0]
        return train(members, *rest)

    def signalling_step(self, *a, **k):
        step(self, *a, **k)
        if when(now["member"], self.global_step):
            os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(imp, "train_pack", tracked)
    monkeypatch.setattr(MaskedModule, "optimizer_step", signalling_step)
    return lambda: monkeypatch.setattr(MaskedModule, "optimizer_step", step)
