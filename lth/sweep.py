"""`lth sweep FILE --index I`: grid point I of a W&B sweep file, run with exactly the command `wandb agent`
would build, without a W&B server — for SLURM clusters whose compute nodes have no internet.

The grid is enumerated by W&B's own sweep engine (PyPI `sweeps`, the code behind the W&B server's grid
search) and the arguments by wandb's own helper, so the offline route and the agent route run the same
commands in the same order.
"""

from __future__ import annotations

import os
import shlex
import warnings
from pathlib import Path
from typing import Any

import yaml

from lth.config import ConfigError

# What `wandb agent` substitutes for the macros of a sweep's `command` (wandb/wandb_agent.py).
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


def _engine():
    with warnings.catch_warnings():  # sweeps 0.3 trips a pydantic deprecation warning on import
        warnings.simplefilter("ignore", UserWarning)
        try:
            import sweeps
        except ImportError:
            raise ConfigError("lth sweep needs W&B's sweep engine: pip install -e '.[sweep]'") from None
    return sweeps


def load(path: str | Path) -> dict[str, Any]:
    sweeps = _engine()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} does not exist")
    try:
        sweep = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(sweep, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    violations = sweeps.schema_violations_from_proposed_config(sweep)
    if violations:
        raise ConfigError(f"{path}: not a valid W&B sweep ({violations[0]})")
    if sweep.get("method") != "grid":
        raise ConfigError(f"{path}: method is {sweep.get('method')!r}; only a grid can be split into array tasks without a server")
    return sweep


def grid(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Every grid point's parameters, in the order the W&B server hands them to agents."""
    sweeps = _engine()

    runs: list[sweeps.SweepRun] = []
    while (run := sweeps.next_run(sweep, runs)) is not None:
        run.state = sweeps.RunState.finished
        runs.append(run)
    return [run.config for run in runs]


def command(sweep: dict[str, Any], point: dict[str, Any]) -> list[str]:
    from wandb.sdk.launch.sweeps import utils

    macros = utils.create_sweep_command_args({"args": point})
    macros |= {"env": ["/usr/bin/env"], "interpreter": ["python"], "program": [sweep.get("program", "")]}
    out: list[str] = []
    for chunk in utils.create_sweep_command(list(sweep.get("command") or DEFAULT_COMMAND)):
        chunk = str(chunk)
        out += macros.get(chunk[2:-1], []) if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return out


def pasteable(argv: list[str]) -> str:
    """`argv` as a shell line that hands the program exactly these arguments: W&B writes a list value as
    `--arms=['ticket', 'reinit']`, which a shell would split and unquote. Double quotes where they suffice (easier
    to read than shlex's nested single quotes), shlex's quoting otherwise."""
    return " ".join(f'"{a}"' if "'" in a and not set(a) & set('"$`\\!') else shlex.quote(a) for a in argv)


def environment(sweep: dict[str, Any]) -> dict[str, str]:
    """As the agent sets them: the sweep's project and entity. Offline unless told otherwise, since compute
    nodes often have no internet; `wandb sync` uploads later."""
    env = dict(os.environ)
    for key, var in (("project", "WANDB_PROJECT"), ("entity", "WANDB_ENTITY")):
        if sweep.get(key):
            env.setdefault(var, str(sweep[key]))
    env.setdefault("WANDB_MODE", "offline")
    return env
