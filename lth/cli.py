"""Command line: `lth run CONFIG [--key=value ...]`, `lth data download NAME --root DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE = """usage: lth run CONFIG [--section.key=value ...]
       lth report RUN_DIR... [--out DIR]
       lth data download {mnist,cifar10,cifar100} --root DIR"""


def _fail(message: str) -> int:
    print(f"lth: error: {message}", file=sys.stderr)
    return 2


def _table(rows: list[dict]) -> str:
    lines = ["level  weights remaining  test acc  best val acc  early-stop step"]
    for r in sorted(rows, key=lambda r: r["level"]):
        lines.append(
            f"{r['level']:>5}  {r['weights_remaining']:>17.2%}  {r['test_acc']:>8.4f}  {r['best_val_acc']:>12.4f}  {r['early_stop_step']:>15}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "data":
        return _data(rest)
    if command == "report":
        return _report(rest)
    if command != "run":
        return _fail(f"unknown command {command!r}\n{USAGE}")
    if not rest or rest[0].startswith("--"):
        return _fail("lth run needs a config file first: lth run CONFIG [--key=value ...]")

    from lth import config

    try:
        cfg = config.load(rest[0], rest[1:])
    except config.ConfigError as err:
        return _fail(str(err))

    from lth.imp import RunError, run_experiment

    try:
        run = run_experiment(cfg)
    except (config.ConfigError, RunError) as err:
        return _fail(str(err))
    print(_table([r for r in run.results() if r["arm"] == "ticket"]))
    print(f"results: {run.results_path}")
    return 0


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lth report", description="Aggregate runs (seeds) per arm and level.")
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("report"))
    args = parser.parse_args(argv)
    from lth import report

    try:
        paths = report.write(args.run_dirs, args.out)
    except (OSError, ValueError, KeyError) as err:
        return _fail(str(err))
    print("\n".join(f"wrote {p}" for p in paths))
    return 0


def _data(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lth data", description="Fetch a dataset's standard files, checking their md5.")
    parser.add_argument("action", choices=["download"])
    parser.add_argument("name", choices=["mnist", "cifar10", "cifar100"])
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args(argv)
    from lth.data import download

    try:
        download(args.name, args.root)
    except (OSError, ValueError) as err:
        return _fail(str(err))
    print(f"{args.name} is in {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
