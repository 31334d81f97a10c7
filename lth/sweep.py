"""`lth sweep FILE --index I`: grid point I of a W&B sweep file, run with the command `wandb agent` would build,
without a W&B server — for SLURM clusters whose compute nodes have no internet; `lth sweep FILE --run`: every
point, here, one after another (`run_all`). Both add the point's name (`point_names`, `--point`), which puts its
runs and report in a folder of their own; `wandb agent` has no way to pass it.

The grid is enumerated by W&B's own sweep engine (PyPI `sweeps`, the code behind the W&B server's grid
search) and the arguments by wandb's own helper, so the offline route and the agent route run the same
commands in the same order.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from lth import preemption
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


def point_names(sweep: dict[str, Any], points: list[dict[str, Any]]) -> list[str]:
    """Each point's name: the settings that vary across the sweep and change what a run computes, as `key=value`
    joined by commas in the sweep file's order (`prune.rewind=500it,prune.fraction=0.2`); "" where none do. Left
    out: the seed (a point's seeds pool into one mean), and settings that are not part of a run's identity (`arms`:
    a control follows its ticket in one run directory; levels, threads, ...; `lth.config.NOT_IN_IDENTITY`)."""
    from lth.config import NOT_IN_IDENTITY

    def named(key: str) -> bool:
        return key != "seed" and not any(key == k or key.startswith(f"{k}.") for k in NOT_IN_IDENTITY)

    values = [{key: item["value"] for key, item in p.items()} for p in points]  # the engine's {"value": v} per key
    varying = [key for key in sweep.get("parameters", {}) if named(key) and len({json.dumps(v.get(key), sort_keys=True) for v in values}) > 1]
    return [",".join(f"{key}={_value(v[key])}" for key in varying) for v in values]


def _value(value: Any) -> str:
    """A setting's value in a folder name: as YAML flow style spells it, without the spaces after ':' and ',' (so that
    `--point=NAME` reads back as one string), a path's '/' written '_'."""
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()
    return text.replace(": ", ":").replace(", ", ",").replace("/", "_")


def commands(sweep: dict[str, Any], points: list[dict[str, Any]], extra: list[str]) -> list[list[str]]:
    """Every point's command as `lth sweep` runs it: the agent's (`command`), its point's name (`--point`), then `extra`."""
    return [command(sweep, point) + ([f"--point={name}"] if name else []) + extra for point, name in zip(points, point_names(sweep, points))]


def run_dirs(path: str | Path, extra: list[str]) -> list[Path]:
    """The run directories of a sweep's `lth run` points that have results (`lth report SWEEP.yaml`), as the commands of
    `lth sweep` name them (with `extra`: the same overrides given to `lth sweep`)."""
    from lth import config

    spec = load(path)
    found = []
    for argv in commands(spec, grid(spec), extra):
        if argv[1:2] != ["run"]:
            raise ConfigError(f"{path}: its points run `{' '.join(argv[:2])}`; lth report compares the points of `lth run` sweeps")
        found += [d for d in (cfg.run_dir() for cfg in config.load_seeds(argv[2], argv[3:])) if (d / "results.jsonl").is_file()]
    if not found:
        raise ConfigError(f"{path}: none of its points has results yet (lth sweep {path} --run)")
    return list(dict.fromkeys(found))


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


def run_all(commands: list[list[str]], names: list[str], points: list[dict[str, Any]], env: dict[str, str]) -> int:
    """`lth sweep FILE --run`: every point's command, in grid order, in a child process each, with a line per point.
    Each is an ordinary `lth run`, resumable: run again after a kill, a finished point's run finds its levels done
    and trains nothing. A point that fails (a diverged arm, exit 4) does not stop the others; a kill does (the
    child's exit by a signal, or SIGINT/SIGTERM here, passed on to it)."""
    failed: list[int] = []
    last = len(commands) - 1
    for i, (argv, name, point) in enumerate(zip(commands, names, points)):
        what = ", ".join(x for x in (name, *(f"{key} {point[key]['value']}" for key in ("seed", "arms") if key in point)) if x)
        print(f"[lth] sweep point {i}/{last} ({what}): {pasteable(argv)}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        child = subprocess.Popen(argv, env=env)
        try:
            code = child.wait()
        except preemption.Interrupted:
            # SIGTERM or SIGUSR1 sent to this process alone is passed on, so the run checkpoints and stops; a terminal's
            # Ctrl-C has reached the child already (a second SIGINT would stop it without its checkpoint).
            if (signum := preemption.RECEIVED[0]) != signal.SIGINT:
                child.send_signal(signum)
            code = child.wait()
        seconds = time.perf_counter() - started
        if code < 0 or code in (128 + signal.SIGINT, 128 + signal.SIGTERM, preemption.REQUEUE):
            print(f"[lth] sweep point {i}/{last} stopped (exit {code}) after {seconds:.0f} s; run the same command again to finish the sweep",
                  file=sys.stderr, flush=True)
            return 128 - code if code < 0 else code
        print(f"[lth] sweep point {i}/{last} {'done' if code == 0 else f'failed (exit {code})'} in {seconds:.0f} s", file=sys.stderr, flush=True)
        if code:
            failed.append(i)
    if failed:
        print(f"[lth] sweep: points {', '.join(map(str, failed))} failed; the others are done", file=sys.stderr, flush=True)
        return 1
    return 0
