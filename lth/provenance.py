"""What ran a run: every invocation that trained it appends one line to its `invocations.jsonl` (the command, lth's,
torch's, Lightning's and Python's versions, lth's git commit where lth is a checkout, the device, threads and
ranks), and the report's Setup section says it beside the experiment's settings (`lth.report.setup`). A run
continued on another machine or after an upgrade records each invocation, so a reader sees that it did."""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
import subprocess
from importlib.metadata import version
from pathlib import Path

import torch

COMMAND: list[str] = []  # this process's lth command, as `lth.cli.main` was given it


def invoked(argv: list[str]) -> None:
    COMMAND[:] = ["lth", *argv]


def command() -> str:
    """The command as a shell line, with paths under the working directory relative to it (a results page names no
    machine's folders)."""
    here = f"{Path.cwd()}{os.sep}"
    return shlex.join(arg.replace(here, "") for arg in COMMAND) if COMMAND else ""


@functools.cache
def commit() -> str | None:
    """lth's git commit where lth runs from a checkout ("+dirty" with uncommitted changes to tracked files), else None."""
    where = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):  # no git here
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def device(kind: str) -> str:
    """The training device's name: the GPU's, or the CPU's model."""
    if kind == "cuda":
        return torch.cuda.get_device_name()
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    except OSError:
        model = ""
    return model or platform.processor() or platform.machine()


def record(path: Path, kind: str, threads: int, ranks: int) -> None:
    """Append this invocation to a run's `invocations.jsonl`."""
    line = {"command": command(), "lth": version("lth"), "commit": commit(), "torch": torch.__version__, "lightning": version("lightning"),
            "python": platform.python_version(), "device": device(kind), "threads": threads, "ranks": ranks}
    with path.open("a") as ledger:  # one short line, appended by the one writer of the run (rank 0, under its locks)
        ledger.write(json.dumps(line, sort_keys=True) + "\n")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def describe(lines: list[dict]) -> list[str]:
    """The Setup section's software, hardware and command lines: each distinct value once."""
    def values(key: str) -> str:
        return ", ".join(dict.fromkeys(str(line[key]) for line in lines if line.get(key) is not None)) or "not recorded"

    commits = values("commit")
    return [
        f"- Software: lth {values('lth')}{f' (commit {commits})' if commits != 'not recorded' else ''}, torch {values('torch')}, "
        f"Lightning {values('lightning')}, Python {values('python')}",
        f"- Hardware: {values('device')}; {values('threads')} threads; {values('ranks')} rank(s)",
        "- Commands:",
        *(f"  - `{c}`" for c in dict.fromkeys(line["command"] for line in lines if line.get("command"))),
    ]
