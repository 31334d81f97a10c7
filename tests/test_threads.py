"""One thread policy (`lth.threads`): one thread for steps too short to share, this process's CPUs otherwise,
an explicit setting first."""

import os

import pytest

from lth import config, threads
from lth.imp import Run


def test_the_quickstart_trains_on_one_thread_and_a_resnet_on_every_cpu(tiny):
    quickstart = Run.open(config.load("experiments/quickstart.yaml", ["--seed=0"]), progress=False).step_macs
    resnet = Run.open(config.load("experiments/resnet20_cifar10.yaml", ["--seed=0"]), progress=False).step_macs
    assert quickstart < threads.ONE_THREAD_BELOW <= resnet
    assert threads.choose(quickstart, available=2).count == 1
    assert threads.choose(resnet, available=2).count == 2
    assert threads.choose(resnet, available=16, ranks=4).count == 4 and threads.choose(resnet, available=16, ranks=4, workers=1).count == 3


def test_slurm_and_the_affinity_bound_the_cpus(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert threads.cpus() == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
        assert threads.cpus() == 1
    assert threads.choose(10**12, threads.cpus()).count == 1


def test_an_explicit_setting_wins():
    assert threads.choose(1_000, available=2, setting=2) == threads.Threads(2, "train.threads")
    assert threads.choose(1_000, available=2, environment="2") == threads.Threads(2, "OMP_NUM_THREADS")
    assert threads.choose(10**12, available=8, environment="1").count == 1


def test_a_run_says_its_choice_and_threads_stay_out_of_its_identity(tiny, capsys, monkeypatch):
    from lth import cli

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--prune.levels=0"]) == 0
    assert "[lth] threads: 1 (a training step of" in capsys.readouterr().err
    recorded = config.load(config.load(None, tiny).run_dir() / "config.yaml")
    assert recorded.train.threads == 1 and recorded.run_id() == config.load(None, tiny).run_id()
    assert config.load(None, tiny + ["--train.threads=2"]).run_id() == config.load(None, tiny).run_id()
    with pytest.raises(config.ConfigError, match="train.threads: must be at least 1"):
        config.load(None, tiny + ["--train.threads=0"])
