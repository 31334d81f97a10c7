"""Writing results so that a reader — another job, a kill, a colleague — never sees half a file."""

from __future__ import annotations

import io
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lth import distributed

# A temporary file's name says who writes it, `.NAME~HOST~PID~RANDOM`, so that one left by a killed writer can be
# told from one being written (`remove_orphans`).
_SEP = "~"


def _writer() -> str:
    return f"{socket.gethostname()}{_SEP}{os.getpid()}{_SEP}"


@contextmanager
def atomic_open(path: Path) -> Iterator[IO[bytes]]:
    """A file that appears at `path` whole, or not at all: written to a temporary file beside it, synced, then
    moved into place. On an error the temporary file is removed and `path` is left as it was. Under data
    parallelism only rank 0 writes; the others' bytes go nowhere (`lth.distributed`)."""
    if not distributed.writer():
        yield io.BytesIO()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=f".{path.name}{_SEP}{_writer()}") as tmp:
        try:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    # Temporary files are created 0600, which would hide results from colleagues on a shared cluster.
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp.name, 0o666 & ~umask)
        os.replace(tmp.name, path)
    except BaseException:
        os.unlink(tmp.name)
        raise


def remove_orphans(root: Path) -> list[Path]:
    """Remove the temporary files under `root` that a writer on this host left when it was killed mid-write (its
    process is gone); those of live processes and of other hosts stay. Returns what was removed."""
    host = socket.gethostname()
    removed = []
    for path in root.rglob(f".*{_SEP}*{_SEP}*{_SEP}*"):
        _, writer_host, pid, _ = path.name.rsplit(_SEP, 3)
        if writer_host == host and pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data)


def save_figure(figure, png: Path) -> list[Path]:
    """A matplotlib figure as PNG (for the report's page) and beside it as PDF (vector, for a paper), each written
    atomically (array tasks of one study may write the same report at once); the paths written."""
    written = []
    for path in (png, png.with_suffix(".pdf")):
        with atomic_open(path) as handle:
            figure.savefig(handle, format=path.suffix[1:], dpi=120)
        written.append(path)
    return written
