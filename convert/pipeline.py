"""Checkpoint -> GGUF: plan every tensor's type, then stream tensors through quantization into the file.

Nothing but headers is read while planning. Writing pulls one tensor at a time: read from the mmapped
safetensors, widened to float32, changed as the architecture asks (q/k row permutation, norm shift,
embedding trim), quantized, written; so memory stays near the size of the largest tensor.
`ggq quantize` (requantize.py) feeds GGUF tensors into the same plan_tensors / write_model.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ggq.errors import GGQError
from ggq.gguf_write import TensorSpec, Typed
from ggq.qtypes import qtype

QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION, written to general.quantization_version
_LAYER_NAME = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class SourceTensor:
    """A tensor to write: GGUF name, numpy-order shape, and how to get its float32 values."""
    name: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]


@dataclass(frozen=True)
class TypeOptions:
    """llama-quantize's overrides: --output-tensor-type, --token-embedding-type, --tensor-type."""
    output_type: str | None = None
    embedding_type: str | None = None
    tensor_types: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def plan_tensors(sources: Sequence[SourceTensor], ftype: str, n_layer: int, n_head: int, n_head_kv: int,
                 options: TypeOptions, arch: str, source_types: dict[str, str] | None = None,
                 has_imatrix: bool = False) -> list[TensorSpec]:
    """One TensorSpec per source, its type chosen by the mixing policy (llama-quantize's rules, which
    change a few types when an importance matrix is given)."""
    from ggq.convert.mixing import plan_types
    types = plan_types([(s.name, s.shape) for s in sources], ftype, n_layer, n_head, n_head_kv,
                       output_type=options.output_type, embedding_type=options.embedding_type,
                       tensor_types=options.tensor_types, arch=arch, source_types=source_types,
                       has_imatrix=has_imatrix)
    return [TensorSpec(s.name, s.shape, types[s.name]) for s in sources]


def plan_summary(specs: Sequence[TensorSpec]) -> tuple[int, int]:
    """(total bytes, total weights) of the planned tensors."""
    total_bytes = sum(s.nbytes for s in specs)
    total_weights = sum(int(np.prod(s.shape, dtype=np.int64)) for s in specs)
    return total_bytes, total_weights


def describe_plan(specs: Sequence[TensorSpec]) -> str:
    """The --dry-run table: tensor, type, shape (GGUF order, as llama.cpp prints it), size; then totals."""
    width = max((len(s.name) for s in specs), default=10)
    lines = [f"{'tensor':<{width}}  {'type':<5}  {'shape':<20}  {'size':>10}"]
    for s in specs:
        shape = "x".join(str(d) for d in reversed(s.shape))
        lines.append(f"{s.name:<{width}}  {qtype(s.qtype).name:<5}  {shape:<20}  {_mib(s.nbytes):>10}")
    total_bytes, total_weights = plan_summary(specs)
    bpw = 8 * total_bytes / total_weights if total_weights else 0.0
    lines.append(f"{len(specs)} tensors, {total_weights:,} weights, {_mib(total_bytes)}, {bpw:.2f} bits per weight")
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def plain_encode(name: str, values: np.ndarray, qt) -> np.ndarray:
    """Round to nearest as llama-quantize without an importance matrix (F32 stays as it is)."""
    from ggq.quants import quantize
    return values if qt.name == "F32" else quantize(values, qt)


def _encoded(sources: Sequence[SourceTensor], specs: Sequence[TensorSpec], encode=None, ready=None):
    """Each tensor's bytes in its planned type, produced only when the writer asks for it.
    `encode(name, values, qtype)` turns values into the type's bytes (default plain_encode);
    `ready[name]()` gives the bytes of a tensor encoded before the writing began (convert/layerwise.py)."""
    encode = encode or plain_encode
    for source, spec in zip(sources, specs):
        if ready and spec.name in ready:
            yield ready[spec.name]()
            continue
        values = source.load()
        if values.shape != spec.shape:
            raise GGQError(f"tensor '{spec.name}' has shape {values.shape}, planned {spec.shape}")
        yield encode(spec.name, values, qtype(spec.qtype))
        del values


