"""``optimlab lab``: run the study and write the report; ``optimlab lab report``: only the report.

Exit codes: 0 done; 2 bad input (unknown name, bad value, bad config file,
unusable output directory or database, missing lab dependencies — one line on
stderr starting ``error:``, nothing written); 130 interrupted (every finished
run is kept; the same command resumes).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from .preflight import check_paths, extras_problem, make_folders

HELP = "train the lecture's optimizers and schedules on small problems and check its claims"

DESCRIPTION = """\
Train the lecture's optimizers (SGD, momentum, Nesterov, Adagrad, RMSProp, Adam with and
without bias correction, AdamW, and the lecture's own forms of them) with its learning-rate
schedules on small problems — 2-D test functions, a noisy quadratic, digits, MNIST-1D, a tiny
transformer — tune each learning rate, compare them over seeds until each comparison is decided
(95 % confidence) or its seed budget is spent, and write an HTML report that checks the
lecture's claims.

  optimlab lab --quick          a first look, a few minutes; report in ./optimlab-lab/
  optimlab lab                  the default study
  optimlab lab --dry-run        what would run, and how long it takes on this machine
  optimlab lab report           rebuild the report from the database, no training

Before a study starts it times a short run of each problem and prints how long the study will
take here. Results go to a SQLite database (default OUT/lab.sqlite); each run is saved when it
ends, and running the same command again skips finished runs, so an interrupted study (Ctrl-C, a
killed process) resumes where it stopped. Two processes started on one database share the runs.
See --list for the names the selection options accept.
"""

EPILOG = """\
config file (--config study.toml or .json; command-line options win):
  profile = "quick"                       # quick | default | full
  problems = ["mnist1d_cnn", "digits_mlp"]
  optimizers = ["sgd", "momentum", "adam"]
  schedules = ["constant", "cosine"]
  seeds = [0, 1, 2]                       # a fixed set of seeds (no seeds added)
  grid_points = 5                         # odd: the lr grid, half a decade apart
  steps = {mnist1d_cnn = 2000}            # or one number for every problem
  cross = false                           # true: every optimizer x every schedule
  out = "my-lab"                          # also: db = "...", gif = true
"""

#: the options that choose a study, which `optimlab lab report` does not take
STUDY_OPTIONS = ("profile", "problems", "optimizers", "schedules", "seeds", "grid_points",
                 "cross", "config", "dry_run", "list")  # fmt: skip


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but every mistake is one ``error:`` line and exit status 2.

    Plain argparse prints its usage above the error, and hands an unknown option up
    to the top-level parser, which prints the top-level usage.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def configure(parser: argparse.ArgumentParser) -> None:
    parser.__class__ = _OneLineParser  # the dispatcher builds a plain ArgumentParser
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        dest="profile",
        action="store_const",
        const="quick",
        help="the quick profile: fewer problems and seeds, short runs",
    )
    size.add_argument("--full", dest="profile", action="store_const", const="full",
                      help="the full profile: long runs (MNIST-1D to its paper's accuracy), "
                      "every optimizer everywhere, more seeds; hours")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="output directory (default ./optimlab-lab)")
    parser.add_argument("--db", metavar="PATH", help="results database (default OUT/lab.sqlite)")
    parser.add_argument(
        "--problems", metavar="A,B", help="problems to run (default: the profile's)"
    )
    parser.add_argument(
        "--optimizers",
        metavar="A,B",
        help="optimizers to compare (alone: with the constant schedule only)",
    )
    parser.add_argument(
        "--schedules",
        metavar="A,B",
        help="schedules to compare (first: constant if listed, else the first)",
    )
    parser.add_argument(
        "--seeds",
        metavar="0,1,2",
        help="a fixed set of seeds (default: the profile's, added as needed); "
        "the lr is tuned on seed 0",
    )
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
        help="print what would run and how long it takes here, then exit",
    )
    sub = parser.add_subparsers(dest="action", metavar="{report}", parser_class=_OneLineParser)
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
    report.add_argument("--gif", dest="report_gif", action="store_true",
                        help="also animate the 2-D trajectories")  # fmt: skip


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _paths(out: Any, db: Any) -> tuple[Path, Path]:
    out_dir = Path(out or "optimlab-lab")
    return out_dir, Path(db) if db else out_dir / "lab.sqlite"


def run(args: argparse.Namespace) -> int:
    if args.action == "report":
        given = [f"--{k.replace('_', '-')}" for k in STUDY_OPTIONS if getattr(args, k, None)]
        if given:
            return _fail(f"{given[0]} chooses a study; `optimlab lab report` takes only --out, "
                         "--db and --gif")  # fmt: skip
        return _report(args.report_out or args.out, args.report_db or args.db,
                       args.report_gif or bool(args.gif))  # fmt: skip
    if args.list:
        return _list()
    from . import config
    from .plan import build_plan

    try:
        file = config.load_config_file(args.config) if args.config else {}

        def pick(key: str) -> Any:  # the command line wins over the file
            value = getattr(args, key, None)
            return file.get(key) if value is None else value

        selection = config.make_selection(
            pick("profile") or "default", pick("problems"), pick("optimizers"), pick("schedules"),
            pick("seeds"), pick("grid_points"), file.get("steps"), bool(pick("cross")),
        )  # fmt: skip
        cpus = os.cpu_count() or 1
        if not 1 <= args.threads <= cpus:
            raise config.ConfigError(f"--threads must be from 1 to {cpus}, got {args.threads}")
    except config.ConfigError as error:
        return _fail(str(error))
    problem = extras_problem()
    if problem:
        return _fail(problem)
    out, db = _paths(pick("out"), pick("db"))
    plan = build_plan(selection)
    if args.dry_run:
        return _dry_run(plan, out, db, args.threads)
    problem = check_paths(out, db)
    if problem:
        return _fail(problem)
    from .store import Store, StoreError, inspect

    try:
        inspect(db)  # a foreign or damaged file is refused before anything is made
        problem = make_folders(out, db)
        if problem:
            return _fail(problem)
        store = Store.open(db)
    except StoreError as error:
        return _fail(str(error))
    with store:
        return _study(store, plan, out, bool(pick("gif")), args)


def _estimate(plan: dict, threads: int, store: Any = None) -> tuple[float, float]:
    """Minutes (low, high) the plan's missing runs take here, from runs timed just now."""
    from .estimate import calibrate, study_seconds

    have = {p["name"]: len(_present(store, p)) for p in plan["problems"]} if store else {}
    low, high = study_seconds(plan, calibrate(plan, threads), have)
    return low / 60, high / 60


