"""Docs that cannot drift: the README's two commands are the ones CI runs, every page is in the site's navigation,
the user docs speak to the user's machine, and the first tutorial's commands run as written (at reduced sizes)."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from lth import cli

ROOT = Path(__file__).resolve().parents[1]

PAGES = ("tutorials", "how-to", "reference", "explanation")


def _blocks(path: Path, language: str = "bash") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


def test_the_readme_s_two_commands_are_the_ones_ci_runs():
    install, tests = _blocks(Path("README.md"))[:2]
    ci = Path(".ci/run").read_text()
    for step in ("pip install torch==2.13.0", "pip install -e '.[dev]'"):
        assert step in install and step.replace("install ", "install -q ") in ci, step
    assert install.strip().endswith("lth run experiments/quickstart.yaml")
    command = tests.strip().removeprefix(". .venv/bin/activate && ")
    assert command == "WANDB_MODE=disabled python -m pytest -q tests" and command in ci.splitlines()
    assert len(Path("README.md").read_text().splitlines()) <= 150


def test_every_page_is_in_the_navigation_and_every_navigation_entry_exists():
    def entries(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from entries(value)
        elif isinstance(node, list):
            for item in node:
                yield from entries(item)

    nav = set(entries(yaml.load(Path("mkdocs.yml").read_text(), Loader=yaml.BaseLoader)["nav"]))
    pages = {str(p.relative_to("docs")) for folder in PAGES for p in Path("docs", folder).glob("*.md")}
    assert sorted(pages - nav) == [] and sorted(p for p in nav if not Path("docs", p).is_file()) == []


def test_the_user_docs_speak_to_the_user_s_machine():
    """No path of the developers' machine, no "lent" GPU; measurements say on what they were made."""
    for path in [Path("README.md"), Path("docs/index.md"), *(p for folder in PAGES if folder != "explanation" for p in Path("docs", folder).glob("*.md"))]:
        text = path.read_text()
        assert "../shared" not in text and not re.search(r"\blent\b", text), path


def test_the_plugin_tutorial_s_files_and_commands_run_as_written(tmp_path, monkeypatch):
    """Its Python and YAML blocks written to the files their first line names, its commands run in that folder
    (the training made tiny); then its criterion edited: the same command is another run."""
    page = Path(__file__).parents[1] / "docs/tutorials/own-model-and-plugins.md"
    for language in ("python", "yaml"):
        for block in _blocks(page, language):
            first, _, body = block.partition("\n")
            if first.startswith("# ") and first[2:].strip().endswith((".py", ".yaml")):
                (tmp_path / first[2:].strip()).write_text(body)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    tiny = ["--data.name=synthetic", "--train.duration=2ep", "--train.eval_every=5it", "--prune.levels=1"]
    commands = [shlex.split(line)[1:] for block in _blocks(page) for line in block.splitlines() if line.startswith("lth ")]
    assert commands == [["run", "my_study.yaml"]]
    assert cli.main([*commands[0], *tiny]) == 0
    first = sorted(Path("runs/my_study").glob("*-seed0-*"))
    assert len(first) == 1 and "gradient_magnitude" in (first[0] / "config.yaml").read_text()
    criterion = Path("mycriteria.py")
    criterion.write_text(criterion.read_text().replace("g.abs()", "g.abs() + 0"))
    # A new process, as the user's next command is: this one runs the code it imported.
    again = subprocess.run([sys.executable, "-m", "lth.cli", *commands[0], *tiny], env=os.environ | {"WANDB_MODE": "disabled"},
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(sorted(Path("runs/my_study").glob("*-seed0-*"))) == 2  # edited code: a new run, the old one kept


def test_the_data_tutorial_s_dataset_and_command_run_as_written(tmp_path, monkeypatch):
    page = Path(__file__).parents[1] / "docs/tutorials/own-data.md"
    (block,) = [b for b in _blocks(page, "python") if b.startswith("# mydata.py\n")]
    (tmp_path / "mydata.py").write_text(block)
    (tmp_path / "experiments").symlink_to(Path("experiments").resolve())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (command,) = [shlex.split(line)[1:] for b in _blocks(page) for line in b.splitlines() if "mydata:blobs" in line]
    tiny = ["--train.duration=2ep", "--train.eval_every=5it", "--train.checkpoint_every=5it", "--prune.levels=1", "--seed=0"]
    assert cli.main([*command, *tiny]) == 0
    (run,) = Path("runs/quickstart").glob("*-seed0-*")
    recorded = json.loads((run / "dataset.json").read_text())
    assert (recorded["train_size"], recorded["test_size"]) == (600, 200)  # the tutorial's blobs, as the run records them


def test_the_first_tutorial_s_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """Each `lth` line of its shell blocks, in a fresh folder, with the training made tiny (synthetic data, a few
    steps, one level): the commands and their order are the tutorial's."""
    tiny = ["--data.name=synthetic", "--train.duration=2ep", "--train.eval_every=5it", "--train.checkpoint_every=5it", "--prune.levels=1",
            "--seed=[0,1]"]
    (tmp_path / "experiments").symlink_to(Path("experiments").resolve())
    monkeypatch.chdir(tmp_path)
    lines = [line.split("#")[0].strip() for block in _blocks(Path(__file__).parents[1] / "docs/tutorials/first-study.md") for line in block.splitlines()]
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("lth ")]
    assert [c[0] for c in commands][:3] == ["run", "run", "report"]
    for argv in commands:
        if argv[0] == "run":
            argv = [*argv, *tiny]
        elif argv[0] == "report":  # the shell's glob
            argv = [argv[0], *(str(p) for pattern in argv[1:] if "*" in pattern for p in sorted(Path().glob(pattern))),
                    *(a for a in argv[1:] if "*" not in a)]
        assert cli.main(argv) == 0, argv
    assert Path("my_report/report.md").is_file() and "finetune" in Path("my_report/report.md").read_text()


