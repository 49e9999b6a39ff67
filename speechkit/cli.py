"""The ``speechkit`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys

from speechkit import __version__
from speechkit.errors import SpeechkitError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"speechkit {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except SpeechkitError as err:
        print(f"speechkit: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
