"""The run directory: every path of a run, its results ledger and its stored tensors, in one object.

    config.yaml            the resolved experiment
    results.jsonl          one line per finished (level, arm); rewritten atomically under a lock
    rewind.ckpt            the dense run's full training state at the rewind step
    level_00/ticket/       last.ckpt (written after each evaluation) and previous.ckpt (the one before), final.ckpt
    level_01/mask.pt       the level's masks (the ticket's, shared by its controls), made once
    level_01/ARM/          start.ckpt (where the arm starts, masks applied), last.ckpt, final.ckpt, and mask.pt
                           for an arm with a chain of its own (finetune, lr_rewind)
    locks/ARM.lock         held by the process training that arm (flock: released when it dies)

A run directory is named by the run's identity (`Experiment.run_dir`), never by a job id, so rerunning the
same command after a kill or a requeue continues it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lth import locks
from lth.files import atomic_write

# The checkpoints of an arm's level (its start, its latest position, its end) and the dense run's training
# state at the rewind step.
START, LAST, FINAL, REWIND_CKPT = "start.ckpt", "last.ckpt", "final.ckpt", "rewind.ckpt"
# The last.ckpt before the newest: a pack writes its members' checkpoints one after another, and a kill between two
# writes leaves them a save apart; the members ahead step back to this one (`lth.training.common_step`).
PREVIOUS = "previous.ckpt"

# The fields of a results line that measure the machine rather than the network: two runs of the same
# computation agree in every other field, bit for bit.
TIMING_FIELDS = ("wall_seconds", "inference_speedup")


class RunError(RuntimeError):
    """A problem with what is on disk: reported as one line, exit code 2, nothing deleted."""


@dataclass(frozen=True)
class Row:
    """One finished (level, arm) of one run: a line of `results.jsonl`."""

    level: int  # 0: the dense network; each pruned level after it
    arm: str  # the ticket or the control it is (`lth.arms`)
    seed: int  # the run's
    init_seed: int  # the seed of its init: the run's, or the arm's own fresh one at this level
    run_id: str  # the run's identity, which names its directory
    weights_remaining: float  # of the prunable weights
    weights_remaining_per_layer: dict[str, float]  # each prunable layer's share of its weights kept
    test_acc: float  # at the final weights
    test_acc_at_early_stop: float  # at the evaluation of lowest validation loss (Frankle & Carbin 2019, §2)
    best_val_acc: float  # the highest validation accuracy of any evaluation
    early_stop_step: int  # the step of lowest validation loss, Frankle & Carbin's early-stopping iteration
    early_stop_val_acc: float  # the validation accuracy there
    steps_trained: int  # the steps this level trained (from the rewind step, or from 0 for an arm of its own schedule)
    rewind_step: int  # the dense run's step its rewound arms start from
    rewind_optimizer: str  # `prune.rewind_optimizer`: the optimizer state those arms start with
    wall_seconds: float  # training time of the whole pack it trained in, over every process that trained it
    mask_sha256: str  # a fingerprint of the masks it trained under: equal hashes, the same kept weights
    macs: int | None = None  # per example, as pruned (`lth.flops`); None in lines written before it was recorded
    parameters: int | None = None  # as deployed
    inference_speedup: float | None = None  # measured, under a channel method
    world_size: int = 1  # the processes it trained on, data-parallel (`lth.distributed`): they change float rounding
    # The generalisation gap: on a fixed subset of the training split as large as the test split (its first examples,
    # `lth.data.DataModule.val_dataloader`), at the final weights and at the early-stopping step. None in lines
    # written before it was measured.
    train_subset: int | None = None
    train_acc: float | None = None  # on that subset, at the final weights
    train_loss: float | None = None  # likewise
    test_loss: float | None = None  # at the final weights
    train_acc_at_early_stop: float | None = None  # on the subset, at the early-stopping step
    train_loss_at_early_stop: float | None = None  # likewise
    test_loss_at_early_stop: float | None = None  # at the early-stopping step
    gap: float | None = None  # train_acc - test_acc
    gap_at_early_stop: float | None = None  # train_acc_at_early_stop - test_acc_at_early_stop
    # The digest of the arm's code where it is a user's plugin (`lth.plugins.code_digest`), None for lth's own: arms
    # are not part of a run's identity (a run gains arms), so a plugin arm edited since is caught by its lines.
    code: str | None = None
    # Why a hook ended its training before its schedule's last step (an early-bird ticket drawn, `lth.schedules`),
    # its `steps_trained` then counting the steps it took; None where it trained to the end.
    ended_early: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, line: Any, where: str) -> Row:
        """A results line read back; `where` names it (file:line) in the one-line error for a line that is not one."""
        if not isinstance(line, dict):
            raise RunError(f"{where} is not a results line (a JSON object, got {type(line).__name__}); repair or move the file")
        from lth.arms import ARMS  # the registry imports torch and the plugins; a results line is read after them

        hints = typing.get_type_hints(cls)
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        if missing := [name for name in required if name not in line]:
            raise RunError(f"{where} has no {missing[0]}: it was written by an older lth, or is not a results line; rerun it with this one")
        for key, value in line.items():
            if key in hints and not _typed(value, hints[key]):
                raise RunError(f"{where}: {key} is {value!r}, not {_spelled(hints[key])}; lth wrote no such line: repair or move the file")
        if line["arm"] not in ARMS:
            raise RunError(f"{where}: arm {line['arm']!r} is no arm of this lth (known: {', '.join(ARMS)}); repair or move the file")
        return cls(**{k: v for k, v in line.items() if k in hints})

    def key(self) -> tuple[int, str, int]:
        """What a results line is one of: a run's (level, arm, seed). Pooled, each counts once."""
        return self.level, self.arm, self.seed

    def measured(self) -> dict[str, Any]:
        """Everything but the timing fields: what two lines of the same computation agree in, bit for bit."""
        return {k: v for k, v in self.to_json().items() if k not in TIMING_FIELDS}