def test_the_cluster_tutorial_s_laptop_sweep_runs_as_written_and_its_cluster_lines_fit_their_sweeps(tmp_path, monkeypatch, capsys):
    """Step 1's commands run in a fresh folder with the training made tiny (the same overrides given to each, as the
    report of a sweep needs); every `sbatch --array` covers exactly its sweep's grid, every script and file it names
    exists, the trial of step 3 goes past the rewind point as the page says, and is a run of its own."""
    from lth import config, sweep

    page = Path(__file__).parents[1] / "docs/tutorials/cluster.md"
    lines = [line.split(" #")[0].strip() for block in _blocks(page) for line in block.replace("\\\n", " ").splitlines()]
    for name in ("experiments", "sweeps"):
        (tmp_path / name).symlink_to(Path(name).resolve())
    monkeypatch.chdir(tmp_path)

    laptop = [shlex.split(line)[1:] for line in lines if line.startswith("lth ") and "quickstart_rewind" in line]
    assert [argv[:2] for argv in laptop] == [["sweep", "sweeps/quickstart_rewind.yaml"]] * 2 + [["report", "sweeps/quickstart_rewind.yaml"]]
    tiny = ["--data.name=synthetic", "--train.duration=260it", "--train.eval_every=130it", "--train.checkpoint_every=130it", "--prune.levels=1", "--seed=0",
            "--arms=[ticket,reinit]"]
    for argv in laptop:
        assert cli.main([*argv, *tiny]) == 0, argv
    listed = capsys.readouterr().out
    assert all(f"--point=prune.rewind={p}" in listed for p in ("0", "25it", "100it", "250it"))
    report = Path("rewind_report/report.md").read_text()
    assert Path("rewind_report/points.png").is_file() and all(p in report for p in ("25it", "100it", "250it"))
    assert sorted(p.name for p in Path("runs/quickstart").iterdir()) == sorted(f"prune.rewind={p}" for p in ("0", "25it", "100it", "250it"))

    submitted = [shlex.split(line) for line in lines if line.startswith("sbatch ")]
    assert len(submitted) == 2
    for argv in submitted:
        script = next(a for a in argv if a.startswith("slurm/"))
        assert Path(ROOT, script).is_file(), script
        last = int(re.fullmatch(r"--array=0-(\d+)%\d+", next(a for a in argv if a.startswith("--array="))).group(1))
        assert last + 1 == len(sweep.grid(sweep.load("sweeps/resnet20.yaml")))
    assert all(Path(ROOT, shlex.split(line)[2]).is_file() for line in lines if line.startswith("wandb sweep "))

    (trial,) = [shlex.split(line) for line in lines if line.startswith("srun ")]
    argv = trial[trial.index("lth") + 1:]
    assert argv[:4] == ["sweep", "sweeps/resnet20.yaml", "--index", "0"]
    point = sweep.commands(sweep.load(argv[1]), sweep.grid(sweep.load(argv[1])), argv[4:])[0]
    cfg = config.load(point[2], point[3:])
    steps = config.steps(cfg)
    assert steps.rewind_step < steps.total_steps and f"({steps.total_steps:,} steps)" in page.read_text()
    real = sweep.commands(sweep.load(argv[1]), sweep.grid(sweep.load(argv[1])), [])[0]
    assert cfg.run_dir() != config.load(real[2], real[3:]).run_dir()
