"""`ascendra` console script: one module per subcommand, each with `add_parser` and `run`."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand name -> module under ascendra.cli; each module defines add_parser(sub) and run(args).
COMMANDS = {
    "serve": "serve",
    "bench": "bench",
    "generate": "generate",
    "profile": "profile",
    "simulate": "simulate",
    "capacity": "capacity",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ascendra", description="LLM serving that meets TTFT and TBT SLOs at once."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        mod = importlib.import_module(f"ascendra.cli.{module}")
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Bad input from the user: one clear line, not a traceback.
        print(f"ascendra {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
