"""The `ggq` command: parses arguments and calls the same library functions the API and tests call.

Every subcommand lives in `_COMMANDS` as (name, help, add-arguments, run). Heavy modules are imported
inside the run functions so `ggq --help` stays fast.
"""
from __future__ import annotations

import argparse
import sys

from ggq import quality_cli, tune_cli
from ggq.errors import GGQError
from ggq.openmp_spin import use_short_spin_for


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
    quality_cli.quant_args(p)
    g = p.add_argument_group("types chosen under a budget (need --calibration)")
    g.add_argument("--target-size", metavar="BYTES|MB", help="largest file size: bytes, or 105MB (10^6), 100MiB; "
                   "each tensor's type is measured and chosen to fit (--dry-run prints the plan; --type then "
                   "names only general.file_type)")
    g.add_argument("--target-bpw", type=float, metavar="X", help="bits per weight of the tensor data, instead")


def _convert(args: argparse.Namespace) -> int:
    from ggq.convert.pipeline import convert
    budget = None
    if args.target_size is not None or args.target_bpw is not None:
        from ggq.convert.allocate import Budget, parse_size
        size = parse_size(args.target_size) if args.target_size is not None else None
        budget = Budget(size, args.target_bpw)
    result = convert(args.src, args.type, args.outfile, args.revision, _type_options(args),
                     dry_run=args.dry_run, quiet=args.quiet, quant=quality_cli.quant_options(args), budget=budget)
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


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="keep the k likeliest tokens; <= 0 off (default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling; 1 = off (default 0.95)")
    p.add_argument("--min-p", type=float, default=0.05, help="drop tokens below min-p x the top one (default 0.05)")
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="penalty for the last 64 tokens (default 1.0 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .gguf file, a Hugging Face checkpoint folder or a hub repo id (org/name; "
                   "converted once to q4_k_m and cached)")
    p.add_argument("--revision", help="hub branch, tag or commit of a hub repo id")
    p.add_argument("-p", "--prompt", help="answer this one prompt and exit (through the chat template if the "
                   "model has one); without -p: interactive chat")
    p.add_argument("-n", "--n-predict", "--max-tokens", dest="n_predict", type=int, default=-1, help="most tokens to generate (default -1: until "
                   "the end of the answer or of the context)")
    _sampling_args(p)
    p.add_argument("-c", "--ctx-size", type=int, default=None, help="context size (default: model's, at most 4096)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--chat-template", metavar="FILE|TEMPLATE",
                   help="Jinja chat template (a file, or the template text) to use instead of the model's")
    p.add_argument("--no-template", action="store_true", help="with -p: continue the raw prompt text")
    p.add_argument("--exact", action="store_true", help="generate with float32 activations (slower; default: "
                   "8-bit activations and integer dot products, as llama.cpp)")
    p.add_argument("--match-llamacpp", action="store_true", help="compute every token with llama.cpp's own CPU "
                   "arithmetic (x86 AVX-512 build), so that greedy output is llama.cpp's bit for bit (slower)")
    _device_arg(p)


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="compute on the CPU (default) or an NVIDIA GPU (needs ggq[cuda])")


def _chat_template(value: str | None) -> str | None:
    """--chat-template: the text of a file when it names one, else the template itself."""
    import os
    if not value or not os.path.isfile(value):
        return value
    try:
        with open(value, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise GGQError(f"cannot read chat template: {e}", value) from None


def _interactive(model, path, settings: dict, system: str | None) -> int:
    from ggq.runtime.repl import ChatSession, chat_loop
    if not model.has_chat_template:
        raise GGQError("model has no chat template: pass --chat-template FILE|TEMPLATE "
                       "(or use -p with --no-template for raw text)", path)
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    model.transformer.warm_up()  # before the banner, not in the middle of the first answer
    chat_loop(ChatSession(model, settings, system=system))
    return 0


def _run(args: argparse.Namespace) -> int:
    import ggq
    use_short_spin_for(args.model, args.exact and args.device == "cpu")
    from ggq.runtime.resolve import resolve_model
    path = resolve_model(args.model, args.revision)
    model = ggq.load(path, threads=args.threads, ctx_size=args.ctx_size,
                     chat_template=_chat_template(args.chat_template), exact=args.exact,
                     match_llamacpp=args.match_llamacpp, device=args.device)
    max_tokens = args.n_predict if args.n_predict >= 0 else model.transformer.ctx_size
    sampling = dict(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                    repeat_penalty=args.repeat_penalty, seed=args.seed)
    if args.prompt is None:
        return _interactive(model, path, dict(sampling, max_tokens=max_tokens), args.system)
    if args.no_template or not model.has_chat_template:
        pieces = model.stream(args.prompt, max_tokens=max_tokens, **sampling)
    else:
        system = [{"role": "system", "content": args.system}] if args.system else []
        messages = system + [{"role": "user", "content": args.prompt}]
        pieces = model.chat_stream(messages, max_tokens=max_tokens, **sampling)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _perplexity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .gguf model")
    p.add_argument("-f", "--file", required=True, help="UTF-8 text file to score")
    p.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=int, default=-1, help="score only the first N chunks (default: all)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    p.add_argument("--match-llamacpp", action="store_true", help="llama.cpp's own CPU arithmetic, token by token "
                   "(slower)")
    _device_arg(p)


