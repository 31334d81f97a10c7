"""Command line: `lth run CONFIG [--key=value ...]`, `lth data download NAME --root DIR`."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from lth import preemption, provenance

USAGE = """usage: lth run CONFIG [--section.key=value ...] [--seed=[0,1,...]]   (lth run --help: every setting and its default)
       lth sweep SWEEP.yaml [--index I | --run] [--section.key=value ...]
       lth report RUN_DIR... | SWEEP.yaml [--out DIR] [--level L]  |  lth report --wandb ENTITY/PROJECT --group G [--out DIR]
       lth dashboard ENTITY/PROJECT [--group G] [--level L]
       lth export RUN_DIR --level K [--arm A] --out FILE [--sparse]
       lth stability CONFIG [--rewind=[0,100it,...]] [--levels=[0,3,...]] [--alphas=N] [--between_levels=true] [--section.key=value ...]
       lth sensitivity RUN_DIR [--level L] [--fractions=[0.1,...,0.9]] [--method magnitude|channel]
       lth data download NAME --root DIR   (NAME: a registered dataset with files to fetch, `lth data download --help`)"""




# The exit code of a run that trained all it could but some (level, arm) diverged (`lth.module.DIVERGED`).
DIVERGED = 4


def _fail(message: str) -> int:
    print(f"lth: error: {message}", file=sys.stderr)
    return 2


class _BadArguments(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line and exit 2 like every other refusal, not the usage and then the error."""

    def error(self, message):
        raise _BadArguments(f"{self.prog}: {message} (see {self.prog} --help)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    provenance.invoked(argv)  # recorded with every run it trains (`invocations.jsonl`)
    try:
        with preemption.installed():  # first: a signal during imports or checks ends the command in one line too
            return _main(argv)
    except preemption.Interrupted as err:
        ranks = sys.modules.get("lth.distributed")  # loaded once training began; every rank stops alike, rank 0 says so
        if ranks is None or ranks.writer():
            print(f"lth: {err}; rerun the same command to resume", file=sys.stderr)
        return err.exit_code
    except _BadArguments as err:
        return _fail(str(err))
    except KeyboardInterrupt:  # a second Ctrl-C, which does not wait for a checkpoint
        print("lth: stopped by a second SIGINT without a checkpoint; rerunning resumes from the last one", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"lth {version('lth')} (torch {version('torch')}, lightning {version('lightning')}, python {sys.version.split()[0]})")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _fail(f"unknown command {command!r} (one of {', '.join(COMMANDS)}; lth --help shows how each is called)")
    return COMMANDS[command](rest)


def _settings_help(command: str, own: str = "") -> int:
    """`lth run --help`: how the command is called, then every setting with its default, from the typed configuration
    (`lth.config.settings`), so the list cannot drift from the code; what each means is the settings reference
    (`lth.reference`)."""
    from lth import config

    print(f"usage: lth {command} CONFIG [--section.key=value ...]{own}\n\nSettings (YAML keys, or --key=value on the command line; "
          "a list of seeds, --seed=[0,1,2], trains them together), with their defaults:")
    for key, default in config.settings().items():
        print(f"  {key} = {json.dumps(default, default=str)}")
    return 0


def _run(rest: list[str]) -> int:
    if rest and rest[0] in ("-h", "--help"):
        return _settings_help("run")
    if not rest or rest[0].startswith("--"):
        return _fail("lth run needs a config file first: lth run CONFIG [--key=value ...]")

    from lth import config

    try:
        cfgs = config.load_seeds(rest[0], rest[1:])
    except config.ConfigError as err:
        return _fail(str(err))

    from lth import distributed, report
    from lth.imp import run_experiments

    runs, code = _training(lambda: run_experiments(cfgs))
    if code is not None:
        return code
    diverged = [line for run in runs for line in run.diverged]
    if not distributed.writer():  # rank 0 writes the report and the summary
        return DIVERGED if diverged else 0
    # The training is done and recorded: a late SIGUSR1 (SLURM's warning) must not kill the process while it
    # writes the report; SIGTERM and SIGINT still stop it, as they should.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    # The report of this invocation's seeds sits beside their run directories: out_dir/name/report.
    run_dirs = [run.dir.root for run in runs if run.dir.rows()]
    if run_dirs:
        cells = report.aggregate(report.read_rows(run_dirs))
        paths = report.write(cells, run_dirs, runs[0].dir.root.parent / "report", report.divergences(run_dirs))
        print(report.summary(cells))
        print("\nTest accuracy at the early-stopping step, mean ± std over seeds:")
        print(report.markdown(cells, report.ACCURACY, 4))
        print("\nGeneralisation gap (train − test accuracy) at the early-stopping step, mean ± std over seeds:")
        print(report.markdown(cells, "gap_at_early_stop", 4))
        print("results: " + " ".join(str(run.dir.results) for run in runs))
        print(f"report: {paths[0]}" + (f"\nfigure: {paths[1]}" if len(paths) > 1 else ""))
    for line in diverged:
        print(f"lth: {line}", file=sys.stderr)
    return DIVERGED if diverged else 0


def _training(work):
    """`work()` (training), with the outcomes every training command shares: (its result, None), or (None, the
    exit code): 2 for a bad config or run directory, 0 when another process holds the work, and after a stopping
    signal 3 (SIGUSR1, requeue), 143 (SIGTERM) or 130 (SIGINT) (`lth.preemption`)."""
    from lth import distributed
    from lth.config import ConfigError
    from lth.locks import Busy
    from lth.preemption import Interrupted
    from lth.run_dir import RunError

    # Lightning's per-Trainer banners ("GPU available", tips) would repeat for every level and arm.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    try:
        return work(), None
    except (ConfigError, RunError, distributed.MismatchError) as err:
        return None, _fail(str(err))
    except Busy as err:
        if distributed.writer():  # every rank stops alike; rank 0 says so
            print(f"lth: {err}", file=sys.stderr)
        return None, 0
    except Interrupted as err:
        if distributed.writer():
            print(f"lth: {err}; rerun the same command to resume", file=sys.stderr)
        return None, err.exit_code
    except OSError as err:  # a full disk, a quota or file-size limit, a folder made read-only mid-run: nothing written so far is damaged
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES):
            raise
        print(f"lth: error: {err.filename or 'writing'}: {err.strerror}; every file written before is whole (all are written atomically), "
              "so rerunning the same command once this is fixed resumes", file=sys.stderr)
        return None, 1


