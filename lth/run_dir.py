"""The run directory: every path of a run, its results ledger and its stored tensors, in one object.

    config.yaml            the resolved experiment
    results.jsonl          one line per finished (level, arm); rewritten atomically under a lock
    rewind.ckpt            the dense run's full training state at the rewind step
    level_00/ticket/       last.ckpt (written after each evaluation), final.ckpt
    level_01/mask.pt       the level's masks (the ticket's, shared by its controls), made once
    level_01/ARM/          start.ckpt (where the arm starts, masks applied), last.ckpt, final.ckpt, and mask.pt
                           for an arm with a chain of its own (finetune, lr_rewind)
    locks/ARM.lock         held by the process training that arm (flock: released when it dies)

A run directory is named by the run's identity (`Experiment.run_dir`), never by a job id, so rerunning the
same command after a kill or a requeue continues it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lth import locks
from lth.files import atomic_open, atomic_write

START, LAST, FINAL = "start.ckpt", "last.ckpt", "final.ckpt"

# The fields of a results line that measure the machine rather than the network: two runs of the same
# computation agree in every other field, bit for bit.
TIMING_FIELDS = ("wall_seconds", "inference_speedup")


class RunError(RuntimeError):
    """A problem with what is on disk: reported as one line, exit code 2, nothing deleted."""


def read_results(path: Path) -> list[dict[str, Any]]:
    """The lines of a `results.jsonl`; a damaged line stops the reader with its file and line number."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise RunError(f"{path}:{number} is not valid JSON; repair or move the file") from None
    return rows


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    @property
    def rewind(self) -> Path:
        return self.root / "rewind.ckpt"

    def level(self, level: int) -> Path:
        return self.root / f"level_{level:02d}"

    def mask(self, level: int, chain: str = "ticket") -> Path:
        """A level's masks: the ticket's, which its controls share, or those of an arm with a chain of its own."""
        return self.level(level) / ("" if chain == "ticket" else chain) / "mask.pt"

    def arm(self, level: int, arm: str) -> Path:
        return self.level(level) / arm

    def lock(self, name: str) -> Path:
        """An arm's lock (held while a process trains it) or the results ledger's."""
        return self.root / "locks" / f"{name}.lock"

    def masks_stored(self) -> list[Path]:
        return sorted([*self.root.glob("level_*/mask.pt"), *self.root.glob("level_*/*/mask.pt")])

    # -- the results ledger -------------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        return read_results(self.results) if self.results.exists() else []

    def done(self, level: int, arm: str) -> dict[str, Any] | None:
        return next((r for r in self.rows() if r["level"] == level and r["arm"] == arm), None)

    def append(self, row: dict[str, Any], ledger: Path | None = None) -> list[dict[str, Any]]:
        """Add one finished (level, arm) to `results.jsonl`, or a line to another ledger of the run
        (`stability.jsonl`); other processes may record at the same time, hence the lock. Returns every row
        now in the ledger."""
        ledger = ledger or self.results
        with locks.held(self.lock(ledger.stem)):
            rows = (read_results(ledger) if ledger.exists() else []) + [row]
            atomic_write(ledger, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())
        return rows

    # -- stored tensors -----------------------------------------------------------------------------------

    @staticmethod
    def save(obj: Any, path: Path) -> None:
        with atomic_open(path) as handle:
            torch.save(obj, handle)

    @staticmethod
    def load(path: Path) -> Any:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)  # our own files
        except Exception as err:  # noqa: BLE001 - any failure to read means the file is unusable
            raise RunError(f"{path} is unreadable ({type(err).__name__}); move it aside to redo that step") from None
