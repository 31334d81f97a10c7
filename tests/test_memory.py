"""A long run does not grow host memory level over level: nothing of a finished level (its module, trainer,
optimizer, data) may stay alive."""

import gc
from pathlib import Path

import pytest

from lth import cli, imp

STATM = Path("/proc/self/statm")


@pytest.mark.slow
@pytest.mark.skipif(not STATM.exists(), reason="resident memory is read from Linux's /proc/self/statm")
def test_resident_memory_is_flat_over_sixteen_levels(tiny, monkeypatch):
    rss_mb = []
    record = imp.Run.record

    def measured(self, row):
        record(self, row)
        gc.collect()
        rss_mb.append(int(STATM.read_text().split()[1]) * 4096 / 2**20)

    monkeypatch.setattr(imp.Run, "record", measured)
    args = [*tiny, "--model=lenet_300_100", "--prune.levels=16", "--prune.fraction=0.2", "--arms=[ticket,reinit]"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    assert len(rss_mb) == 1 + 16 * 2
    # Measured: +0.6 MB from level 4 to 16 (allocator noise); keeping each finished member's module alive
    # instead grows it by 14 MB. Levels 0-3 are left out: the first levels fill caches that then stay.
    growth = rss_mb[-1] - rss_mb[8]
    assert growth < 4, f"resident memory grew {growth:.1f} MB from level 4 to 16: {[round(r) for r in rss_mb]}"