def _duration(low: float, high: float) -> str:
    """One estimate, the middle of the range: studies measured here ended near it (default
    13.0 min for 9.8–16, quick 2.4 for 2.0–2.6), where the low end had been 25 % short."""
    return (
        f"about {_minutes((low + high) / 2)} on this machine ({_minutes(low)} if every "
        f"comparison is decided at its first look, {_minutes(high)} if none is before its last)"
    )


def _present(store: Any, problem: dict) -> set[str]:
    from .analysis import load_problem

    groups = load_problem(store, problem)
    return {r.key for g in groups for r in (*g.grid_runs.values(), *g.runs) if r is not None}


def _study(store: Any, plan: dict, out: Path, gif: bool, args: Any) -> int:
    from . import runner
    from .plan import count_runs, study_key
    from .progress import Progress
    from .report import write_report

    key = study_key(plan)
    store.save_study(key, plan["profile"], plan)
    have = sum(len(_present(store, p)) for p in plan["problems"])
    low_runs, high_runs = count_runs(plan)
    progress = Progress(max(0, low_runs - have))
    low, high = _estimate(plan, args.threads, store)
    progress.line(
        f"lab: {plan['profile']} profile: {len(plan['problems'])} problems, {low_runs}–{high_runs}"
        f" runs{f' ({have} already in {store.path})' if have else ''}; {_duration(low, high)};"
        f" report → {out / 'report.html'}"
    )
    started = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        counts = runner.run_study(store, plan, progress, threads=args.threads)
    except KeyboardInterrupt:
        progress.close()
        done = sum(len(_present(store, p)) for p in plan["problems"])
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
    store.set_meta(f"timing:{key}", {"estimate_min": [low, high], "took_min": minutes,
                                     "trained_here": counts.here})  # fmt: skip
    other = f", {counts.other} by another process sharing the database" if counts.other else ""
    print(f"lab: {counts.here} runs trained here{other}, {counts.before} already done; "
          f"{minutes:.1f} min (estimated {_minutes(low)}–{_minutes(high)}); writing the report…",
          file=sys.stderr)  # fmt: skip
    try:
        path = write_report(store, out, gif=gif)
    except KeyboardInterrupt:
        print(f"\ninterrupted while writing the report; every run is saved. Write it with: "
              f"optimlab lab report --db {shlex.quote(str(store.path))} "
              f"--out {shlex.quote(str(out))}", file=sys.stderr)  # fmt: skip
        return 130
    print(f"report: {path}")
    return 0


def _minutes(value: float) -> str:
    return f"{value:.1f} min" if value < 10 else f"{value:.0f} min"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


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
    out_dir, db_path = _paths(out, db)
    if db_path.is_dir():
        return _fail(f"--db {db_path} is a directory, not a database file")
    if not db_path.exists():
        return _fail(f"no lab database at {db_path} (run `optimlab lab` first)")
    problem = extras_problem() or check_paths(out_dir)
    if problem:
        return _fail(problem)
    from .report import ReportError, write_report
    from .store import Store, StoreError, inspect

    try:
        inspect(db_path)
        with Store.open(db_path, create=False) as store:
            if store.latest_study() is None:
                raise ReportError(f"{db_path} holds no study yet; run `optimlab lab` first")
            problem = make_folders(out_dir)
            if problem:
                return _fail(problem)
            path = write_report(store, out_dir, gif=gif)
    except (StoreError, ReportError) as error:
        return _fail(str(error))
    print(f"report: {path}")
    return 0


def _dry_run(plan: dict, out: Path, db: Path, threads: int) -> int:
    from .plan import count_runs

    print(f"profile {plan['profile']}, database {db}, report {out}")
    for p in plan["problems"]:
        groups = ", ".join(g["name"] for g in p["groups"])
        looks = "/".join(map(str, p["looks"]))
        print(f"  {p['name']} ({p['steps']} steps, seeds {looks}): {groups}")
    low_runs, high_runs = count_runs(plan)
    print("timing a short run of each problem…", file=sys.stderr, flush=True)
    low, high = _estimate(plan, threads)
    print(f"{low_runs}–{high_runs} runs, {_duration(low, high)}")
    return 0


def _list() -> int:
    from . import catalog, problems
    from .profiles import PROFILES

    print("profiles:")
    for p in PROFILES.values():
        print(f"  {p.name:20s} {p.help}")
    print("problems:")
    for p in problems.registry().values():
        print(f"  {p.name:20s} {p.title}")
    print("optimizers:")
    for o in catalog.OPTIMIZERS.values():
        print(f"  {o.name:20s} {o.label}: {o.lecture}")
    print("schedules:")
    for s in catalog.SCHEDULES.values():
        print(f"  {s.name:20s} {s.text}")
    return 0