def _report(argv: list[str]) -> int:
    parser = _Parser(prog="lth report", description="Aggregate runs (seeds) per arm and level; runs of several experiments (a sweep's "
                     "points, given as run directories or as the sweep file) are compared point by point.")
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run directories, or one sweep file (with the overrides given to lth sweep)")
    parser.add_argument("--out", type=Path, default=Path("report"))
    parser.add_argument("--level", type=int, help="across points: the level whose accuracy is compared (default: the deepest every point reached)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs of --group from W&B instead")
    parser.add_argument("--group", help="the W&B group (lth's default: the study, NAME-<hash>)")
    args, extra = parser.parse_known_args(argv)
    sweep_file = len(args.run_dirs) == 1 and args.run_dirs[0].suffix in (".yaml", ".yml") and args.run_dirs[0].is_file()
    if extra and not sweep_file:
        return _fail(f"unrecognized arguments: {' '.join(extra)}")
    if bool(args.wandb) != bool(args.group) or bool(args.wandb) == bool(args.run_dirs):
        return _fail("give run directories, or --wandb ENTITY/PROJECT with --group G")
    from lth import compare, report, sweep

    try:
        if sweep_file:
            args.run_dirs = sweep.run_dirs(args.run_dirs[0], extra)
        args.run_dirs = report.run_folders(args.run_dirs)
        if args.wandb:
            rows, sources = report.rows_from_wandb(args.wandb, args.group), [f"{args.wandb} group {args.group}"]
        elif len(compare.points(args.run_dirs)[0]) > 1:
            print("\n".join(f"wrote {p}" for p in compare.write(args.run_dirs, args.out, args.level)))
            return 0
        else:
            rows, sources = report.read_rows(args.run_dirs), args.run_dirs
        paths = report.write(report.aggregate(rows), sources, args.out, report.divergences(args.run_dirs))
    except OSError as err:
        return _fail(f"{err.filename}: {err.strerror}" if err.filename else str(err).splitlines()[0])
    except Exception as err:  # noqa: BLE001 - files, configs or the W&B API: one line either way
        return _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    print("\n".join(f"wrote {p}" for p in paths))
    return 0


