"""Bad input: one line on stderr, exit code 2, before any work, and nothing on disk destroyed."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import here

from lth import cli, config


@pytest.mark.parametrize(
    "override, message",
    [
        ("--prune.fraction=1.0", "prune.fraction: must lie in (0, 1)"),
        ("--prune.fraction=0", "prune.fraction: must lie in (0, 1)"),
        ("--prune.levels=-1", "prune.levels: must be 0 or more"),
        ("--prune.rewind=3ep", "prune.rewind: 3ep (36 steps) is not before the end of training (36 steps)"),
        ("--prune.rewind=soon", "prune.rewind: expected a duration"),
        ("--model=resnet9000", "model.name: unknown model 'resnet9000'"),
        ("--data.name=imagenet", "data.name: unknown dataset 'imagenet'"),
        ("--train.lr=fast", "train.lr: expected a number"),
        ("--train.optimizer=rmsprop", "train.optimizer: expected one of sgd, adam"),
        ("--train.epochs=2", "unknown key train.epochs"),
        ("--train.gradient_clip_val=1", "train.gradient_clip_val: lth runs its own optimizer step, where Lightning's gradient_clip_val would do nothing; "
                                        "use train.clip_grad_norm"),
        ("--train.accumulate_grad_batches=4", "raise data.batch_size instead"),
        ("--arms=[ticket,lucky]", "arms: unknown arm lucky"),
        ("--data.val_size=5000", "data.val_size: must lie in (0, 1024)"),
        ("--train.milestones=[9ep]", "train.milestones[0]: 9ep lies outside training"),
        ("prune.levels=3", "is not of the form --key=value"),
        ("--pack=0", "pack: must be at least 1 or null, got 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_work(tiny, tmp_path, capsys, override, message):
    assert cli.main(["run", "experiments/quickstart.yaml"] + tiny + [override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("lth: error: ")
    assert not (tmp_path / "runs").exists()


def test_overrides_take_the_form_wandb_agent_passes():
    cfg = config.load(
        "experiments/quickstart.yaml",
        ["--train.lr=0.05", "--prune.rewind=50it", "--arms=[ticket,reinit]", "--seed=3", "--data.val_size=null"],
    )
    assert cfg.train.lr == 0.05 and cfg.prune.rewind == "50it" and cfg.arms == ["ticket", "reinit"]
    assert cfg.seed == 3 and cfg.data.val_size is None and cfg.model.name == "mnist1d_mlp"
    # The run's identity ignores what does not change results, and follows what does.
    seed0 = config.load("experiments/quickstart.yaml", ["--seed=0"]).run_id()
    assert config.load("experiments/quickstart.yaml", ["--seed=0", "--prune.levels=2", "--arms=[reinit]"]).run_id() == seed0
    assert config.load("experiments/quickstart.yaml", ["--seed=1"]).run_id() != seed0
    assert config.load("experiments/quickstart.yaml", ["--seed=0", "--train.lr=0.01"]).run_id() != seed0


def test_a_list_of_seeds_is_one_experiment_per_seed():
    seeds = config.load_seeds("experiments/quickstart.yaml", ["--seed=[4,2]"])
    assert [c.seed for c in seeds] == [4, 2] and seeds[0].identity() | {"seed": 2} == seeds[1].identity()
    for override, message in [("--seed=[1,1]", "distinct seeds"), ("--seed=[]", "distinct seeds"), ("--seed=[1,x]", "seed: expected an integer")]:
        with pytest.raises(config.ConfigError, match=message):
            config.load_seeds(None, [override])
    with pytest.raises(config.ConfigError, match="expected one integer here"):
        config.load("experiments/quickstart.yaml")


def test_bad_yaml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert cli.main(["run", str(bad)]) == 2
    assert cli.main(["run", str(tmp_path / "absent.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "not valid YAML" in err[0] and "does not exist" in err[1]


def _finished_run(tiny):
    assert cli.main(["run", "experiments/quickstart.yaml"] + tiny) == 0
    return config.load("experiments/quickstart.yaml", tiny).run_dir()


def test_mask_that_does_not_fit_the_model_stops_the_run_and_is_kept(tiny, capsys):
    run_dir = _finished_run(tiny + ["--prune.levels=1"])
    path = run_dir / "level_02" / "mask.pt"
    path.parent.mkdir()
    wrong = {name: torch.ones(3, 3, dtype=torch.bool) for name in torch.load(run_dir / "level_01" / "mask.pt")}
    torch.save(wrong, path)
    capsys.readouterr()
    assert cli.main(["run", "experiments/quickstart.yaml"] + tiny) == 2
    err = capsys.readouterr().err
    assert "has shape (3, 3)" in err and err.count("\n") == 1
    assert path.exists() and not (run_dir / "level_02" / "ticket").exists()


def test_corrupted_checkpoint_is_an_error_and_nothing_is_deleted(tiny, capsys):
    run_dir = _finished_run(tiny + ["--prune.levels=1"])
    last = run_dir / "level_01" / "ticket" / "last.ckpt"
    final = run_dir / "level_01" / "ticket" / "final.ckpt"
    final.rename(last)  # as a kill mid-level leaves it: a last position, no final checkpoint, no results line
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    (run_dir / "results.jsonl").write_text(lines[0] + "\n")
    last.write_bytes(last.read_bytes()[:100])
    before = sorted(p.name for p in run_dir.rglob("*"))
    capsys.readouterr()
    assert cli.main(["run", "experiments/quickstart.yaml"] + tiny + ["--prune.levels=1"]) == 2
    err = capsys.readouterr().err
    assert "last.ckpt is unreadable" in err and err.count("\n") == 1
    assert sorted(p.name for p in run_dir.rglob("*")) == before and len(last.read_bytes()) == 100


def test_console_script_exit_code_and_usage():
    done = subprocess.run([sys.executable, "-m", "lth.cli", "train"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown command 'train'" in done.stderr


def test_every_shipped_experiment_is_valid(fake_imagenet):

    paths = sorted(Path("experiments").glob("*.yaml"))
    assert len(paths) >= 8
    for path in paths:
        (cfg, *_) = config.load_seeds(path, here(path, fake_imagenet))
        if cfg.data.name == "imagefolder":
            assert config.dataset(cfg.data).num_classes == 1000 and config.dataset(cfg.data).input_shape == (3, 224, 224)
        assert path.read_text().startswith("#"), f"{path} must cite its source in a leading comment"
        assert config.steps(cfg).total_steps > config.steps(cfg).rewind_step


def test_the_order_of_layer_fractions_is_part_of_the_identity():
    """The first glob that matches wins, so the same globs in another order are another experiment: another run
    directory. A mapping in sorted order keeps the run id it had before order was recorded."""
    first = config.load("experiments/quickstart.yaml", ["--seed=0", "--prune.layer_fractions={layers.*: 0.1, layers.2.weight: 0.5}"])
    swapped = config.load("experiments/quickstart.yaml", ["--seed=0", "--prune.layer_fractions={layers.2.weight: 0.5, layers.*: 0.1}"])
    assert first.run_id() != swapped.run_id() and first.study_id() != swapped.study_id()
    assert first.identity()["prune"]["layer_fractions"] == {"layers.*": 0.1, "layers.2.weight": 0.5}  # sorted
    assert swapped.identity()["prune"]["layer_fractions"] == [["layers.2.weight", 0.5], ["layers.*", 0.1]]


def test_yaml_merge_keys_are_read(tmp_path):
    path = tmp_path / "merged.yaml"
    path.write_text("train: &train {lr: 0.05, duration: 2ep}\nprune:\n  fraction: 0.5\n  <<: {levels: 3, fraction: 0.3}\nseed: 1\n")
    cfg = config.load(path)
    assert cfg.train.lr == 0.05 and cfg.prune.levels == 3 and cfg.prune.fraction == 0.5 and cfg.seed == 1


@pytest.mark.parametrize("typo, meant", [
    ("--levels=3", "did you mean 'prune.levels'?"),
    ("--train.lrr=0.1", "did you mean 'train.lr'?"),
    ("--trian.lr=0.1", "did you mean 'train'?"),
    ("--arms=[tiket]", "did you mean 'ticket'?"),
    ("--model=resnet2O", "did you mean 'resnet20'?"),
    ("--data.name=mnist1", "did you mean 'mnist1d'?"),
    ("--prune.method=magnitud", "did you mean 'magnitude'?"),
    ("--prune.schedule=oneshoot", "did you mean 'oneshot'?"),
])
def test_a_misspelled_or_misplaced_key_or_name_gets_the_right_suggestion(capsys, typo, meant):
    assert cli.main(["run", "experiments/quickstart.yaml", typo]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(meant), err


def test_help_and_version_need_no_config(capsys):
    for argv in (["run", "--help"], ["stability", "--help"], ["--version"], ["--help"]):
        assert cli.main(argv) == 0, argv
    out = capsys.readouterr().out
    assert "  prune.levels = 5" in out and "  train.lr = 0.1" in out and "  prune.nm.m = 4" in out  # the typed defaults
    assert re.search(r"^lth \d+\.\d+\.\d+ \(torch ", out, re.MULTILINE)
