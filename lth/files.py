"""Writing results so that a reader — another job, a kill, a colleague — never sees half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def publish(tmp: str, path: Path) -> None:
    """Move a finished temporary file into place, readable as the umask allows (temporary files are created
    0600, which would hide results from colleagues on a shared cluster)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=f".{path.name}.") as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    publish(tmp.name, path)
