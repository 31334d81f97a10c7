"""Refactorings change no result: a small run with every arm, compared with a recording made before: bit for bit
on the build it was recorded with, within documented tolerances on any other (`golden.fingerprint.TOLERANCES`)."""

import copy
import json

from golden.fingerprint import RECORDING, build, fingerprint, run, within_tolerance


def test_a_three_level_run_with_every_arm_matches_its_recording(tmp_path):
    recorded = json.loads(RECORDING.read_text())
    now = fingerprint(run(tmp_path))
    here, there = build(), {key: recorded.get(key) for key in build()}
    if here != there:  # another build, or another CPU's kernels, rounds differently: its tolerances
        problems = within_tolerance(now, recorded)
        assert not problems, f"recorded with {there}, run with {here}: " + "; ".join(problems[:5])
        return
    assert now["rows"] == recorded["rows"]
    assert sorted(now["files"]) == sorted(recorded["files"])
    changed = [name for name in recorded["files"] if now["files"][name] != recorded["files"][name]]
    assert not changed, f"tensors differ from the recording in {changed}"


def test_the_tolerance_mode_passes_rounding_and_fails_a_changed_result():
    recorded = json.loads(RECORDING.read_text())
    assert within_tolerance(recorded, recorded) == []
    rounded = copy.deepcopy(recorded)
    rounded["rows"][1]["test_acc"] += 0.02
    rounded["rows"][1]["macs"] = int(rounded["rows"][1]["macs"] * 1.01)
    rounded["files"] = {name: "another hash" for name in rounded["files"]}
    assert within_tolerance(rounded, recorded) == []
    for field, value in (("test_acc_at_early_stop", 0.3), ("weights_remaining", 0.5), ("steps_trained", 1)):
        changed = copy.deepcopy(recorded)
        changed["rows"][2][field] += value
        (problem,) = within_tolerance(changed, recorded)
        assert field in problem
    fewer = copy.deepcopy(recorded)
    fewer["rows"].pop()
    assert within_tolerance(fewer, recorded)
