"""Refactorings change no result: a small run with every arm, compared with a recording made before."""

import json

import pytest
import torch
from golden.fingerprint import RECORDING, fingerprint, run


def test_a_three_level_run_with_every_arm_matches_its_recording(tmp_path):
    recorded = json.loads(RECORDING.read_text())
    if torch.__version__ != recorded["torch"]:
        pytest.skip(f"recorded with torch {recorded['torch']}; torch {torch.__version__} may round differently")
    now = fingerprint(run(tmp_path))
    assert now["rows"] == recorded["rows"]
    assert sorted(now["files"]) == sorted(recorded["files"])
    changed = [name for name in recorded["files"] if now["files"][name] != recorded["files"][name]]
    assert not changed, f"tensors differ from the recording in {changed}"
