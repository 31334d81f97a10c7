"""The README's quickstart, exactly as a new user runs it, shows the lottery-ticket effect (Frankle & Carbin 2019)."""

import statistics

import pytest

from lth import cli, config, report


@pytest.mark.slow
def test_the_quickstart_shows_the_lottery_ticket_effect(tmp_path):
    assert cli.main(["run", "experiments/quickstart.yaml", f"--out_dir={tmp_path}"]) == 0
    cfg = config.load_seeds("experiments/quickstart.yaml")[0]
    cells = report.aggregate(report.read_rows(sorted((tmp_path / "quickstart").glob("*-seed*"))))
    dense = cells["ticket", 0]
    levels = range(1, cfg.prune.levels + 1)
    accuracy = lambda arm, level: cells[arm, level].test_acc_at_early_stop  # noqa: E731
    assert cells["ticket", cfg.prune.levels].weights_remaining <= 0.20
    for level in levels:
        # (a) the ticket stays within the dense network's seed spread, or above it, down to <= 20% remaining
        ticket = accuracy("ticket", level)
        assert ticket.mean >= dense.test_acc_at_early_stop.mean - dense.test_acc_at_early_stop.std, level
        # (b) at <= 30% remaining, reinit and random pruning fall below it by more than the pooled seed std
        if cells["ticket", level].weights_remaining <= 0.30:
            for control in ("reinit", "random_prune"):
                pooled = ((ticket.std**2 + accuracy(control, level).std ** 2) / 2) ** 0.5
                assert ticket.mean - accuracy(control, level).mean > pooled, (control, level)
    # (c) at the sparsest level the ticket stops early sooner than reinit; (d) the dense run stops before its end
    sparsest = cfg.prune.levels
    assert cells["ticket", sparsest].early_stop_step.mean < cells["reinit", sparsest].early_stop_step.mean
    total = config.steps(cfg).total_steps
    assert statistics.fmean(dense.early_stop_step.values) < total
