"""The command line: parse arguments, call one library function, print the result.

One module per command group (imgret/cli/*.py), each with `add_commands(sub)`; nothing heavy is
imported at module level, so `imgret --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

__all__ = ["main", "build_parser"]

# The command groups, in the order `imgret --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "imgret.cli.demo",
    "imgret.cli.train",
    "imgret.cli.collection",
    "imgret.cli.maintenance",
    "imgret.cli.search",
    "imgret.cli.finetune",
    "imgret.cli.adapt",
    "imgret.cli.whiten",
    "imgret.cli.evaluate",
    "imgret.cli.web",
)


class _Parser(argparse.ArgumentParser):
    """Errors in one line (what is wrong, and where the help is), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="imgret",
        description="Unsupervised content-based image retrieval: find the images in a "
        "collection that look like this one.",
    )
    parser.add_argument("--version", action="version", version="imgret 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as \udcNN
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..core.errors import UserError

    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"imgret: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imgret: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
