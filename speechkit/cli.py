"""The ``speechkit`` command: one entry point, one subcommand per job.

Each subcommand lives beside the code it drives and exposes ``register(subparsers)``, which
adds its parser and sets ``run=`` to a function taking the parsed args and returning an exit
code. Modules are imported lazily so ``speechkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from speechkit import __version__
from speechkit.errors import SpeechkitError

# module paths that define ``register(subparsers)``; order is the order in --help
COMMAND_MODULES: tuple[str, ...] = (
    "speechkit.inference.cli",
    "speechkit.scoring.cli",
    "speechkit.evaluation.cli",
    "speechkit.streaming.cli", "speechkit.server.cli",  # stream, serve
    "speechkit.training.export",  # merge-lora
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechkit", description="Speech recognition and translation with Phi-4-multimodal."
    )
    parser.add_argument("--version", action="version", version=f"speechkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
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
    except KeyboardInterrupt:
        print("speechkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
