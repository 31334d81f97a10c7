"""What a results line measures, as Frankle & Carbin (2019) and Renda et al. (2020) measure it."""

import copy
import time

import pytest
import torch
from conftest import prune

from lth import config
from lth import masks as M
from lth.data import TrainBatches
from lth.imp import Run, train_levels
from lth.models import MODELS
from lth.run_dir import RunDir
from lth.training import SaveLast


def _run(tiny, *extra):
    return Run.open(config.load(None, tiny + list(extra)), progress=False)


def _test_accuracy(run: Run, state: dict) -> float:
    """A plain loop, outside Lightning and torchmetrics: the fraction of test examples classified right."""
    module = run.build_module(0)
    module.load_state_dict(state)
    module.eval()
    split = run.data([0]).split()
    x, y = split.arrays["x_test"], split.arrays["y_test"]
    with torch.no_grad():
        return float((module.evaluate(split.normalise(x))[:, 0].argmax(1) == y).float().mean())


def test_test_accuracy_is_read_at_the_early_stopping_step_and_at_the_end(tiny, monkeypatch):
    run = _run(tiny, "--prune.levels=0", "--train.eval_every=2it", "--train.checkpoint_every=2it", "--train.lr=0.2")
    states, save = {}, SaveLast.on_validation_end

    def keep_every_evaluation(self, trainer, pl_module):
        states[trainer.global_step] = copy.deepcopy(pl_module.state_dict())
        save(self, trainer, pl_module)

    monkeypatch.setattr(SaveLast, "on_validation_end", keep_every_evaluation)
    train_levels([run], pack=1)
    (row,) = [r.to_json() for r in run.dir.rows()]
    assert sorted(states) == list(range(2, 37, 2))  # every 2 steps, and the last step (36)
    assert row["early_stop_step"] in states and row["early_stop_step"] < 36, "the dense run should overfit the tiny task"
    assert row["test_acc_at_early_stop"] == pytest.approx(_test_accuracy(run, states[row["early_stop_step"]]), abs=1e-6)
    assert row["test_acc"] == pytest.approx(_test_accuracy(run, states[36]), abs=1e-6)


def test_checkpoints_follow_their_own_cadence_and_change_no_result(tiny, tmp_path, monkeypatch):
    saved, save = [], RunDir.save

    def watch(obj, path):
        if path.name == "last.ckpt":
            saved.append(obj["global_step"])
        save(obj, path)

    monkeypatch.setattr(RunDir, "save", staticmethod(watch))
    rows = {}
    for every in ("5it", "15it"):
        run = _run(tiny, "--prune.levels=0", f"--train.checkpoint_every={every}", f"--out_dir={tmp_path / every}")
        train_levels([run], pack=1)
        rows[every] = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in (row.to_json() for row in run.dir.rows())]
        assert run.cfg.run_id() == _run(tiny).cfg.run_id(), "checkpoint_every is not part of the run's identity"
    assert saved == [5, 10, 15, 20, 25, 30, 35] + [15, 30]
    assert rows["5it"] == rows["15it"]
    with pytest.raises(config.ConfigError, match="train.checkpoint_every: 7it .* is not a multiple of train.eval_every"):
        config.load(None, tiny + ["--train.checkpoint_every=7it"])


def test_finetune_is_a_chain_of_its_own(tiny):
    """Renda et al. (2020): fine-tuning prunes its own previous level, trained, not the ticket's."""
    run = _run(tiny, "--arms=[ticket,finetune]", "--prune.strategy=layerwise")
    train_levels([run], pack=1)
    own = run.trained_weights(1, "finetune")
    module = run.build_module(0)
    fractions = M.layer_fractions(module.prunable, 0.5, {}, [])
    expected = prune("magnitude", {n: own[n] for n in module.prunable}, {n: own[f"{n}_mask"] for n in module.prunable}, fractions, "layerwise")
    stored = run.dir.load(run.dir.mask(2, "finetune"))
    assert all(torch.equal(stored[n], expected[n]) for n in expected)
    ticket = run.dir.load(run.dir.mask(2))
    assert any(not torch.equal(stored[n], ticket[n]) for n in stored), "the chains should part at level 2"
    rows = {(r.level, r.arm): r.to_json() for r in run.dir.rows()}
    assert rows[2, "finetune"]["mask_sha256"] == M.sha256(stored) != rows[2, "ticket"]["mask_sha256"]
    assert rows[2, "finetune"]["weights_remaining_per_layer"] == rows[2, "ticket"]["weights_remaining_per_layer"]
    # Level 1 of every chain prunes the same dense network.
    assert rows[1, "finetune"]["mask_sha256"] == rows[1, "ticket"]["mask_sha256"]


def test_uniform_batch_norm_init_draws_scales_in_unit_interval_and_leaves_weights_alone(tiny):
    ones = _run(tiny, "--model=resnet20").build_module(3)
    uniform = _run(tiny, "--model={name: resnet20, bn_init: uniform}").build_module(3)
    scales = [m.weight for m in uniform.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    values = torch.cat([s.detach().flatten() for s in scales])
    assert values.min() >= 0 and values.max() <= 1 and values.std() > 0.2  # U[0, 1] has std 0.29
    assert all(torch.all(m.weight == 1) for m in ones.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    for name, weight in ones.weights().items():
        assert torch.equal(weight, uniform.weights()[name]), name


@pytest.mark.parametrize("augment", [False, True])
def test_without_augmentation_every_epoch_holds_the_same_images(augment):
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(64)
    step = {"now": 0}
    batches = TrainBatches(x, y, 16, [0], augment, lambda t: t.float(), lambda: step["now"])

    def epoch(e):
        step["now"] = e * len(batches)
        images = torch.cat([b for b, _ in batches])
        return sorted(map(tuple, images.flatten(1).tolist())), torch.cat([label for _, label in batches]).flatten()

    (first, order0), (second, order1) = epoch(0), epoch(1)
    assert not torch.equal(order0, order1), "epochs are shuffled differently"
    assert (first == second) != augment


def test_paper_configs_state_their_choices():
    """bn_init, augmentation and unpruned layers as each paper had them (the configs cite their sources)."""
    for name in ("conv2", "conv4", "conv6"):
        assert config.load(f"experiments/{name}_cifar10.yaml").data.augment is False
    for path in ("resnet20_cifar10", "resnet20_cifar10_rewind0", "vgg16_cifar10"):
        cfg = config.load(f"experiments/{path}.yaml")
        assert cfg.model.bn_init == "uniform" and cfg.data.augment is True and cfg.prune.rewind_optimizer == "fresh"
    assert MODELS["vgg16"]((3, 32, 32), 10).dense_layers == ("fc.weight",)
    lenet = config.load("experiments/lenet300_mnist.yaml")
    assert lenet.train.eval_every == "100it" and lenet.train.duration == "50000it"


def test_wall_seconds_is_the_packs_training_time(tiny):
    """Each line's `wall_seconds` is the training time of the pack it trained in: positive in an uninterrupted run,
    the same for the members of one pack, and no more than the whole invocation took."""
    run = _run(tiny, "--prune.levels=1", "--arms=[ticket,reinit,random_prune]", "--pack=3")
    started = time.perf_counter()
    train_levels([run], pack=3)
    elapsed = time.perf_counter() - started
    rows = run.dir.rows()
    assert all(0 < r.wall_seconds < elapsed for r in rows)
    level_1 = {r.wall_seconds for r in rows if r.level == 1}
    assert len(level_1) == 1, "the three arms of level 1 trained as one pack"
    assert sum(r.wall_seconds for r in rows if r.level == 0) + level_1.pop() <= elapsed