def _typed(value: Any, kind: Any) -> bool:
    """Whether a JSON value is of a `Row` field's annotation (an int is a float; a bool is neither)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_typed(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if typing.get_origin(kind) is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _typed(v, typing.get_args(kind)[1]) for k, v in value.items())
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _spelled(kind: Any) -> str:
    return " or ".join("null" if k is type(None) else getattr(k, "__name__", str(k)) for k in typing.get_args(kind) or (kind,))


def read_lines(path: Path) -> list[tuple[str, Any]]:
    """The JSON lines of a ledger, each with where it stands (file:line); a damaged line stops the reader there."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            lines.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError:
            raise RunError(f"{path}:{number} is not valid JSON; repair or move the file") from None
    return lines


def distinct(rows: list[tuple[Row, str]]) -> list[Row]:
    """Rows pooled from ledgers (each with where it stands), each (level, arm, seed) once: one run given twice, or a
    line repeated, is one result, not two seeds. Two lines of one (level, arm, seed) that differ beyond their timing
    are two experiments under one name, which no count can pool: refused, naming both."""
    first: dict[tuple[int, str, int], tuple[Row, str]] = {}
    for row, where in rows:
        seen, there = first.setdefault(row.key(), (row, where))
        if seen.measured() != row.measured():
            level, arm, seed = row.key()
            raise RunError(f"{there} and {where} are two different results for seed {seed}'s {arm} at level {level}; keep the one that belongs, "
                           "or report the runs apart")
    return [row for row, _ in first.values()]


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    def experiment(self):
        """The run's experiment, from its config.yaml, checked against the run id its results lines were written under:
        a config edited by hand since would describe another experiment than the one trained (and its shapes would not
        fit). The folder may have been renamed or copied; its lines keep their run id."""
        from lth import config

        if not self.config.is_file():
            raise RunError(f"{self.root} is not an lth run directory (no config.yaml)")
        cfg = config.load(self.config)
        trained = {row.run_id for row in self.rows()}
        if trained and (now := cfg.run_id()) not in trained:
            was = sorted(trained)[0]
            what = f"model, data or seed ({now.rpartition('-')[0]}, the run's {was.rpartition('-')[0]})" if now.rpartition("-")[0] != was.rpartition("-")[0] \
                else f"settings (digest {now.rpartition('-')[2]}, the run's {was.rpartition('-')[2]})"
            raise RunError(f"{self.config}, or the code it names, changed since the run was trained: its {what} differ from those of its results "
                           "lines; restore it")
        return cfg

    @property
    def invocations(self) -> Path:
        """What ran it, a line per invocation (`lth.provenance`)."""
        return self.root / "invocations.jsonl"

    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    @property
    def dataset(self) -> Path:
        """What the run's data are (`lth.data.DataModule.identity`): the loaded splits' sizes and sha256, or an image
        folder's classes (label i is the i-th) and files (`lth.imagefolder.Folder.describe`)."""
        return self.root / "dataset.json"

    def sizes(self) -> tuple[int | None, int | None]:
        """The training and test splits' numbers of examples as recorded (None where the run predates `dataset.json`):
        in-memory data record them as train_size and test_size, an image folder its files as train and test."""
        recorded = json.loads(self.dataset.read_text()) if self.dataset.exists() else {}
        train, test = (recorded.get(f"{split}_size", recorded.get(split)) for split in ("train", "test"))
        return train, test

    def same_data(self, found: dict, root: str) -> None:
        """Refuse data other than those the run recorded (if it recorded any), wherever they are now: a run continued,
        or measured, on other data would mix two experiments under one name."""
        if not self.dataset.exists():
            return
        recorded = json.loads(self.dataset.read_text())
        if differs := [key for key in found if key in recorded and recorded[key] != found[key]]:
            raise RunError(f"{self.dataset}: the run was trained on other data ({differs[0]} differs from {root}'s); "
                           "point data.root at its dataset, or choose another name or out_dir")

    @property
    def rewind(self) -> Path:
        return self.root / REWIND_CKPT

    def level(self, level: int) -> Path:
        return self.root / f"level_{level:02d}"

    def mask(self, level: int, chain: str = "ticket") -> Path:
        """A level's masks: the ticket's, which its controls share, or those of an arm with a chain of its own."""
        return self.level(level) / ("" if chain == "ticket" else chain) / "mask.pt"

    def refit(self, level: int, chain: str = "ticket") -> Path:
        """The weights a method reconstructed for a level's masks (`lth.methods.base.Method.refit`), beside them."""
        return self.mask(level, chain).with_name("refit.pt")

    def arm(self, level: int, arm: str) -> Path:
        return self.level(level) / arm

    def lock(self, name: str) -> Path:
        """An arm's lock (held while a process trains it) or the results ledger's."""
        return self.root / "locks" / f"{name}.lock"

    def diverged(self, level: int, arm: str) -> Path:
        """The note a (level, arm) whose training diverged leaves instead of a results line."""
        return self.arm(level, arm) / "diverged.json"

    def divergences(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("level_*/*/diverged.json"))]

    def masks_stored(self) -> list[Path]:
        return sorted([*self.root.glob("level_*/mask.pt"), *self.root.glob("level_*/*/mask.pt")])

    # -- the results ledger -------------------------------------------------------------------------------

    def rows(self) -> list[Row]:
        """The ledger's results, each (level, arm, seed) once: a line repeated word for word (a copy, a merge of two
        ledgers) counts once, and two different lines for one (level, arm, seed) are refused, with where they stand."""
        return distinct([(Row.from_json(line, where), where) for where, line in read_lines(self.results)] if self.results.exists() else [])

    def done(self, level: int, arm: str) -> Row | None:
        return next((r for r in self.rows() if r.level == level and r.arm == arm), None)

    def append(self, row: Row) -> list[Row]:
        """Record one finished (level, arm) in `results.jsonl`, in place of any line it had (a level trained again
        because its final.ckpt was moved aside: the ledger describes the weights on disk); returns every row now in it."""
        key = (row.level, row.arm)
        lines = self.append_line(self.results, row.to_json(), lambda line: (line.get("level"), line.get("arm")) == key)
        return [Row.from_json(line, where) for where, line in lines]

    def append_line(self, ledger: Path, line: dict[str, Any], same=lambda line: False) -> list[tuple[str, Any]]:
        """Add a line to one of the run's ledgers (`results.jsonl`, `stability.jsonl`), in the place of a line `same`
        says it replaces; other processes may record at the same time, hence the lock. Returns every line now in it."""
        with locks.held(self.lock(ledger.stem)):
            lines = [r for _, r in read_lines(ledger)] if ledger.exists() else []
            at = next((i for i, r in enumerate(lines) if same(r)), None)
            if at is None:
                lines.append(line)
            else:
                lines[at] = line
            atomic_write(ledger, "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines).encode())
        return [(f"{ledger}:{number}", r) for number, r in enumerate(lines, 1)]  # as written: no second read

    # -- stored tensors -----------------------------------------------------------------------------------

    @staticmethod
    def save(obj: Any, path: Path) -> None:
        """Serialised in memory first, then written: torch.save writing to a file turns a full disk (ENOSPC) into a
        RuntimeError of its zip writer, while a plain write keeps the OSError that `lth.cli` reports in one line."""
        serialised = io.BytesIO()
        torch.save(obj, serialised)
        atomic_write(path, serialised.getbuffer())

    @staticmethod
    def load(path: Path) -> Any:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)  # our own files
        except Exception as err:  # noqa: BLE001 - any failure to read means the file is unusable
            raise RunError(f"{path} is unreadable ({type(err).__name__}); move it aside to redo that step") from None