def _dashboard(argv: list[str]) -> int:
    parser = _Parser(
        prog="lth dashboard", description="Save a W&B report of tickets against their controls (needs a W&B login and network)."
    )
    parser.add_argument("path", metavar="ENTITY/PROJECT")
    parser.add_argument("--group", help="one study's W&B group (lth's default: NAME-<hash>); all runs of the project without it")
    parser.add_argument("--level", type=int, help="add each arm's accuracy at this level per group: a sweep's points compared")
    args = parser.parse_args(argv)
    entity, _, project = args.path.partition("/")
    if not entity or not project or "/" in project:
        return _fail(f"expected ENTITY/PROJECT, got {args.path!r}")
    from lth import dashboard

    try:
        saved = dashboard.build(entity, project, args.group, args.level).save()
    except Exception as err:  # noqa: BLE001 - no login, no network, a server error: one line either way
        return _fail(f"W&B: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    print(saved.url)
    return 0


def _export(argv: list[str]) -> int:
    parser = _Parser(prog="lth export", description="Write a trained (level, arm) as a plain network, checked against its masked one.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--level", type=int, required=True)
    parser.add_argument("--arm", default="ticket")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sparse", action="store_true", help="add a compressed copy of each pruned weight (CSR, or 2:4 on a sparse-tensor-core GPU)")
    args = parser.parse_args(argv)
    from lth.config import ConfigError
    from lth.export import export
    from lth.run_dir import RunError

    try:
        summary = export(args.run_dir, args.level, args.arm, args.out, args.sparse)
    except (RunError, ConfigError) as err:
        return _fail(str(err))
    for name, why in summary.get("semi_structured_skipped", {}).items():
        print(f"lth: {name}: CSR copy instead of a 2:4 semi-structured one ({why})", file=sys.stderr)
    kept, total = summary["weights_kept"], summary["prunable_weights"]
    print(f"wrote {args.out}: {kept:,} of {total:,} prunable weights kept ({kept / total:.2%}); outputs equal the masked network's "
          f"within {summary['max_output_difference']:.1e}")
    return 0


def _sensitivity(argv: list[str]) -> int:
    """Each layer pruned alone at each fraction, without retraining (`lth.sensitivity`)."""
    parser = _Parser(prog="lth sensitivity", description="Test accuracy with each prunable layer pruned alone.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--level", type=int, default=0)
    parser.add_argument("--fractions", default=None, help="a YAML list of fractions in (0, 1); default 0.1 to 0.9")
    parser.add_argument("--method", default="magnitude")
    args = parser.parse_args(argv)
    import yaml

    from lth import sensitivity
    from lth.config import ConfigError

    try:
        fractions = sensitivity.FRACTIONS if args.fractions is None else yaml.safe_load(args.fractions)
        if not isinstance(fractions, list) or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions):
            raise ConfigError(f"--fractions: expected a list of numbers like [0.1,0.5], got {args.fractions!r}")
    except (ConfigError, yaml.YAMLError) as err:
        return _fail(str(err).splitlines()[0])
    # `sensitivity.run` checks the rest (the level, the fractions, the method) before any work: exit 2 on a problem.
    path, code = _training(lambda: sensitivity.run(args.run_dir, args.level, [float(f) for f in fractions], args.method))
    if code is not None:
        return code
    print(f"results: {args.run_dir / 'sensitivity.jsonl'}\nreport: {path}")
    return 0


