"""The ``optimlab`` command: a thin dispatcher.

Each subcommand lives beside the feature it drives, in a module that defines
``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``.  This file
only parses and dispatches, so adding a command is one line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module defining HELP, configure(parser), run(args)
COMMANDS: dict[str, str] = {
    "bench": "optimlab.bench",
    "lab": "optimlab.lab.cli",
    "schedule": "optimlab.schedules.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optimlab",
        description="Optimizers and schedules from the lecture, fused kernels, and a lab.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
