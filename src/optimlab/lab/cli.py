"""``optimlab lab``: run the study and write the report; ``optimlab lab report``: only the report.

Exit codes: 0 done; 2 bad input (unknown name, bad config file, unusable
output directory or database — one line on stderr, nothing written);
130 interrupted (every finished run is kept; the same command resumes).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HELP = "train the lecture's optimizers and schedules on small problems and check its claims"

DESCRIPTION = """\
Train the lecture's optimizers (SGD, momentum, Nesterov, Adagrad, RMSProp, Adam with and
without bias correction, AdamW) with its learning-rate schedules on small problems — 2-D test
functions, a noisy quadratic, digits, MNIST-1D, a tiny transformer — tune each learning rate,
rerun the best on several seeds, and write an HTML report that checks the lecture's claims.

  optimlab lab --quick          about 1.5 minutes on 2 cores; report in ./optimlab-lab/
  optimlab lab                  the default study, about 12 minutes
  optimlab lab report           rebuild the report from the database, no training

Results go to a SQLite database (default OUT/lab.sqlite); each run is saved when it ends, and
running the same command again skips finished runs, so an interrupted study (Ctrl-C, a killed
process) resumes where it stopped. See --list for the names the selection options accept.
"""

EPILOG = """\
config file (--config study.toml or .json; command-line options win):
  profile = "quick"                       # quick | default | full
  problems = ["mnist1d_cnn", "digits_mlp"]
  optimizers = ["sgd", "momentum", "adam"]
  schedules = ["constant", "cosine"]
  seeds = [0, 1, 2]
  grid_points = 5                         # odd: the lr grid, half a decade apart
  steps = {mnist1d_cnn = 2000}            # or one number for every problem
  cross = false                           # true: every optimizer x every schedule
  out = "my-lab"                          # also: db = "...", gif = true
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="profile",
        action="store_const",
        const="quick",
        help="the quick profile: a subset, short runs (about 1.5 min)",
    )
    size.add_argument(
        "--full",
        dest="profile",
        action="store_const",
        const="full",
        help="the full profile: longer runs, all schedules (an hour or more)",
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (default ./optimlab-lab)")
    parser.add_argument("--db", metavar="PATH", help="results database (default OUT/lab.sqlite)")
    parser.add_argument(
        "--problems", metavar="A,B", help="problems to run (default: the profile's)"
    )
    parser.add_argument("--optimizers", metavar="A,B", help="optimizers to compare")
    parser.add_argument(
        "--schedules",
        metavar="A,B",
        help="schedules to compare (first: constant if listed, else the first)",
    )
    parser.add_argument("--seeds", metavar="0,1,2", help="seeds; the lr is tuned on seed 0")
    parser.add_argument(
        "--grid",
        dest="grid_points",
        type=int,
        metavar="N",
        help="learning rates per grid (odd; half a decade apart)",
    )
    parser.add_argument(
        "--cross",
        action="store_true",
        default=None,
        help="every optimizer with every schedule on every problem",
    )
    parser.add_argument("--config", metavar="FILE", help="a .toml or .json file of these settings")
    parser.add_argument(
        "--gif",
        action="store_true",
        default=None,
        help="also animate the 2-D trajectories (GIF, slower report)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads (default 1: fastest for these small models)",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list profiles, problems, optimizers and schedules, then exit",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would run (counts, estimated time) and exit",
    )
    sub = parser.add_subparsers(dest="action", metavar="{report}")
    report = sub.add_parser(
        "report",
        help="rebuild the report from the database; no training",
        description="Rebuild report.html and plots/ from the database.",
    )
    report.add_argument(
        "--out", dest="report_out", metavar="DIR", help="output directory (default ./optimlab-lab)"
    )
    report.add_argument(
        "--db", dest="report_db", metavar="PATH", help="database (default OUT/lab.sqlite)"
    )
    report.add_argument(
        "--gif", dest="report_gif", action="store_true", help="also animate the 2-D trajectories"
    )
    # fmt: skip


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _paths(out: Any, db: Any) -> tuple[Path, Path]:
    out_dir = Path(out or "optimlab-lab")
    return out_dir, Path(db) if db else out_dir / "lab.sqlite"


def _check_writable(out: Path) -> str | None:
    """None if files can be created in ``out`` (made if missing), else the reason."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        return f"cannot write to output directory {out}: {error.strerror or error}"
    return None


def run(args: argparse.Namespace) -> int:
    from . import config
    from .store import StoreError

    if args.action == "report":
        return _report(args.report_out or args.out, args.report_db or args.db,
                       args.report_gif or bool(args.gif))  # fmt: skip
    if args.list:
        return _list()
    try:
        file = config.load_config_file(args.config) if args.config else {}

        def pick(key: str) -> Any:  # the command line wins over the file
            value = getattr(args, key, None)
            return file.get(key) if value is None else value

        selection = config.make_selection(
            pick("profile") or "default", pick("problems"), pick("optimizers"), pick("schedules"),
            pick("seeds"), pick("grid_points"), file.get("steps"), bool(pick("cross")),
        )  # fmt: skip
        if args.threads < 1:
            raise config.ConfigError(f"--threads must be at least 1, got {args.threads}")
    except config.ConfigError as error:
        return _fail(str(error))
    out, db = _paths(pick("out"), pick("db"))
    gif = bool(pick("gif"))
    plan = config.build_plan(selection)
    if args.dry_run:
        return _dry_run(plan, out, db)
    problem = _check_writable(out) or _check_writable(db.parent)
    if problem:
        return _fail(problem)
    from .store import Store

    try:
        store = Store.open(db)
    except StoreError as error:
        return _fail(str(error))
    with store:
        return _study(store, plan, selection.profile, out, gif, args)


def _study(store: Any, plan: dict, profile: str, out: Path, gif: bool, args: Any) -> int:
    from . import config, runner
    from .progress import Progress
    from .report import write_report

    key = config.study_key(plan)
    store.save_study(key, profile, plan)
    total = config.count_runs(plan)
    have = len(_planned_keys(plan) & store.run_keys())
    progress = Progress(total)
    progress.line(
        f"lab: {profile} profile: {len(plan['problems'])} problems, {total} runs"
        + (f" ({have} already in {store.path})" if have else "")
        + f", about {config.estimate_seconds(plan) / 60:.0f} min on one core; "
        f"report → {out / 'report.html'}"
    )
    started = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        counts = runner.run_study(store, plan, progress, threads=args.threads)
    except KeyboardInterrupt:
        progress.close()
        done = len(_planned_keys(plan) & store.run_keys())
        print(
            f"\ninterrupted: {done} finished runs of this study are saved in {store.path} (the run "
            f"in progress was discarded).\nresume with: {_resume_command(args)}",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.close()
    minutes = (time.perf_counter() - started) / 60
    print(f"lab: {counts['new']} runs trained, {counts['skipped']} already done, "
          f"{minutes:.1f} min; writing the report…", file=sys.stderr)  # fmt: skip
    try:
        path = write_report(store, out, gif=gif)
    except KeyboardInterrupt:
        print(f"\ninterrupted while writing the report; every run is saved. Write it with: "
              f"optimlab lab report --db {shlex.quote(str(store.path))} "
              f"--out {shlex.quote(str(out))}", file=sys.stderr)  # fmt: skip
        return 130
    print(f"report: {path}")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _planned_keys(plan: dict) -> set[str]:
    """Keys of every run the plan could make (seed runs at any grid lr: the tuning decides)."""
    from . import train

    return {
        train.run_key(train.run_config(g["config"], lr, seed))
        for p in plan["problems"] for g in p["groups"] for lr in g["grid"]
        for seed in p["seeds"]
    }  # fmt: skip


def _resume_command(args: Any) -> str:
    parts = ["optimlab", "lab"]
    if args.profile in ("quick", "full"):
        parts.append(f"--{args.profile}")
    for key in ("out", "db", "problems", "optimizers", "schedules", "seeds", "config"):
        if getattr(args, key, None) is not None:
            parts += [f"--{key}", str(getattr(args, key))]
    if args.grid_points is not None:
        parts += ["--grid", str(args.grid_points)]
    parts += ["--cross"] if args.cross else []
    parts += ["--gif"] if args.gif else []
    return shlex.join(parts)


def _report(out: Any, db: Any, gif: bool) -> int:
    from .report import ReportError, write_report
    from .store import Store, StoreError

    out_dir, db_path = _paths(out, db)
    problem = _check_writable(out_dir)
    if problem:
        return _fail(problem)
    try:
        with Store.open(db_path, create=False) as store:
            path = write_report(store, out_dir, gif=gif)
    except (StoreError, ReportError) as error:
        return _fail(str(error))
    print(f"report: {path}")
    return 0


def _dry_run(plan: dict, out: Path, db: Path) -> int:
    from . import config

    print(f"profile {plan['profile']}, seeds {plan['seeds']}, database {db}, report {out}")
    for p in plan["problems"]:
        groups = ", ".join(f"{g['optimizer']}/{g['schedule']}" for g in p["groups"])
        print(f"  {p['name']} ({p['steps']} steps, seeds {p['seeds']}): {groups}")
    print(f"{config.count_runs(plan)} runs, about {config.estimate_seconds(plan) / 60:.1f} min")
    return 0


def _list() -> int:
    from . import catalog, config, problems

    print("profiles:")
    for p in config.PROFILES.values():
        print(f"  {p.name:16s} {p.help}")
    print("problems:")
    for p in problems.registry().values():
        print(f"  {p.name:16s} {p.title}")
    print("optimizers:")
    for o in catalog.OPTIMIZERS.values():
        print(f"  {o.name:16s} {o.label}: {o.lecture}")
    print("schedules:")
    for s in catalog.SCHEDULES.values():
        print(f"  {s.name:16s} {s.text}")
    return 0
