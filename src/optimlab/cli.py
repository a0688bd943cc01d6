"""The ``optimlab`` command: a thin dispatcher.

Each subcommand lives beside the feature it drives, in a module that defines
``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``.  This file
only parses and dispatches, so adding a command is one line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

# name -> module defining HELP, configure(parser), run(args)
COMMANDS: dict[str, str] = {
    "bench": "optimlab.bench",
    "lab": "optimlab.lab.cli",
    "schedule": "optimlab.schedules.cli",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but every mistake is one line, ``PROG: error: ...``, and exit status 2.

    Plain argparse prints its usage above the error, and hands an option a
    subcommand does not know up to the top-level parser, which then blames the
    top-level usage; both bury the one line that says what is wrong.  Every
    subcommand's parser is of this class (``add_subparsers(parser_class=...)``).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:  # said here, where the subcommand's name is known
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="optimlab",
        description="Optimizers and schedules from the lecture, fused kernels, and a lab.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser
    )
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