def _stability(argv: list[str]) -> int:
    """Linear mode connectivity of two copies trained from each rewind step k (`lth.stability`)."""
    if argv and argv[0] in ("-h", "--help"):
        return _settings_help("stability", " [--rewind=[0,100it,...]] [--levels=[0,3,...]] [--alphas=N] [--between_levels=true]")
    if not argv or argv[0].startswith("--"):
        return _fail("lth stability needs a config file first: lth stability CONFIG [--rewind=[...]] [--levels=[...]] [--alphas=N]")
    from lth import config

    try:
        from lth import stability

        own, overrides = stability.arguments(argv[1:])
        cfgs = config.load_seeds(argv[0], overrides)
        for cfg in cfgs:
            stability.points(cfg, own["rewind"] or [cfg.prune.rewind], own["levels"], own["alphas"])
    except config.ConfigError as err:
        return _fail(str(err))
    from lth.report import About
    from lth.run_dir import read_lines

    paths, code = _training(lambda: [stability.run_stability(cfg, own["rewind"] or [cfg.prune.rewind], own["levels"], own["alphas"], own["between_levels"])
                                     for cfg in cfgs])
    if code is not None:
        return code
    # Over this invocation's seeds, beside their run directories: out_dir/name/stability_report.
    rows = [row for path in paths for _, row in read_lines(path)]
    written = stability.write_report(rows, paths[0].parent.parent / "stability_report", About.of(paths[0].parent))
    print("results: " + " ".join(str(p) for p in paths))
    print(f"report: {written[0]}")
    return 0


def _sweep(argv: list[str]) -> int:
    parser = _Parser(
        prog="lth sweep",
        allow_abbrev=False,
        description="Without --index or --run: list a grid sweep's points. --index I: run point I as `wandb agent` would, "
        "with no W&B server (logging offline unless WANDB_MODE says otherwise). --run: run every point here, one after "
        "another; run again after a kill, it finishes what is left. Each point's runs go under out_dir/NAME/POINT, POINT "
        "naming the settings that vary across the sweep. Further --key=value arguments are appended to every point's own.",
    )
    parser.add_argument("file", type=Path)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--index", type=int)
    which.add_argument("--run", action="store_true")
    args, extra = parser.parse_known_args(argv)
    from lth import config, sweep

    try:
        spec = sweep.load(args.file)
        points = sweep.grid(spec)
        if args.index is not None and not 0 <= args.index < len(points):
            raise config.ConfigError(f"--index {args.index} is outside the grid of {args.file} (0 to {len(points) - 1})")
        config.parse_overrides(extra)
    except config.ConfigError as err:
        return _fail(str(err))
    names, commands = sweep.point_names(spec, points), sweep.commands(spec, points, extra)
    if args.index is None and not args.run:
        for i, argv in enumerate(commands):
            print(f"{i}: {sweep.pasteable(argv)}")
        print(f"{len(points)} grid points: sbatch --array=0-{len(points) - 1} slurm/array.sbatch {args.file}   (or here: lth sweep {args.file} --run)")
        return 0
    if shutil.which(commands[0][0]) is None:
        return _fail(f"{args.file}: its command runs {commands[0][0]!r}, which is not a program on this PATH")
    if args.index is not None:
        print(f"[lth] grid point {args.index}/{len(points) - 1}: {sweep.pasteable(commands[args.index])}", file=sys.stderr, flush=True)
        os.execvpe(commands[args.index][0], commands[args.index], sweep.environment(spec))  # the run replaces this process: signals reach it
    return sweep.run_all(commands, names, points, sweep.environment(spec))


def _data(argv: list[str]) -> int:
    from lth.data import download, downloadable

    parser = _Parser(prog="lth data", description="Fetch a dataset's standard files, checking their md5.")
    parser.add_argument("action", choices=["download"])
    parser.add_argument("name", choices=downloadable())
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args(argv)

    try:
        download(args.name, args.root)
    except (OSError, ValueError) as err:
        return _fail(str(err))
    print(f"{args.name} is in {args.root}")
    return 0


COMMANDS = {"run": _run, "stability": _stability, "report": _report, "dashboard": _dashboard, "export": _export, "sweep": _sweep, "data": _data,
            "sensitivity": _sensitivity}


if __name__ == "__main__":
    sys.exit(main())