def write_model(path: Path, metadata: dict, sources: Sequence[SourceTensor], specs: Sequence[TensorSpec],
                quiet: bool = False, encode=None, ready=None) -> None:
    """Stream the tensors into `path` (atomically: a temp file renamed when complete); `encode` and
    `ready` as _encoded takes them."""
    from tqdm import tqdm
    from ggq.gguf_write import write_gguf
    total_bytes, _ = plan_summary(specs)
    show = not quiet and sys.stderr.isatty()
    with tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, disable=not show,
              file=sys.stderr, desc=Path(path).name, dynamic_ncols=True) as bar:
        write_gguf(path, metadata, specs, _encoded(sources, specs, encode, ready),
                   progress=lambda spec: bar.update(spec.nbytes))


def check_output_path(path: Path) -> None:
    """Fail before any work when the output cannot be written (its folder missing, or it is a folder)."""
    if path.is_dir():
        raise GGQError("output path is a folder", path)
    if not path.parent.is_dir():
        raise GGQError("output folder does not exist", path.parent)


# ---- Hugging Face checkpoints ---------------------------------------------------------------------------

def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from HF's (halves) rope layout to llama.cpp's (pairs) one.

    Within a head of rows [r0..r(d-1)], HF puts the first element of every rotated pair in the first
    half; llama.cpp wants pair members adjacent: row order r0, r(d/2), r1, r(d/2+1), ...
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise GGQError(f"cannot permute {rows} rows into {n_head} heads of rotated pairs")
    half = rows // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_name(hf_name: str, spec, n_layer: int) -> str | None:
    """GGUF name of a checkpoint tensor; None for tensors convert_hf_to_gguf also leaves out."""
    if hf_name in spec.global_tensors:
        return spec.global_tensors[hf_name]
    m = _LAYER_NAME.match(hf_name)
    if m and m.group(2) in spec.layer_tensors and int(m.group(1)) < n_layer:
        return f"blk.{int(m.group(1))}.{spec.layer_tensors[m.group(2)]}"
    if hf_name.endswith(spec.ignored_suffixes):
        return None
    raise GGQError(f"tensor '{hf_name}' has no GGUF name in the {spec.gguf_arch} architecture")


def _transform(hf_name: str, gguf_name: str, spec, params, n_vocab: int | None):
    """The changes convert_hf_to_gguf makes to one tensor, as a function of its float32 values."""
    steps: list[Callable[[np.ndarray], np.ndarray]] = []
    if spec.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
        steps.append(lambda w: permute_rows(w, params.n_head))
    if spec.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
        steps.append(lambda w: permute_rows(w, params.n_head_kv))
    if spec.norm_shift and hf_name.endswith("norm.weight"):
        steps.append(lambda w: w + np.float32(spec.norm_shift))
    if spec.trim_embedding_to_vocab and gguf_name == "token_embd.weight" and n_vocab is not None:
        steps.append(lambda w: w[:n_vocab])
    return steps


def checkpoint_sources(refs: dict, spec, params, n_vocab: int | None) -> list[SourceTensor]:
    """The GGUF tensors a checkpoint becomes (extra tensors first), each loaded lazily."""
    from ggq.convert.safetensors import to_f32
    sources = [SourceTensor(name, tuple(values.shape), lambda v=values: v)
               for name, values in spec.extra_tensors(params)]
    mapped = []
    for hf_name, ref in refs.items():
        if hf_name == "lm_head.weight" and params.tied_embeddings:
            continue  # tied: llama.cpp reuses token_embd, as convert_hf_to_gguf leaves output out
        name = _gguf_name(hf_name, spec, params.n_layer)
        if name is None:
            continue
        steps = _transform(hf_name, name, spec, params, n_vocab)
        shape = ref.shape
        if spec.trim_embedding_to_vocab and name == "token_embd.weight" and n_vocab is not None:
            shape = (min(shape[0], n_vocab), *shape[1:])
        mapped.append(SourceTensor(name, shape, lambda r=ref, s=tuple(steps): _apply(to_f32(r), s)))
    _check_unique(sources + mapped)
    return sources + mapped  # checkpoint order, as convert_hf_to_gguf writes them


def _apply(values: np.ndarray, steps) -> np.ndarray:
    for step in steps:
        values = step(values)
    return np.ascontiguousarray(values, dtype=np.float32)


def _check_unique(sources: Sequence[SourceTensor]) -> None:
    seen = set()
    for s in sources:
        if s.name in seen:
            raise GGQError(f"two checkpoint tensors map to '{s.name}'")
        seen.add(s.name)


def _plain(value):
    return value.value if isinstance(value, Typed) else value


