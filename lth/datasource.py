"""What every dataset reader shares (`lth.data`'s in-memory datasets, `lth.imagefolder`'s image files): the
error for missing or damaged files, and the seeded generators every data order and augmentation draw comes from."""

from __future__ import annotations

import hashlib

import torch


class MissingDataError(FileNotFoundError):
    """Missing, damaged or misplaced data files: reported as one line before any training (exit 2)."""


def seeded_generator(*seeds: object) -> torch.Generator:
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(repr(seeds).encode()).digest()[:8], "little"))
