"""What every dataset reader shares (`lth.data`'s in-memory datasets, `lth.imagefolder`'s image files): the
error for missing or damaged files, the seeded generators every data order and augmentation draw comes from, and
how a tensor's content enters a digest (a dataset's identity, pretrained weights')."""

from __future__ import annotations

import hashlib

import torch


class MissingDataError(FileNotFoundError):
    """Missing, damaged or misplaced data files: reported as one line before any training (exit 2)."""


def seeded_generator(*seeds: object) -> torch.Generator:
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(repr(seeds).encode()).digest()[:8], "little"))


def digest_tensor(digest, name: str, tensor: torch.Tensor) -> None:
    """Add a tensor to a hash: its name, dtype, shape and bytes, so that equal content hashes equal wherever it lies."""
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
    digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
