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


def _type_options_args(p: argparse.ArgumentParser) -> None:
    from ggq.convert.mixing import ftype_names
    p.add_argument("--type", default="q4_k_m", type=str.lower, choices=ftype_names(), metavar="TYPE",
                   help=f"file type (default q4_k_m): {', '.join(ftype_names())}")
    p.add_argument("--tensor-type", action="append", default=[], metavar="PATTERN=TYPE",
                   help="type for tensors whose name matches the regex PATTERN (repeatable)")
    p.add_argument("--output-type", metavar="TYPE", help="type of output.weight")
    p.add_argument("--embedding-type", metavar="TYPE", help="type of token_embd.weight")
    p.add_argument("--dry-run", action="store_true", help="print each tensor's planned type and size; write nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _type_options(args: argparse.Namespace):
    from ggq.convert.pipeline import TypeOptions
    pairs = []
    for item in args.tensor_type:
        pattern, sep, type_name = item.rpartition("=")
        if not sep or not pattern or not type_name:
            raise GGQError(f"--tensor-type {item!r}: expected PATTERN=TYPE")
        pairs.append((pattern, type_name))
    return TypeOptions(args.output_type, args.embedding_type, tuple(pairs))


def _report(result, quiet: bool, dry_run: bool) -> None:
    if dry_run:
        print(result.plan)
    elif not quiet:
        print(f"wrote {result.path}: {result.plan.splitlines()[-1]}")


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="Hugging Face checkpoint folder, or hub repo id org/name")
    p.add_argument("-o", "--outfile", help="output .gguf (default: <model-name>-<TYPE>.gguf here)")
    p.add_argument("--revision", help="hub branch, tag or commit")
    _type_options_args(p)


def _convert(args: argparse.Namespace) -> int:
    from ggq.convert.pipeline import convert
    result = convert(args.src, args.type, args.outfile, args.revision, _type_options(args),
                     dry_run=args.dry_run, quiet=args.quiet)
    _report(result, args.quiet, args.dry_run)
    return 0


def _quantize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="F32/F16/BF16 .gguf file")
    p.add_argument("output", help="output .gguf")
    p.add_argument("--allow-requantize", action="store_true", help="accept already-quantized input (loses quality)")
    _type_options_args(p)


def _quantize(args: argparse.Namespace) -> int:
    from ggq.convert.requantize import requantize
    result = requantize(args.input, args.output, args.type, _type_options(args),
                        allow_requantize=args.allow_requantize, dry_run=args.dry_run, quiet=args.quiet)
    _report(result, args.quiet, args.dry_run)
    return 0


_COMMANDS: list[tuple[str, str, object, object]] = [
    ("inspect", "show a GGUF file's metadata and tensor table", _inspect_args, _inspect),
    ("convert", "Hugging Face checkpoint -> GGUF (llama.cpp-compatible) in one step", _convert_args, _convert),
    ("quantize", "requantize an F32/F16/BF16 GGUF to another file type", _quantize_args, _quantize),
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
