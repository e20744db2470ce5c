"""`dsa` command line: one subcommand group per module in this package.

Each module in `COMMANDS` exposes `register(subparsers)`, adding its parser(s) and setting
`func=handler(args) -> int` on them. Modules are imported lazily so `dsa --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand group -> module under dsa.cli
COMMANDS: dict[str, str] = {
    "base": "dsa.cli.base_cmd",
    "features": "dsa.cli.features_cmd",
    "data": "dsa.cli.data_cmd",
    "guard": "dsa.cli.guard_cmd",
    "analyze": "dsa.cli.analyze_cmd",
    "align": "dsa.cli.align_cmd",  # also registers `dsa generate` and `dsa chat`
    "serve": "dsa.cli.serve_cmd",
    "eval": "dsa.cli.eval_cmd",
    "bench": "dsa.cli.bench_cmd",
}


def _version() -> str:
    from dsa import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsa", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action="version", version=f"dsa {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # Bad input: one clear line, no traceback (use -v to see where it came from).
        if args.verbose:
            raise
        print(f"dsa {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