def checkpoint_metadata(spec, params, ftype: str, name: str, vocab: dict) -> dict:
    """All metadata, in convert_hf_to_gguf's order: general.*, architecture keys, tokenizer.*."""
    from ggq.convert.arch.base import common_metadata
    from ggq.convert.mixing import file_type_id
    arch = spec.gguf_arch
    md: dict = {"general.architecture": arch, "general.type": "model", "general.name": name}
    md.update(common_metadata(arch, params))
    md["general.file_type"] = file_type_id(ftype)
    md.update(spec.extra_metadata(params))
    md["general.quantization_version"] = QUANTIZATION_VERSION
    md.update(vocab)
    return md


@dataclass(frozen=True)
class ConvertResult:
    path: Path | None  # None for a dry run
    specs: list[TensorSpec]
    plan: str


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint opened for conversion: its architecture, hyperparameters, vocabulary and tensors."""
    model_dir: Path
    spec: object
    params: object
    name: str
    vocab: dict
    sources: list[SourceTensor]

    def metadata(self, ftype: str) -> dict:
        return checkpoint_metadata(self.spec, self.params, ftype, self.name, self.vocab)


def open_checkpoint_source(src: str, revision: str | None = None) -> Checkpoint:
    """Hugging Face checkpoint (folder or hub repo id) -> the tensors a GGUF of it holds (lazily loaded)."""
    from ggq.convert import checkpoint
    from ggq.convert.arch import arch_for, params_from_config
    from ggq.convert.safetensors import open_checkpoint
    from ggq.convert.vocab import vocab_metadata
    model_dir = checkpoint.resolve_source(src, revision)
    config = checkpoint.load_config(model_dir)
    spec = arch_for(checkpoint.architecture(config))
    params = params_from_config(config, spec.config_defaults)
    name = checkpoint.model_name(model_dir, src)
    refs = open_checkpoint(model_dir)
    vocab = vocab_metadata(model_dir, config)
    n_vocab = len(_plain(vocab["tokenizer.ggml.tokens"]))
    return Checkpoint(Path(model_dir), spec, params, name, vocab, checkpoint_sources(refs, spec, params, n_vocab))


def convert(src: str, ftype: str, outfile: str | None = None, revision: str | None = None,
            options: TypeOptions = TypeOptions(), dry_run: bool = False, quiet: bool = False,
            quant: "QuantOptions | None" = None, budget: "Budget | None" = None) -> ConvertResult:
    """Hugging Face checkpoint (folder or hub repo id) -> GGUF file of file type `ftype` (e.g. 'q4_k_m').
    `quant` (convert/calibrated.py) asks for importance-weighted or error-compensating rounding;
    `budget` (convert/allocate.py) for each tensor's type measured and chosen to fit a size, `ftype`
    then naming only general.file_type."""
    from ggq.convert import checkpoint
    from ggq.convert.mixing import file_type_id
    file_type_id(ftype)  # an unknown type fails before anything is read
    if quant is not None:
        quant.check()
    if budget is not None:
        from ggq.convert.allocate import check
        check(budget, quant, options)
    model_dir = checkpoint.resolve_source(src, revision)
    name = checkpoint.model_name(model_dir, src)
    out = Path(outfile) if outfile else Path.cwd() / f"{name}-{ftype.upper()}.gguf"
    if not dry_run:
        check_output_path(out)
    ckpt = open_checkpoint_source(src, revision)
    has_imatrix = quant is not None and quant.uses_importance
    specs = plan_tensors(ckpt.sources, ftype, ckpt.params.n_layer, ckpt.params.n_head, ckpt.params.n_head_kv,
                         options, ckpt.spec.gguf_arch, has_imatrix=has_imatrix)
    metadata = ckpt.metadata(ftype)
    collected = None
    if budget is not None:
        from ggq.convert.allocate import plan_budget
        specs, plan, collected = plan_budget(ckpt, specs, quant, budget, metadata, quiet)
    else:
        plan = describe_plan(specs)
    if dry_run:
        return ConvertResult(None, specs, plan)
    from ggq.convert.calibrated import by_layer
    if by_layer(quant, budget):
        from ggq.convert.layerwise import write_by_layer
        write_by_layer(out, metadata, ckpt, specs, quant, quiet)
        return ConvertResult(out, specs, plan)
    encode = None
    if quant is not None:
        from ggq.convert.calibrated import prepare
        encode, extra = prepare(quant, ckpt, quiet, collected)
        metadata.update(extra)
    write_model(out, metadata, ckpt.sources, specs, quiet, encode)
    return ConvertResult(out, specs, plan)