def _perplexity(args: argparse.Namespace) -> int:
    use_short_spin_for(args.model, False)
    from ggq.runtime.api import set_threads
    from ggq.runtime.model import open_model
    from ggq.runtime.perplexity import perplexity
    from ggq.runtime.tokenizer import Tokenizer
    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise GGQError(f"cannot read text: {e}", args.file) from None
    set_threads(args.threads)
    tf = open_model(args.model, ctx_size=args.ctx, match_llamacpp=args.match_llamacpp, device=args.device)
    result = perplexity(tf, Tokenizer.from_metadata(tf.gguf.metadata), text, n_ctx=args.ctx, n_chunks=args.chunks,
                        progress=lambda s: print(s, end="", flush=True))
    print()
    print(f"estimate: {result.n_chunks} chunks, {result.n_scored} tokens scored, "
          f"PPL = {result.ppl:.4f} +/- {result.stderr:.5f}")
    print(f"PPL = {result.ppl:.4f}")
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .gguf model")
    p.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens, one batch (default 512; 0 = skip)")
    p.add_argument("-n", "--n-gen", type=int, default=128, help="tokens generated one by one (default 128; 0 = skip)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    p.add_argument("-r", "--repetitions", type=int, default=5, help="timed runs of each test (default 5)")
    p.add_argument("--exact", action="store_true", help="decode with float32 activations (default: 8-bit, as llama.cpp)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _device_arg(p)


def _bench(args: argparse.Namespace) -> int:
    import json
    use_short_spin_for(args.model, args.exact and args.device == "cpu")
    from ggq.runtime.bench import bench, format_result
    result = bench(args.model, args.n_prompt, args.n_gen, args.threads, args.repetitions, args.exact, args.device)
    print(json.dumps(result.as_dict(), indent=1) if args.json else format_result(result))
    return 0


_COMMANDS: list[tuple[str, str, object, object]] = [
    ("inspect", "show a GGUF file's metadata and tensor table", _inspect_args, _inspect),
    ("convert", "Hugging Face checkpoint -> GGUF (llama.cpp-compatible) in one step", _convert_args, _convert),
    ("quantize", "requantize an F32/F16/BF16 GGUF to another file type", _quantize_args, _quantize),
    ("run", "chat with a model, or answer one prompt (-p)", _run_args, _run),
    ("perplexity", "perplexity of a text, as llama-perplexity computes it", _perplexity_args, _perplexity),
    ("bench", "prompt and generation speed, as llama-bench measures it", _bench_args, _bench),
    ("tune", "measure the decode kernels' shapes on this machine (cached; also done at first use)",
     tune_cli.tune_args, tune_cli.tune),
    ("kld", "KL divergence of models from a base model, as llama-perplexity --kl-divergence",
     quality_cli.kld_args, quality_cli.kld),
    ("imatrix", "importance matrix of a model's matmul inputs on a text, as llama-imatrix (its file format)",
     quality_cli.imatrix_args, quality_cli.imatrix),
    ("report", "per tensor: type, bits per weight and relative error against an unquantized base",
     quality_cli.report_args, quality_cli.report),
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
    from ggq import signals
    args = build_parser().parse_args(argv)
    signals.install()  # SIGTERM and SIGHUP unwind like Ctrl-C: partial output files are removed
    try:
        return int(args.func(args) or 0)
    except GGQError as e:
        print(f"ggq: {e}", file=sys.stderr)
        return 1
    except signals.Interrupted as e:
        print(f"ggq: interrupted ({e})", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ggq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
