"""The `ggq` command: parses arguments and calls the same library functions the API and tests call.

Every subcommand lives in `_COMMANDS` as (name, help, add-arguments, run). Heavy modules are imported
inside the run functions so `ggq --help` stays fast.
"""
from __future__ import annotations

import argparse
import sys

from ggq.errors import GGQError


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .gguf file")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _inspect(args: argparse.Namespace) -> int:
    from ggq.inspect import inspect_text, inspect_json
    print(inspect_json(args.file) if args.json else inspect_text(args.file))
    return 0


_COMMANDS: list[tuple[str, str, object, object]] = [
    ("inspect", "show a GGUF file's metadata and tensor table", _inspect_args, _inspect),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ggq", description="GGUF toolkit: convert, quantize, run.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_args, run in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GGQError as e:
        print(f"ggq: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ggq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
